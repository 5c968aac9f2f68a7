"""A program that cannot start says why: in the log, to the client, at start-up for COMMAND.

The usual cause in a class: a script saved with Windows line endings, whose
#! line names `/bin/bash\\r` (the kernel fails) or, through env,
`python3\\r` (env fails with 127). Each is tried through a real server in
--dir, --cgidir and command mode, with a real client; `launching` is also
asked directly about each kind of first line.
"""

import subprocess
import sys

import pytest
from websockets.sync.client import connect

from websocketd_py import launching

from helpers import receive_all, request, start_on_free_port

CRLF_BASH = b"#!/bin/bash\r\necho hi\r\n"
CRLF_ENV = b"#!/usr/bin/env python3\r\nprint('hi')\r\n"
BASH_REASON = r"interpreter /bin/bash\r not found: the script has Windows line endings"
ENV_REASON = r"interpreter python3\r not found: the script has Windows line endings"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Windows reads #! lines itself")


def program(directory, name, content, mode=0o755):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def session(srv, path="/"):
    """(messages, close code, close reason) of one session with a real client."""
    with connect(srv.url(path), open_timeout=10) as ws:
        return receive_all(ws)


# -- through a server ----------------------------------------------------------------


def test_dir_a_crlf_script_is_refused_with_what_is_wrong(server, tmp_path):
    crlf = program(tmp_path, "crlf.sh", CRLF_BASH)
    program(tmp_path, "crlf.py", CRLF_ENV)
    srv = server(f"--dir={tmp_path}")
    assert session(srv, "/crlf.sh") == ([], 1011, BASH_REASON)
    line = srv.wait_log(r"\| ERROR  \| process .* \| cannot start .*").group(0)
    assert line.endswith(f"| cannot start {crlf}: {BASH_REASON}; run dos2unix {crlf} "
                         "(or set the editor to save with LF line endings)")
    # env starts, does not find `python3\r`, exits with 127: the reason says why
    assert session(srv, "/crlf.py") == ([], 1011, ENV_REASON)
    disconnect = srv.wait_log(r"\| DISCONNECT$", count=2).string
    assert r"exit:'interpreter python3\\r not found: the script has Windows line endings'" \
        in disconnect


def test_dir_other_reasons_a_program_cannot_start(server, tmp_path):
    program(tmp_path, "missing.sh", b"#!/no/such/shell\necho hi\n")
    program(tmp_path, "nohashbang.sh", b"echo hi\n")
    program(tmp_path, "exit127.sh", b"#!/bin/sh\nno-such-command-here\n")
    srv = server(f"--dir={tmp_path}")
    assert session(srv, "/missing.sh") == ([], 1011, "interpreter /no/such/shell not found")
    assert session(srv, "/nohashbang.sh") == ([], 1011, "the program has no #! line")
    assert session(srv, "/exit127.sh") == ([], 1011, "exit status 127")  # not the #! line


def test_cgidir_a_crlf_script_is_a_500_saying_why(server, tmp_path):
    cgi = tmp_path / "cgi"
    crlf = program(cgi, "crlf.sh", CRLF_BASH)
    srv = start_on_free_port(server, f"--cgidir={cgi}")
    status, _, body = request(srv.port, "GET", "/crlf.sh")
    assert status == 500
    assert body.decode() == ("Internal Server Error: the CGI script could not be started: "
                             f"{BASH_REASON}\n")
    srv.wait_log(rf"\| ERROR  \| cgi .* \| cannot start {crlf}: .*dos2unix")


def test_command_a_crlf_script_is_one_line_at_start_up(tmp_path):
    crlf = program(tmp_path, "crlf.sh", CRLF_BASH)
    result = subprocess.run([sys.executable, "-m", "websocketd_py", "--port=0", str(crlf)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=15)
    assert (result.returncode, result.stdout) == (1, "")  # a bad setting, as websocketd exits
    assert result.stderr == (f"websocketd-py: COMMAND {crlf} cannot start: {BASH_REASON}; "
                             f"run dos2unix {crlf} (or set the editor to save with LF line "
                             "endings)\n")


def test_command_a_script_saved_as_crlf_while_serving(server, tmp_path):
    script = program(tmp_path, "greet.sh", b"#!/bin/bash\necho hi\n")
    srv = server(str(script))
    assert session(srv) == (["hi"], 1000, "")
    script.write_bytes(CRLF_BASH)  # a student saves it again from another editor
    assert session(srv) == ([], 1011, BASH_REASON)
    srv.wait_log(r"\| ERROR  \| process .* cannot start .*Windows line endings")


# -- what launching says about each first line -----------------------------------------


@pytest.mark.parametrize("first_line, what", [
    (b"#!/bin/sh\n", None),
    (b"#!/usr/bin/env python3\n", None),
    (b"#! /bin/sh -e\n", None),
    (b"echo no hash bang\n", None),
    (b"#!/bin/bash\r\n", BASH_REASON),
    (b"#!/usr/bin/env python3\r\n", ENV_REASON),
    (b"#!/bin/sh -e\r\n", r"its #! line ends in \r: the script has Windows line endings"),
    (b"#!/usr/bin/pythonn\n", "interpreter /usr/bin/pythonn not found"),
    (b"#!/usr/bin/env no-such-interpreter\n", "interpreter no-such-interpreter not found on PATH"),
])
def test_script_problem_names_what_is_wrong(tmp_path, first_line, what):
    path = program(tmp_path, "prog", first_line + b"echo hi\n")
    problem = launching.script_problem(str(path), "prog")
    assert (problem[0] if problem else None) == what
    if problem is not None:
        assert "prog" in problem[1]
