"""The command line (SPEC §1): Go-flag syntax, usage errors, help/version/license, start-up.

Flag parsing is tested in-process through `websocketd_py.cli`; everything a
user sees (exit status, stdout, stderr) is tested on a real
`python -m websocketd_py` process. Usage errors exit before anything starts,
so those runs need no server fixture.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import websocketd_py
from websocketd_py import cli, launching
from websocketd_py.config import Config, UsageError, build_config
from websocketd_py.tuning import SWITCH_INTERVAL

from helpers import leftover_processes, parametrize_fast_first, wait_for_no_leftovers

PY = sys.executable
IS_POSIX = os.name == "posix"

#: Every flag SPEC §1 names; `--help` must mention each one.
SPEC_FLAGS = (
    "port", "address", "unixsocket", "ssl", "sslcert", "sslkey", "sslca", "redirport",
    "maxforks", "maxframesize", "closems", "pingms", "binary", "passstderr", "passenv",
    "reverselookup", "dir", "staticdir", "cgidir", "devconsole", "header", "header-ws",
    "header-http", "sameorigin", "origin", "loglevel", "help", "version", "license",
)


def run_cli(*args, cwd=None, executable=None, timeout=15):
    """Run websocketd-py with `args` to completion (it must exit by itself)."""
    command = [executable] if executable else [PY, "-m", "websocketd_py"]
    return subprocess.run(command + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


#: Usage errors whose exit status is not websocketd's 1 for a bad setting: Go's flag
#: package refuses the command line (2), --devconsole with --staticdir or --cgidir (4).
FLAG_SYNTAX = 2
DEVCONSOLE_CONFLICT = 4
#: websocketd's log line for the same conflict, on stdout.
DEVCONSOLE_FATAL = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} [+-]\d{4} \| FATAL  "
                              r"\| server     \|  \| Invalid parameters: --devconsole cannot be "
                              r"used with --(staticdir|cgidir)\. Pick one\.\n\Z")


def assert_usage_error(result, *needles, status=1):
    """Exit `status`, one stderr line `websocketd-py: ...` naming the problem, and nothing on
    stdout but websocketd's FATAL line for a --devconsole conflict."""
    assert result.returncode == status, result
    if status == DEVCONSOLE_CONFLICT:
        assert DEVCONSOLE_FATAL.match(result.stdout), result.stdout
    else:
        assert result.stdout == "", "a usage error prints nothing on stdout (no log, no banner)"
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, \
        f"expected exactly one line on stderr, got {result.stderr!r}"
    line = result.stderr.rstrip("\n")
    assert line.startswith("websocketd-py: "), line
    assert len(line) > len("websocketd-py: ") + 10, line
    for needle in needles:
        assert needle in line, f"{needle!r} not named in {line!r}"
    return line


def parse(*argv):
    return cli.parse_flags(list(argv))


# -- Go-flag syntax, in-process ----------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["-port=1"], ["--port=1"], ["--port", "1"], ["-port", "1"],
])
def test_int_flag_spellings_are_equivalent(argv):
    assert parse(*argv) == ({"port": 1}, [])


@pytest.mark.parametrize("argv, expected", [
    (["--binary"], True),
    (["-binary"], True),
    (["--binary=true"], True),
    (["--binary=false"], False),
    (["-binary=false"], False),
])
def test_bool_flag_spellings(argv, expected):
    values, command = parse(*argv, "cat")
    assert values == {"binary": expected}
    assert command == ["cat"]


@pytest.mark.parametrize("spelling", ["1", "t", "T", "true", "TRUE", "True"])
def test_go_true_spellings(spelling):
    assert parse(f"--sameorigin={spelling}") == ({"sameorigin": True}, [])


@pytest.mark.parametrize("spelling", ["0", "f", "F", "false", "FALSE", "False"])
def test_go_false_spellings(spelling):
    assert parse(f"--sameorigin={spelling}") == ({"sameorigin": False}, [])


