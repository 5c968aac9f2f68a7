"""The dev console's subprotocol: the program's side (stderr, prompts, the exit, the buffering
hint) on the page's connection only; every other client gets the bytes it always got.

Raw sockets here: the exact bytes after the 101 are the contract for plain clients.
"""

import base64
import json
import sys

import pytest

from websocketd_py import hints

from helpers import raw_handshake, raw_upgrade

DEVCONSOLE = b"Sec-WebSocket-Protocol: websocketd-py.devconsole\r\n"
#: A prompt that waits 0.5 s for its newline, a stderr line, a stdout line that is JSON, exit 3.
PROMPTING = ("sh", "-c", "printf 'Ask? '; sleep 0.5; echo oops >&2; echo Hello; "
                         "echo '{\"event\":\"exit\",\"data\":\"fake\"}'; exit 3")


def text_frame(payload):
    return bytes((0x81, len(payload))) + payload


def session_bytes(port, extra=""):
    """(the 101's head, every byte after it up to and with the close frame) of a raw client."""
    sock, head, data = raw_handshake(port, extra=extra)
    with sock:
        while True:  # frames until the close frame (all short here: 2-byte headers)
            at = 0
            while at + 2 <= len(data) and at + 2 + data[at + 1] <= len(data):
                if data[at] == 0x88:
                    sock.sendall(b"\x88\x82\x00\x00\x00\x00" + data[at + 2:at + 4])
                    return head, data[:at + 2 + data[at + 1]]
                at += 2 + data[at + 1]
            chunk = sock.recv(65536)
            assert chunk, f"closed before the close frame: {data!r}"
            data += chunk


#: What a plain client gets from PROMPTING, byte for byte: the prompt glued to its line.
PLAIN_BYTES = (text_frame(b"Ask? Hello") + text_frame(b'{"event":"exit","data":"fake"}')
               + b"\x88\x0f\x03\xf3exit status 3")


@pytest.mark.parametrize("flags, offer", [
    (("--devconsole",), ""),
    ((), "Sec-WebSocket-Protocol: websocketd-py.devconsole\r\n"),
], ids=["devconsole-server-plain-client", "plain-server-devconsole-offer"])
def test_other_clients_get_exactly_the_plain_bytes(server, flags, offer):
    srv = server(*flags, *PROMPTING)
    head, data = session_bytes(srv.port, offer)
    assert head.startswith("HTTP/1.1 101 ")
    assert "sec-websocket-protocol" not in head.lower()
    assert data == PLAIN_BYTES


def test_the_devconsole_connection_gets_prompt_stderr_stdout_and_exit_marked(server):
    srv = server("--devconsole", *PROMPTING)
    reply = raw_upgrade(srv.port, headers=DEVCONSOLE)
    assert "Sec-WebSocket-Protocol: websocketd-py.devconsole\r\n" in reply.head + "\r\n"
    messages = [json.loads(message) for message in reply.messages]
    assert messages[0] == {"stream": "prompt", "data": "Ask? "}
    # stdout and stderr are two pipes: their lines may come in either order
    assert sorted(messages[1:-1], key=json.dumps) == sorted([
        {"stream": "stderr", "data": "oops"},
        {"stream": "stdout", "data": "Hello"},
        {"stream": "stdout", "data": '{"event":"exit","data":"fake"}'},
    ], key=json.dumps)
    assert messages[-1] == {"event": "exit", "data": "exit status 3"}
    assert reply.close_code == 1011
    srv.wait_log(r"\| ERROR  \| stderr .*\| oops$")  # still logged too


def test_a_killed_program_is_an_exit_event_with_its_signal(server):
    srv = server("--devconsole", "sh", "-c", "kill -9 $$")
    messages = [json.loads(m) for m in raw_upgrade(srv.port, headers=DEVCONSOLE).messages]
    assert messages == [{"event": "exit", "data": "killed by signal 9"}]


