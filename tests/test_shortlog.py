"""--logformat=short: one short line per event, a Python traceback as one line.

End to end: a real server over a class directory, students' programs that
work, raise, fail to parse and cannot start, real clients; the log read
line by line. Then the format and the traceback summing-up on their own.
"""

import io
import re
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from websocketd_py.log import Log
from websocketd_py.shortlog import ShortFormat

from helpers import receive_all

#: A short line: the time, who (a program and its session's tag), two blanks, the event.
LINE = re.compile(r"(\d\d:\d\d:\d\d)(?: (\S+)(?: (#\d{4}))?)?  (\S.*)")

BUGGY = "#!/usr/bin/env python3\ntext = input()\nprint(txt)\n"
SYNTAX = "#!/usr/bin/env python3\nprint('hi'\n"
WORKING = "#!/usr/bin/env python3\nprint('hello', input())\n"


def program(path, text, newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    path.chmod(0o755)


def run(srv, path, message="Ada"):
    with connect(srv.url(path), open_timeout=10) as ws:
        if message is not None:
            ws.send(message)
        return receive_all(ws)


def by_session(lines):
    """{(who, tag): [events]} of the session lines."""
    sessions = {}
    for line in lines:
        time_, who, tag, event = LINE.fullmatch(line).groups()
        if tag:
            sessions.setdefault((who, tag), []).append(event)
    return sessions


def test_a_class_in_the_short_log(server, tmp_path):
    root = tmp_path / "class"
    program(root / "carol" / "buggy.py", BUGGY)
    program(root / "carol" / "syntax.py", SYNTAX)
    program(root / "carol" / "crlf.py", WORKING, newline="\r\n")
    program(root / "bob" / "hello.py", WORKING)
    srv = server("--logformat=short", f"--dir={root}")
    assert run(srv, "/bob/hello.py") == (["hello Ada"], 1000, "")
    assert run(srv, "/carol/buggy.py")[1:] == (1011, "exit status 1")
    assert run(srv, "/carol/syntax.py")[1:] == (1011, "exit status 1")
    assert run(srv, "/carol/crlf.py", None)[1] == 1011
    srv.wait_log(r"  disconnected", count=4)
    srv.stop()

    assert all(LINE.fullmatch(line) for line in srv.lines), srv.log_text()
    assert srv.lines[0].endswith(f"  Serving from directory      : {root}")
    assert not any(re.search(r"Traceback|  File |101|CONNECT|\| ", line) for line in srv.lines)
    sessions = by_session(srv.lines)
    assert sorted(who for who, _ in sessions) == [
        "bob/hello.py", "carol/buggy.py", "carol/crlf.py", "carol/syntax.py"]
    events = {who: happened for (who, _), happened in sessions.items()}
    assert events["bob/hello.py"] == ["connected from 127.0.0.1", "disconnected"]
    connected, error, disconnected = events["carol/buggy.py"]
    assert connected == "connected from 127.0.0.1"
    assert re.fullmatch(r"NameError: name 'txt' is not defined.* \(buggy\.py, line 3\)", error)
    assert disconnected == "disconnected: exit status 1"
    assert events["carol/syntax.py"][1] == \
        "SyntaxError: '(' was never closed (syntax.py, line 2)"
    crlf = events["carol/crlf.py"]  # between: what env says on stderr, in its own words
    assert (crlf[0], crlf[-1]) == ("connected from 127.0.0.1", r"disconnected: interpreter "
                                   r"python3\r not found: the script has Windows line endings")


def test_an_unknown_format_is_one_usage_line():
    result = subprocess.run([sys.executable, "-m", "websocketd_py", "--logformat=json", "cat"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=15)
    assert (result.returncode, result.stdout) == (1, "")  # a bad setting, as websocketd exits
    assert result.stderr == "websocketd-py: invalid -logformat=json: use websocketd or short\n"


# -- the format on its own -------------------------------------------------------------


@pytest.fixture
def short_log():
    stream = io.StringIO()
    log = Log("debug", stream, line_format=ShortFormat("/srv/class"))
    session = log.context(url="http://h/carol/a.py", id="17964089910102790042",
                          remote="10.0.0.7", command="/srv/class/carol/a.py", origin="")
    return stream, log, session


def events(stream):
    return [LINE.fullmatch(line).group(2, 3, 4) for line in stream.getvalue().splitlines()]


def test_what_each_entry_becomes(short_log):
    stream, log, session = short_log
    log.write("info", "server", "Serving from directory      : class")
    session.access("http", "101 Switching Protocols")
    session.access("session", "CONNECT")
    session.error("process", "cannot start /srv/class/carol/a.py: why")
    session.with_fields(exit="exit status 0", close=1000).access("session", "DISCONNECT")
    session.with_fields(exit="killed by signal 9").access("session", "DISCONNECT")
    log.context(url="http://h/bob/x?y=1", remote="10.0.0.8").error("http", "403 Forbidden")
    log.context(cgiscript="/elsewhere/c.sh").error("stderr", "line\x1b[31mred")
    assert events(stream) == [
        (None, None, "Serving from directory      : class"),
        ("carol/a.py", "#0042", "connected from 10.0.0.7"),
        ("carol/a.py", "#0042", "cannot start /srv/class/carol/a.py: why"),
        ("carol/a.py", "#0042", "disconnected"),
        ("carol/a.py", "#0042", "disconnected: killed by signal 9"),
        ("/bob/x", None, "403 Forbidden"),
        ("c.sh", None, "line [31mred"),
    ]


def test_a_python_traceback_is_one_line_each_chained_exception_its_own(short_log):
    stream, _, session = short_log
    stderr = session.stderr_log()
    for text in ["starting", "", "Traceback (most recent call last):",
                 '  File "/srv/class/carol/a.py", line 9, in <module>',
                 "    int(word)", "    ~~~^^^^^^", "ValueError: invalid literal for int()", "",
                 "During handling of the above exception, another exception occurred:", "",
                 "Traceback (most recent call last):",
                 '  File "/srv/class/carol/a.py", line 11, in <module>',
                 '  File "/usr/lib/python3/helper.py", line 2, in fail',
                 "NameError: name 'txt' is not defined", "after"]:
        stderr.line(text)
    stderr.end()
    assert [event for _, _, event in events(stream)] == [
        "starting",
        "ValueError: invalid literal for int() (a.py, line 9)",
        "NameError: name 'txt' is not defined (helper.py, line 2)",
        "after",
    ]


def test_a_traceback_cut_short_by_the_end_of_stderr_is_said(short_log):
    stream, _, session = short_log
    stderr = session.stderr_log()
    stderr.line("Traceback (most recent call last):")
    stderr.line('  File "/srv/class/carol/a.py", line 4, in <module>')
    stderr.end()
    assert events(stream) == [("carol/a.py", "#0042", "a traceback cut short (a.py, line 4)")]
