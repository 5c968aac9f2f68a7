"""A session or CGI request whose threads cannot start: nothing left running, one log line,
no HTTP in a WebSocket stream.

The server runs under an address-space limit (RLIMIT_AS, set on the running
server with prlimit) that leaves room for the request's thread but not for
the session's writer thread or the CGI script's threads: the program has
started by then, and must be ended, its slot given back, and the client told
(a close frame; a 500 for CGI).
"""

import base64
import json
import resource
import socket
import sys
import urllib.request

import pytest

from helpers import read_until_eof, request, script

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, prlimit")

KEY = base64.b64encode(b"0123456789abcdef").decode()
MIB = 1024 * 1024


def vm_size(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def upgrade(port):
    """A raw upgrade; everything the server sent until it closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Key: {KEY}\r\n\r\n".encode())
        return read_until_eof(sock)


def status(srv):
    with urllib.request.urlopen(srv.url("/_status", "http"), timeout=10) as reply:
        return json.load(reply)


def one_thread_only(pid):
    """Limit `pid`'s address space to room for one more thread's stack (8 MiB) and a
    little, not for a second one; the old limit, to put back."""
    old = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (vm_size(pid) + 12 * MIB, old[1]))
    return old


def test_a_session_whose_writer_thread_cannot_start_ends_its_program(server):
    srv = server("--status-path=/_status", "cat")
    old = one_thread_only(srv.proc.pid)
    try:
        received = upgrade(srv.port)
    finally:
        resource.prlimit(srv.proc.pid, resource.RLIMIT_AS, old)
    head, _, stream = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"HTTP/1.1" not in stream  # no error page in the WebSocket stream
    assert stream[:2] == b"\x88\x19" and stream[2:4] == (1011).to_bytes(2, "big"), stream
    srv.wait_log(r"cannot run the session: can't start new thread")
    srv.wait_log(r"exit:'[^']+' close:'1011' \| DISCONNECT")
    assert srv.session_pids() == []
    report = status(srv)
    assert (report["forks_in_use"], report["session_count"]) == (0, 0)


def test_a_cgi_script_whose_threads_cannot_start_is_ended_and_its_slot_given_back(server,
                                                                                tmp_path):
    script(tmp_path, "slow.sh", "sleep 30\n")
    srv = server("--status-path=/_status", f"--cgidir={tmp_path}", "--maxforks=1", "cat")
    old = one_thread_only(srv.proc.pid)
    try:
        status_code, _, body = request(srv.port, "GET", "/slow.sh")
    finally:
        resource.prlimit(srv.proc.pid, resource.RLIMIT_AS, old)
    assert status_code == 500, body
    srv.wait_log(r"cannot run the CGI script: can't start new thread")
    assert srv.session_pids() == []
    assert status(srv)["forks_in_use"] == 0