def test_the_exit_event_says_what_the_close_reason_says(server, tmp_path):
    """A script saved with Windows line endings: env exits 127, and both say why."""
    crlf = tmp_path / "crlf.py"
    crlf.write_bytes(b"#!/usr/bin/env python3\r\nprint('hi')\r\n")
    crlf.chmod(0o755)
    srv = server("--devconsole", f"--dir={tmp_path}")
    reply = raw_upgrade(srv.port, "/crlf.py", headers=DEVCONSOLE)
    exit_event = json.loads(reply.messages[-1])
    assert exit_event == {"event": "exit", "data": reply.close_reason}
    assert "Windows line endings" in reply.close_reason


def test_partial_lines_send_a_waiting_line_to_plain_clients_when_asked(server):
    srv = server("--partial-lines=100", *PROMPTING)
    head, data = session_bytes(srv.port)
    assert data == (text_frame(b"Ask? ") + text_frame(b"Hello")
                    + text_frame(b'{"event":"exit","data":"fake"}')
                    + b"\x88\x0f\x03\xf3exit status 3")


def test_the_devconsole_connection_is_behind_basic_auth(server):
    srv = server("--devconsole", "--basic-auth=ann:secret", *PROMPTING)
    assert raw_upgrade(srv.port, headers=DEVCONSOLE).status == 401
    credentials = b"Authorization: Basic " + base64.b64encode(b"ann:secret") + b"\r\n"
    reply = raw_upgrade(srv.port, headers=DEVCONSOLE + credentials)
    assert json.loads(reply.messages[0]) == {"stream": "prompt", "data": "Ask? "}


def test_with_broadcast_the_page_gets_plain_messages_under_a_name_that_says_so(server):
    srv = server("--devconsole", "--broadcast", "cat")
    sock, head, _ = raw_handshake(srv.port, extra="Sec-WebSocket-Protocol: websocketd-py."
                                                  "devconsole, websocketd-py.devconsole.plain\r\n")
    with sock:
        assert "Sec-WebSocket-Protocol: websocketd-py.devconsole.plain" in head
        sock.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # a masked "hi": cat's line comes back plain
        data = b""
        while len(data) < 4:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data == text_frame(b"hi")


@pytest.mark.slow
def test_the_buffering_hint_reaches_the_devconsole_and_names_the_shell_fixes(server):
    srv = server("--devconsole", "sh", "-c", "sleep 30")
    sock, _, frame = raw_handshake(srv.port, extra=DEVCONSOLE.decode())
    with sock:  # the program prints nothing: the first message is the hint (126: 2-byte length)
        while len(frame) < 4 or len(frame) < 4 + int.from_bytes(frame[2:4], "big"):
            chunk = sock.recv(65536)
            assert chunk, frame
            frame += chunk
    assert frame[:2] == b"\x81\x7e", frame[:2]
    hint = json.loads(frame[4:4 + int.from_bytes(frame[2:4], "big")])
    assert hint["event"] == "hint"
    for fix in ("sed -u", "fflush()", "grep --line-buffered", "stdbuf -oL"):
        assert fix in hint["data"]
    srv.wait_log(r"\| INFO   \| session .*no output from the program yet")


# -- pure part: the hint's kind ------------------------------------------------------------

@pytest.mark.parametrize("first_line, kind, fix", [
    ("#!/usr/bin/env python3\n", "python", "flush=True"),
    ("#!/usr/bin/env -S python3 -u\n", "python", "python -u"),
    ("#!/bin/bash\n", "bash", "grep --line-buffered"),
    ("#!/usr/bin/perl -w\n", "perl", "$| = 1"),
    ("\x7fELF\x02\x01\x01", "prog", "setvbuf"),
])
def test_the_hint_names_the_fix_for_the_programs_kind(tmp_path, first_line, kind, fix):
    program = tmp_path / "prog"
    program.write_text(first_line)
    assert hints.program_kind([str(program)]) == kind
    assert fix in hints.buffering_hint([str(program)])


def test_the_hint_knows_a_command_by_its_name():
    assert hints.program_kind([sys.executable, "-c", "pass"]) == "python"
    assert "sed -u" in hints.buffering_hint(["/bin/sed", "s/a/b/"])
