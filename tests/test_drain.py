"""After a plain HTTP response the server reads at most 256 KiB more, then closes (server.RequestFile).

werkzeug would read up to 10 MB a time for as long as the client keeps
sending: a few clients that send a large body and then trickle held the
server's memory for as long as they liked.
"""

import os
import socket
import struct
import sys
import threading

import pytest

from helpers import rss_kib, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

MIB = 1024 * 1024


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def send_then_stall(port, results):
    """A GET, 9 MiB behind it, then nothing: whether the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(3)
        try:
            sock.sendall(b"x" * 9 * MIB)
        except (socket.timeout, OSError):
            pass  # the server stopped reading, or closed: both are fine here
        sock.settimeout(10)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass  # reset: it closed with our bytes unread
        results.append(received.startswith(b"HTTP/1.1 404"))
    finally:
        sock.close()


def test_clients_that_send_a_body_and_stall_hold_no_memory(server):
    srv = server("cat")
    before = rss_kib(srv.proc.pid)
    results = []
    clients = [threading.Thread(target=send_then_stall, args=(srv.port, results))
               for _ in range(10)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert results == [True] * 10  # every one answered, and closed by the server
    assert rss_kib(srv.proc.pid) - before < 30 * 1024  # KiB


def test_clients_that_reset_during_the_drain_leave_no_descriptor(server):
    srv = server("cat")
    wait_for(lambda: fds(srv.proc.pid) > 0)
    baseline = fds(srv.proc.pid)
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" +
                     b"x" * 30000)
        sock.recv(100)  # the 404: the server is draining now
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset
    wait_for(lambda: fds(srv.proc.pid) <= baseline, timeout=2,
             message="the server's descriptors back to their count before")
