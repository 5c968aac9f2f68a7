"""The request line and headers: one deadline from accept, one size cap (server.RequestFile).

A client has HEAD_TIMEOUT (10 s) from accept to send its whole request head,
however it spaces its bytes; the head may take HEAD_BYTES (1 MiB) in all,
more gets 431 before anything starts. Raw sockets send what a library would
not. The deadline tests run a server in this process with a short deadline
(`Listener.head_timeout`); one slow test checks the 10 s of the command line.
"""

import select
import socket
import sys
import threading
import time

import pytest

import websocketd_py
from certificates import Authority
from helpers import children_of, rss_kib, wait_for

UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
MIB = 1024 * 1024
#: A header line of 60,000 bytes (http.server's limit for one line is 64 KiB).
BIG_HEADER = "X-Big-{}: " + "b" * (60_000 - 12) + "\r\n"


@pytest.fixture
def quick_server():
    """`quick_server(head_timeout=1.0, **options)`: a server in this process whose request
    heads are due `head_timeout` seconds after accept (`Listener.head_timeout`), serving in
    a thread; shut down at teardown."""
    started = []

    def start(head_timeout=1.0, **options):
        server = websocketd_py.make_server("cat", port=0, address="127.0.0.1", loglevel="none",
                                           **options)
        for listener in server.listeners:
            listener.head_timeout = head_timeout
        serving = threading.Thread(target=server.serve_forever, name="quick-server")
        serving.start()
        started.append((server, serving))
        server.port = server.listeners[0].port
        return server

    yield start
    for server, serving in started:
        server.shutdown()
        serving.join(10)
        assert not serving.is_alive()


def read_all(sock):
    """What the server sends until it closes the connection (a reset ends it too)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def trickle_until_closed(sock, data, every):
    """Send `data` one byte every `every` seconds until the server answers or closes;
    (seconds from the first byte to the close, what the server sent)."""
    began = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed already
            break
        if select.select([sock], [], [], every)[0]:
            break  # an answer, or the close
    received = read_all(sock)
    return time.monotonic() - began, received


#: The start of a TLS ClientHello (a handshake record of 512 bytes), never finished.
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100
#: A request head that never ends, to send one byte at a time.
TRICKLED = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 400


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def test_a_trickled_request_is_closed_at_the_deadline(quick_server):
    srv = quick_server()
    with connect(srv.port) as sock:
        seconds, received = trickle_until_closed(sock, TRICKLED, every=0.1)
    assert 0.9 < seconds < 2.5
    assert received == b""  # closed without an answer, as Go's server does


def test_the_deadline_runs_from_accept_not_from_the_first_byte(quick_server):
    srv = quick_server(head_timeout=2.0)
    with connect(srv.port) as sock:
        time.sleep(1.6)  # silent (in the waiting room) for most of the time allowed
        seconds, received = trickle_until_closed(sock, TRICKLED, every=0.05)
    assert seconds < 1.2  # what was left of the 2 s (0.4 s), not 2 s more
    assert received == b""


def test_a_silent_connection_is_closed_at_the_same_deadline(quick_server):
    srv = quick_server()
    with connect(srv.port) as sock:
        began = time.monotonic()
        assert read_all(sock) == b""
        assert 0.9 < time.monotonic() - began < 2.5


def test_a_request_sent_in_time_is_served(quick_server):
    srv = quick_server()
    with connect(srv.port) as sock:
        for piece in (b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        assert read_all(sock).startswith(b"HTTP/1.1 404")


def test_a_tls_handshake_counts_against_the_deadline(quick_server, tmp_path):
    cert, key = Authority(tmp_path).issue("server", "localhost")
    srv = quick_server(ssl=True, sslcert=str(cert), sslkey=str(key))
    with connect(srv.port) as sock:
        seconds, received = trickle_until_closed(sock, CLIENT_HELLO_START, every=0.1)
    assert 0.9 < seconds < 2.5
    assert received == b""


@pytest.mark.slow
def test_the_command_line_allows_ten_seconds_for_the_request_head(server):
    srv = server("cat")
    with connect(srv.port) as sock:
        seconds, received = trickle_until_closed(sock, TRICKLED, every=1.0)
    assert 9.5 < seconds < 12
    assert received == b""
    assert children_of(srv.proc.pid) == []


# -- the size cap ----------------------------------------------------------------------


def head_with(headers_bytes, upgrade):
    """A request head whose header lines take about `headers_bytes`."""
    lines = "".join(BIG_HEADER.format(n) for n in range(headers_bytes // 60_000))
    return ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (UPGRADE if upgrade else "") + lines
            + "\r\n").encode()


def status_of(port, data):
    """Send `data`; the status the server answered with (it may close before reading all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except OSError:  # refused and closed before all of it was read
            pass
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            return None
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize("upgrade", [True, False], ids=["upgrade", "plain"])
def test_a_head_over_one_mib_gets_431_and_starts_nothing(server, upgrade):
    srv = server("cat")
    assert status_of(srv.port, head_with(int(1.1 * MIB), upgrade)) == 431
    assert status_of(srv.port, head_with(6 * MIB, upgrade)) == 431  # accepted until now
    assert children_of(srv.proc.pid) == []
    assert not any("CONNECT" in line for line in srv.lines)
    srv.wait_log(r"431 Request Header Fields Too Large", count=2)


@pytest.mark.slow
def test_a_head_under_one_mib_is_served(server):
    srv = server("cat")
    head = head_with(MIB - 70_000, upgrade=True)
    assert len(head) < MIB
    assert status_of(srv.port, head) == 101
    srv.wait_log(r"\| DISCONNECT")


def bytes_in_flight(port):
    """Bytes queued on loopback TCP connections to or from `port`, either way (/proc/net/tcp):
    0 once the server has read everything its clients sent."""
    total = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            ports = {int(address.rsplit(":", 1)[1], 16) for address in fields[1:3]}
            if port in ports:
                total += sum(int(queue, 16) for queue in fields[4].split(":"))
    return total


def send_and_stall(port, data):
    """A connection that sends `data` (as much as the server takes) and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(3)
    try:
        sock.sendall(data)
    except OSError:  # the server stopped reading (timeout), or refused and closed
        pass
    return sock


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_stalled_senders_of_big_heads_hold_a_bounded_amount_of_memory(server):
    """20 clients send 3 MiB of header lines and stall, 20 more just under 1 MiB: the
    server holds at most about 1 MiB for each (it held all 3 MiB, 124 MB for 20 at 6 MiB)."""
    srv = server("cat")
    before = rss_kib(srv.proc.pid)
    over, under = (head_with(size, upgrade=False)[:-2] for size in (3 * MIB, MIB - 70_000))
    stalled = []
    try:
        for data in [over] * 20 + [under] * 20:
            stalled.append(send_and_stall(srv.port, data))
        wait_for(lambda: bytes_in_flight(srv.port) == 0, message="the server to read it all")
        grown = rss_kib(srv.proc.pid) - before
        assert grown < 40 * 1024, f"the server grew by {grown} KiB"
    finally:
        for sock in stalled:
            sock.close()
    assert children_of(srv.proc.pid) == []