def test_bool_flag_never_takes_the_next_argument():
    """As in Go, `--binary false` is --binary plus COMMAND `false`."""
    assert parse("--binary", "false") == ({"binary": True}, ["false"])


def test_double_dash_ends_options():
    values, command = parse("--port=1", "--", "--binary", "-x", "--port=2")
    assert values == {"port": 1}
    assert command == ["--binary", "-x", "--port=2"]


def test_parsing_stops_at_first_non_option_and_command_is_untouched():
    argv = ["--port=1", "ls", "-l", "--color", "--port=2", "--", "a b", "x=y", ""]
    values, command = parse(*argv)
    assert values == {"port": 1}
    assert command == ["ls", "-l", "--color", "--port=2", "--", "a b", "x=y", ""]


def test_lone_dash_is_the_command():
    assert parse("--binary", "-", "x") == ({"binary": True}, ["-", "x"])


def test_value_may_contain_equals_and_separate_value_may_look_like_a_flag():
    values, command = parse("--header=X-A: b=c", "--loglevel", "--binary", "cat")
    assert values == {"header": ["X-A: b=c"], "loglevel": "--binary"}
    assert command == ["cat"]


def test_last_value_wins_for_a_single_value_flag():
    assert parse("--port=1", "--port", "2", "-port=3")[0] == {"port": 3}


def test_address_and_headers_are_repeatable_and_brackets_stripped():
    values, command = parse(
        "--address=127.0.0.1", "--address", "[::1]", "-address=localhost",
        "--header", "X-A: 1", "--header=X-B:2",
        "--header-ws", "X-W: w", "--header-http=X-H: h", "--header-http=X-I:",
        "echo")
    assert values["address"] == ["127.0.0.1", "[::1]", "localhost"]
    config = build_config(values, command)
    assert config.addresses == ("127.0.0.1", "::1", "localhost")
    assert config.headers == (("X-A", "1"), ("X-B", "2"))
    assert config.headers_ws == (("X-W", "w"),)
    assert config.headers_http == (("X-H", "h"), ("X-I", ""))
    assert config.command == ("echo",)


def test_passenv_is_split_on_commas_and_blanks_dropped():
    config = build_config(*parse("--passenv=HOME, LANG,,TZ ,", "echo"))
    assert config.passenv == ("HOME", "LANG", "TZ")
    assert build_config(*parse("--passenv=", "echo")).passenv == ()


def test_passenv_default_is_the_platform_essentials():
    config = build_config(*parse("echo"))
    assert config.passenv == launching.DEFAULT_PASSENV
    if sys.platform.startswith("linux"):
        assert config.passenv == ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE")


def test_origin_is_a_comma_separated_list():
    config = build_config(*parse(
        "--origin=http://a.example, b.example:8080 ,,https://c.example:443", "echo"))
    assert config.origins == ("http://a.example", "b.example:8080", "https://c.example:443")


def test_defaults_match_websocketd():
    config = build_config(*parse("echo"))
    assert config == Config(command=("echo",), explicit=frozenset())
    assert config.listen_port == 80
    assert (config.maxforks, config.maxframesize, config.closems, config.pingms) == \
        (1024, 1048576, 0, 0)
    assert config.loglevel == "access"
    assert config.addresses == () and not config.binary and not config.devconsole


def test_valid_edge_values_are_accepted():
    config = build_config(*parse("--port=0", "--maxforks=-1", "--maxframesize=0",
                                     "--closems=0", "--loglevel=none", "echo"))
    assert (config.port, config.maxforks, config.maxframesize, config.loglevel) == \
        (0, -1, 0, "none")
    assert build_config(*parse("--port=65535", "echo")).port == 65535


@pytest.mark.parametrize("level", ["debug", "trace", "access", "info", "error", "fatal", "none"])
def test_every_loglevel_is_accepted(level):
    assert build_config(*parse(f"--loglevel={level}", "echo")).loglevel == level


@pytest.mark.parametrize("argv", [["-h"], ["--h"], ["-help"], ["--help"], ["--help=true"]])
def test_help_spellings_return_the_help_text(argv):
    assert cli.parse_args(argv) == cli.help_text()


def test_help_false_does_not_print_help():
    config = cli.parse_args(["--help=false", "sh", "-c", "x"])
    assert isinstance(config, Config)


def test_parse_args_resolves_command_on_path_and_keeps_its_argv():
    config = cli.parse_args(["--port=8080", "sh", "-c", "echo --port=1", "--binary"])
    assert config.command == (os.path.abspath(shutil.which("sh")), "-c", "echo --port=1",
                              "--binary")
    assert config.port == 8080 and not config.binary


@pytest.mark.parametrize("value", [
    "eighty", "1.5", "", "8080x", "0x", "1e3",
    " 80",
    "80\n",
    "\u0668\u0660",
])
def test_bad_int_is_a_usage_error(value):
    with pytest.raises(UsageError, match="-port"):
        parse(f"--port={value}", "echo")


@pytest.mark.parametrize("text, number", [("0x1F90", 8080), ("0o17", 15), ("0b11", 3),
                                          ("017", 15)])
def test_go_base_prefixed_ints_are_accepted(text, number):
    assert parse(f"--closems={text}", "echo")[0] == {"closems": number}


# -- usage errors, on a real process -----------------------------------------------------


def _script(directory, name, mode):
    path = directory / name
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(mode)
    return path


USAGE_ERRORS = [
    # id, argv, words the one line must contain
    ("unknown-flag", ["--nosuch", "echo"], ["-nosuch", "not defined"]),
    ("unknown-flag-with-value", ["-nosuch=1", "echo"], ["-nosuch", "not defined"]),
    ("unknown-alias", ["-p", "8080", "echo"], ["-p", "not defined"]),
    ("bad-flag-syntax", ["---port=1", "echo"], ["---port=1"]),
    ("empty-flag-name", ["-=1", "echo"], ["-=1"]),
    ("missing-argument-at-end", ["--port"], ["-port", "argument"]),
    ("missing-argument-list-flag", ["--header"], ["-header", "argument"]),
    ("bad-int", ["--port=eighty", "echo"], ["-port", "eighty"]),
    ("bad-int-maxforks", ["--maxforks", "1.5", "echo"], ["-maxforks", "1.5"]),
    ("bad-bool", ["--binary=yes", "echo"], ["-binary", "yes"]),
    ("empty-bool", ["--binary=", "echo"], ["-binary"]),
    ("port-too-big", ["--port=65536", "echo"], ["port", "65536"]),
    ("port-negative", ["--port=-1", "echo"], ["port", "-1"]),
    ("redirport-too-big", ["--redirport=70000", "echo"], ["redirport", "70000"]),
    ("negative-closems", ["--closems=-5", "echo"], ["closems", "-5"]),
    ("negative-pingms", ["--pingms=-1", "echo"], ["pingms", "-1"]),
    ("negative-maxframesize", ["--maxframesize=-1", "echo"], ["maxframesize", "-1"]),
    ("bad-loglevel", ["--loglevel=verbose", "echo"], ["loglevel", "verbose"]),
    ("header-without-colon", ["--header=NoColon", "echo"], ["header", "NoColon"]),
    ("header-without-name", ["--header-ws=: v", "echo"], ["header-ws"]),
    ("header-name-with-space", ["--header-http=Bad Name: v", "echo"], ["header-http", "Bad Name"]),
    ("header-value-with-newline", ["--header=X-A: a\nb", "echo"], ["header", "X-A"]),
    ("empty-address", ["--address=", "echo"], ["address"]),
    ("empty-dir", ["--dir="], ["dir"]),
    ("no-command", [], ["COMMAND", "--dir"]),
    ("no-command-only-flags", ["--port=8080", "--binary"], ["COMMAND"]),
    ("command-with-dir", ["--dir=.", "echo"], ["--dir", "echo"]),
    ("command-not-on-path", ["no-such-program-4e1f"], ["no-such-program-4e1f", "not found"]),
    ("command-in-cwd-but-not-on-path", ["runme.sh"], ["runme.sh", "./runme.sh"]),
    ("command-not-executable", ["./plain.sh"], ["./plain.sh", "not executable",
                                                "chmod +x ./plain.sh"]),
    ("command-is-a-directory", ["./subdir"], ["./subdir", "directory", "--dir"]),
    ("command-path-missing", ["./missing.sh"], ["./missing.sh", "does not exist"]),
    ("dir-missing", ["--dir=./nowhere"], ["--dir=./nowhere", "not a directory"]),
    ("dir-is-a-file", ["--dir=./plain.sh"], ["--dir=./plain.sh", "not a directory"]),
    ("staticdir-missing", ["--staticdir=./nowhere"], ["--staticdir=./nowhere",
                                                      "not a directory"]),
    ("cgidir-missing", ["--cgidir=./nowhere"], ["--cgidir=./nowhere", "not a directory"]),
    ("ssl-without-cert-and-key", ["--ssl", "echo"], ["--ssl", "--sslcert", "--sslkey"]),
    ("ssl-with-cert-only", ["--ssl", "--sslcert=c.pem", "echo"], ["--ssl", "--sslkey"]),
    ("cert-without-ssl", ["--sslcert=c.pem", "--sslkey=k.pem", "echo"], ["--sslcert", "--ssl"]),
    ("sslca-without-ssl", ["--sslca=ca.pem", "echo"], ["--sslca", "--ssl"]),
    ("ssl-cert-file-missing", ["--ssl", "--sslcert=./nocert.pem", "--sslkey=./nokey.pem", "echo"],
     ["--sslcert=./nocert.pem"]),
    ("devconsole-with-staticdir", ["--devconsole", "--staticdir=."], ["--devconsole",
                                                                       "--staticdir"]),
    ("passstderr-with-binary", ["--passstderr", "--binary", "echo"], ["--passstderr",
                                                                      "--binary"]),
    ("bad-broadcast", ["--broadcast=sometimes", "echo"], ["-broadcast", "sometimes", "eager"]),
    ("broadcast-eager-with-dir", ["--broadcast=eager", "--dir=."], ["--broadcast=eager",
                                                                     "COMMAND"]),
    ("broadcast-ids-without-broadcast", ["--broadcast-ids", "echo"], ["--broadcast-ids",
                                                                      "--broadcast"]),
    ("broadcast-backlog-without-broadcast", ["--broadcast-backlog=10", "echo"],
     ["--broadcast-backlog", "--broadcast"]),
    ("negative-broadcast-backlog", ["--broadcast", "--broadcast-backlog=-1", "echo"],
     ["broadcast-backlog", "-1"]),
    ("bad-broadcast-backlog", ["--broadcast", "--broadcast-backlog=1MiB", "echo"],
     ["broadcast-backlog", "1MiB"]),
]


def _usage_status(case_id):
    if case_id == "devconsole-with-staticdir":
        return DEVCONSOLE_CONFLICT
    return FLAG_SYNTAX if case_id in _FLAG_SYNTAX_CASES else 1


#: The cases Go's flag package itself refuses (so websocketd exits 2).
_FLAG_SYNTAX_CASES = {"unknown-flag", "unknown-flag-with-value", "unknown-alias",
                      "bad-flag-syntax", "empty-flag-name", "missing-argument-at-end",
                      "missing-argument-list-flag", "bad-int", "bad-int-maxforks", "bad-bool",
                      "empty-bool", "bad-broadcast-backlog"}


@parametrize_fast_first("argv, needles, status", [pytest.param(a, n, _usage_status(i), id=i)
                                                  for i, a, n in USAGE_ERRORS])
def test_usage_error_is_one_line_with_websocketds_status_and_starts_nothing(argv, needles,
                                                                            status, tmp_path):
    _script(tmp_path, "runme.sh", 0o755)
    _script(tmp_path, "plain.sh", 0o644)
    (tmp_path / "subdir").mkdir()
    env_path = os.environ.get("PATH", "")
    assert str(tmp_path) not in env_path.split(os.pathsep)
    result = run_cli(*argv, cwd=tmp_path)
    assert_usage_error(result, *needles, status=status)
    # Nothing was started: no child of ours is left running, and no file appeared.
    assert wait_for_no_leftovers() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.sh", "runme.sh", "subdir"]


@pytest.mark.parametrize("argv, mode", [
    (["cat"], ""), (["--broadcast", "cat"], "lazy"), (["--broadcast=true", "cat"], "lazy"),
    (["-broadcast=1", "cat"], "lazy"), (["--broadcast=eager", "cat"], "eager"),
    (["--broadcast=false", "cat"], ""), (["--broadcast", "--dir=."], "lazy"),
])
def test_broadcast_spellings(argv, mode):
    assert cli.parse_args(argv).broadcast == mode


def test_broadcast_alone_never_takes_the_next_argument_as_its_value():
    assert cli.parse_flags(["--broadcast", "eager"]) == ({"broadcast": "true"}, ["eager"])


def test_broadcast_ids_and_backlog_are_parsed_with_broadcast():
    config = cli.parse_args(["--broadcast", "--broadcast-ids", "--broadcast-backlog=0x1000",
                             "cat"])
    assert (config.broadcast_ids, config.broadcast_backlog) == (True, 4096)
    assert cli.parse_args(["--broadcast", "cat"]).broadcast_backlog == 1024 * 1024


def test_usage_error_via_parse_args_raises_usage_error_in_process():
    with pytest.raises(UsageError, match="passstderr"):
        cli.parse_args(["--passstderr", "--binary", "cat"])
    with pytest.raises(UsageError, match="no COMMAND"):
        cli.parse_args([])


def test_devconsole_with_cgidir_is_refused(tmp_path):
    assert_usage_error(run_cli("--devconsole", f"--cgidir={tmp_path}"), "--devconsole",
                       "--cgidir", status=DEVCONSOLE_CONFLICT)


# -- help, version, license ----------------------------------------------------------------


def test_help_exits_0_and_mentions_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    for name in SPEC_FLAGS:
        assert re.search(rf"(?<![\w-])--{re.escape(name)}(?![\w-])", result.stdout), \
            f"--help does not mention --{name}"
    assert "COMMAND" in result.stdout and "--dir" in result.stdout


def test_readme_flag_table_has_a_row_for_every_flag():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"),
                  encoding="utf-8").read()
    table = readme.split("## Every flag", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    for name in cli.FLAGS:
        assert any(re.search(rf"`--{re.escape(name)}[=`\[]", row.split("|")[1]) for row in rows), \
            f"README's flag table has no row for --{name}"


def test_short_h_prints_the_same_help():
    long_form, short_form = run_cli("--help"), run_cli("-h")
    assert short_form.returncode == 0
    assert short_form.stdout == long_form.stdout != ""


def test_version_names_websocketd_py_and_its_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert re.search(rf"\bwebsocketd-py {re.escape(websocketd_py.__version__)}\b", lines[0])


def test_package_version_matches_installed_metadata():
    from importlib.metadata import version
    assert version("websocketd-py") == websocketd_py.__version__


def test_license_prints_a_license_text():
    result = run_cli("--license")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    assert "License" in text and "Copyright" in text
    assert "WITHOUT" in text.upper() or "AS IS" in text.upper()
    assert len(text.splitlines()) >= 10


def _console_script():
    beside = os.path.join(os.path.dirname(sys.executable), "websocketd-py")
    if os.path.isfile(beside):
        return beside
    found = shutil.which("websocketd-py")
    if not found:
        pytest.fail("the websocketd-py console script is not installed")
    return found


@pytest.mark.slow
def test_console_script_and_python_m_behave_the_same():
    script = _console_script()
    for args in (["--version"], ["--help"]):
        via_script, via_module = run_cli(*args, executable=script), run_cli(*args)
        assert via_script.returncode == via_module.returncode == 0
        assert via_script.stdout == via_module.stdout != ""
    assert_usage_error(run_cli("--nosuch", executable=script), "-nosuch", status=FLAG_SYNTAX)


def test_console_script_serves(server):
    """The console script runs a real server too (not only --version)."""
    script = _console_script()
    proc = subprocess.Popen([script, "--port=0", "--address=127.0.0.1", "echo", "from script"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            match = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                break
        else:
            pytest.fail("no startup line: " + proc.stderr.read())
        with connect(f"ws://127.0.0.1:{match.group(1)}/", proxy=None, open_timeout=10) as ws:
            assert ws.recv(timeout=10) == "from script"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        proc.terminate()
        status = proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert status == 0


# -- start-up ------------------------------------------------------------------------------


def test_port_in_use_is_one_line_naming_the_address_and_websocketds_fatal_line():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(f"--port={port}", "--address=127.0.0.1", "echo", "hi")
    assert result.returncode == 3
    assert websocketd_lines(result.stdout) == [
        f"FATAL  | server     |  | Can't start server: listen tcp 127.0.0.1:{port}: bind: "
        "address already in use"]
    assert result.stderr == (f"websocketd-py: cannot listen on 127.0.0.1:{port}: Address already "
                             "in use (another program uses this port: stop it or choose another "
                             "--port)\n")
    assert leftover_processes() == []


#: A log line's time, which differs between two runs.
_LOG_TIME = re.compile(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} [+-]\d{4} \| ")


def websocketd_lines(stdout):
    """The log lines of `stdout` without their time, which must be websocketd's format."""
    lines = stdout.splitlines()
    assert all(_LOG_TIME.match(line) for line in lines), stdout
    return [_LOG_TIME.sub("", line) for line in lines]


def run_websocketd(*args):
    """Go websocketd with `args` to completion; skips the test where it is not installed."""
    executable = shutil.which("websocketd")
    if executable is None:
        pytest.skip("websocketd is not installed (apt-get install websocketd) to compare with")
    return run_cli(*args, executable=executable)


@pytest.mark.slow
def test_a_port_in_use_fails_as_websocketd_fails():
    """Same exit status, same FATAL line but for the start lines websocketd logs first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = (f"--port={busy.getsockname()[1]}", "--address=127.0.0.1", "cat")
        theirs, ours = run_websocketd(*args), run_cli(*args)
    assert ours.returncode == theirs.returncode == 3
    fatal = [line for line in websocketd_lines(theirs.stdout) if line.startswith("FATAL")]
    assert websocketd_lines(ours.stdout) == fatal


@pytest.mark.slow
@pytest.mark.parametrize("args, status", [
    (["--nosuch", "cat"], FLAG_SYNTAX),
    (["--port=eighty", "cat"], FLAG_SYNTAX),
    (["--port=8080"], 1),  # no COMMAND
    (["--port=8080", "no-such-program-4e1f"], 1),
    (["--port=8080", "--dir=/no/such/dir"], 1),
    (["--port=8080", "--devconsole", "--staticdir=.", "cat"], DEVCONSOLE_CONFLICT),
    (["--port=8080", "--devconsole", "--cgidir=.", "cat"], DEVCONSOLE_CONFLICT),
])
def test_refused_settings_exit_as_websocketd_exits(args, status):
    theirs, ours = run_websocketd(*args), run_cli(*args)
    assert ours.returncode == theirs.returncode == status
    assert websocketd_lines(ours.stdout) == websocketd_lines(theirs.stdout)
    assert ours.stderr.count("\n") == 1


@pytest.mark.skipif(not IS_POSIX, reason="RLIMIT_NOFILE is POSIX")
@pytest.mark.slow
def test_open_file_soft_limit_is_raised_to_the_hard_limit(server):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip(f"hard limit {hard} leaves nothing to raise")
    expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)

    def lower_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    probe = ["sh", "-c", "ulimit -Sn"]
    # Control: without websocketd-py in between, the lowered limit is what a child sees.
    control = subprocess.run(probe, preexec_fn=lower_soft_limit, capture_output=True, text=True,
                             timeout=10)
    assert control.stdout.strip() == str(low)

    srv = server(*probe, preexec_fn=lower_soft_limit)
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == expected
    if sys.platform.startswith("linux"):
        with open(f"/proc/{srv.proc.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files"))
        assert row.split()[3:5] == [expected, expected]


#: Runs websocketd-py with one fault injected: the start of install_shutdown_handlers is
#: delayed, as a busy machine may delay it. The readiness line must still mean "ready".
_SLOW_HANDLERS = """
import sys, time
from websocketd_py import cli, tuning
original = tuning.install_shutdown_handlers
def slow(callback):
    time.sleep(0.5)
    return original(callback)
tuning.install_shutdown_handlers = slow
sys.argv[0] = "websocketd-py"
cli.main()
"""


@pytest.mark.skipif(not IS_POSIX, reason="SIGTERM semantics are POSIX")
@pytest.mark.slow
def test_sigterm_right_after_the_ready_line_is_a_clean_shutdown():
    proc = subprocess.Popen([PY, "-c", _SLOW_HANDLERS, "--port=0", "--address=127.0.0.1",
                             "echo", "hi"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "ws://127.0.0.1:" in line:
                proc.terminate()
                break
        rest, errors = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, seen, errors)
    assert "stopped" in rest


def _ready_url(proc):
    """The ws:// URL of the startup line that a websocketd-py process `proc` prints."""
    for line in proc.stdout:
        match = re.search(r"ws://127\.0\.0\.1:\d+/", line)
        if match:
            return match.group(0)
    pytest.fail("no startup line: " + proc.stderr.read())


#: Runs `cli.main(ARGV)` with one lowered open-file soft limit, stopped by SIGTERM once a
#: line arrives on stdin; prints one "REPORT {json}" line: main()'s exit status, and the
#: signal handlers, GIL switch interval, main thread's CPUs and open-file limit, before
#: main(), while it serves, and after it.
_MAIN_AND_REPORT = r"""
import json, os, resource, signal, sys, threading
from websocketd_py import cli


def state():
    return {
        "handlers": {name: repr(signal.getsignal(getattr(signal, name)))
                     for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)},
        "switch_interval": sys.getswitchinterval(),
        "cpus": sorted(os.sched_getaffinity(threading.main_thread().native_id))
                if hasattr(os, "sched_getaffinity") else None,
        "open_files": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


def stop():
    sys.stdin.readline()
    report["during"] = state()
    os.kill(os.getpid(), signal.SIGTERM)


report = {"before": state()}
threading.Thread(target=stop, daemon=True).start()
try:
    cli.main(sys.argv[1:])
except SystemExit as exit:
    report["status"] = exit.code
report["after"] = state()
print("REPORT " + json.dumps(report), flush=True)
"""


@pytest.mark.skipif(not IS_POSIX, reason="SIGTERM and RLIMIT_NOFILE are POSIX")
def test_main_tunes_the_process_while_serving_and_restores_it_after():
    """cli.main() alone sets the process-wide settings (api.serve sets none, see test_api),
    and puts each back when serving ends (not the malloc arena: it cannot be undone)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip(f"hard limit {hard} leaves nothing to raise")
    proc = subprocess.Popen(
        [PY, "-c", _MAIN_AND_REPORT, "--port=0", "--address=127.0.0.1", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)))
    try:
        with connect(_ready_url(proc), proxy=None, open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
        rest, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 0, errors
    assert "SIGTERM received: shutting down" in rest and "| stopped" in rest
    report = json.loads(re.search(r"^REPORT (.*)$", rest, re.M).group(1))
    before, during, after = report["before"], report["during"], report["after"]
    assert report["status"] == 0
    assert after == before
    assert during["switch_interval"] == SWITCH_INTERVAL != before["switch_interval"]
    assert all(during["handlers"][name] != before["handlers"][name] for name in before["handlers"])
    assert during["open_files"] == [hard, hard] != before["open_files"]
    if before["cpus"] is not None and len(before["cpus"]) > 1:
        assert len(during["cpus"]) == 1 and set(during["cpus"]) < set(before["cpus"])
    assert wait_for_no_leftovers() == []
