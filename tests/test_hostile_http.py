"""Hostile HTTP: broken requests, huge headers, bad handshakes and a flood of silent sockets.

Each is answered (or dropped) without starting a process, without a
traceback, and without costing the server anything once it is over; and
10,000 connections that never send a byte cost file descriptors, not threads,
so a real client is still served at once (the listener's `WaitingRoom`).
"""

import resource
import select
import socket
import ssl
import struct
import threading
import time

import pytest
from websockets.sync.client import connect

from certificates import Authority
from helpers import assert_back_to_idle, footprint, start_measured, wait_for
from websocketd_py.server import WaitingRoom

UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
VERSION = "Sec-WebSocket-Version: 13\r\n"
IDLE_CONNECTIONS = 10_000


def upgrade_with(headers, request_line="GET / HTTP/1.1"):
    return f"{request_line}\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()


#: (what is wrong, the bytes sent, the status expected; None: closed without an answer)
MALFORMED = [
    ("one word", b"GARBAGE\r\n\r\n", 400),
    ("four words", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400),
    ("HTTP/2 on an HTTP/1 port", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("binary noise", bytes(range(1, 256)) + b"\r\n\r\n", 400),
    ("NUL in the request line", b"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("blank request line", b"\r\n\r\n", None),
    ("request line over 64 KiB", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ("header line without colon", upgrade_with(UPGRADE + "NoColonHere\r\n"), 400),
    ("header name with a space", upgrade_with(UPGRADE + "Bad Name: x\r\n"), 400),
    ("header without a name", upgrade_with(UPGRADE + ": value\r\n"), 400),
    ("continuation as first header", b"GET / HTTP/1.1\r\n folded: x\r\n" + UPGRADE.encode()
     + b"\r\n", 400),
    ("NUL in a header value", upgrade_with(UPGRADE + "X-Nul: a\0b\r\n"), 400),
    ("header line over 64 KiB", upgrade_with(UPGRADE + "X-Big: " + "b" * 70_000 + "\r\n"), 431),
    ("201 headers", upgrade_with(UPGRADE + "".join(f"X-H{n}: v\r\n" for n in range(201))), 431),
    ("missing key", upgrade_with("Upgrade: websocket\r\nConnection: Upgrade\r\n" + VERSION), 400),
    ("short key", upgrade_with("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Key: c2hvcnQ=\r\n" + VERSION), 400),
    ("key that is not base64", upgrade_with("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                            "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n"
                                            + VERSION), 400),
    ("two keys", upgrade_with(UPGRADE + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), 400),
    ("version 8", upgrade_with("Upgrade: websocket\r\nConnection: Upgrade\r\n" + KEY
                               + "Sec-WebSocket-Version: 8\r\n"), 400),
    ("missing version", upgrade_with("Upgrade: websocket\r\nConnection: Upgrade\r\n" + KEY), 400),
    ("POST upgrade", upgrade_with(UPGRADE, "POST / HTTP/1.1"), 400),
]


def exchange(port, data):
    """Send `data` as one request and read the answer to its end; its status, None if none.

    The whole answer is read, as a client does: closing with unread bytes resets the
    connection, and werkzeug, reset while it drains the request, leaves its selector's
    descriptor to the garbage collector, which would make the idle check below flaky.
    """
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # refused before all of the request was read
            pass
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


def echo_once(url, **options):
    with connect(url, open_timeout=10, **options) as ws:
        ws.send("still serving")
        return ws.recv(timeout=10)


@pytest.mark.slow
def test_malformed_requests_are_refused_and_start_nothing(server):
    srv = start_measured(server, "cat")
    answers = {what: exchange(srv.port, data) for what, data, _ in MALFORMED}
    assert answers == {what: status for what, _, status in MALFORMED}
    assert srv.session_pids() == []
    assert not any(line.endswith("| CONNECT") for line in srv.lines)
    assert echo_once(srv.url()) == "still serving"
    assert_back_to_idle(srv)
    srv.stop()
    assert srv.stderr_lines == []  # no traceback


@pytest.mark.slow
def test_request_cut_off_mid_headers_leaves_nothing(server):
    srv = start_measured(server, "cat")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
    assert echo_once(srv.url()) == "still serving"
    assert sum(line.endswith("| CONNECT") for line in srv.lines) == 1  # the echo's
    assert_back_to_idle(srv)


# -- connections that never say anything ---------------------------------------------


def open_silent_connections(port, count):
    """`count` TCP connections that send nothing (non-blocking connects: the backlog may fill)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
    except BaseException:
        reset_all(sockets)
        raise
    return sockets


def reset_all(sockets):
    """Close with a reset: no TIME_WAIT left to use up the ephemeral ports of later tests."""
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()


def open_file_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])


@pytest.fixture
def many_descriptors():
    """The test process may open as many files as its hard limit allows (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 1000:
        pytest.skip(f"the open-file hard limit {hard} is below {IDLE_CONNECTIONS + 1000}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_ten_thousand_silent_connections_do_not_stop_a_new_client(server, many_descriptors):
    srv = start_measured(server, "cat")
    if open_file_limit(srv.proc.pid) < IDLE_CONNECTIONS + 1000:
        pytest.skip("the server cannot open enough files here")
    silent = open_silent_connections(srv.port, IDLE_CONNECTIONS)
    try:
        wait_for(lambda: footprint(srv.proc.pid).fds >= srv.idle.fds + IDLE_CONNECTIONS,
                 timeout=30, message="the server to accept every silent connection")
        began = time.monotonic()
        assert echo_once(srv.url()) == "still serving"
        assert time.monotonic() - began < 2.0
        threads = footprint(srv.proc.pid).threads
        assert threads < 100, f"{threads} threads for {IDLE_CONNECTIONS} silent connections"
    finally:
        reset_all(silent)
    assert_back_to_idle(srv, timeout=20)


@pytest.mark.slow
def test_silent_connections_on_a_tls_port_cost_no_thread(server, tmp_path):
    authority = Authority(tmp_path)
    cert, key = authority.issue("server", "localhost")
    srv = start_measured(server, "--ssl", f"--sslcert={cert}", f"--sslkey={key}", "cat")
    silent = open_silent_connections(srv.port, 500)
    try:
        wait_for(lambda: footprint(srv.proc.pid).fds >= srv.idle.fds + 500,
                 message="the server to accept every silent connection")
        context = ssl.create_default_context(cafile=authority.cert_path)
        began = time.monotonic()
        assert echo_once(srv.url(scheme="wss"), ssl=context) == "still serving"
        assert time.monotonic() - began < 2.0
        assert footprint(srv.proc.pid).threads < 20
    finally:
        reset_all(silent)
    assert_back_to_idle(srv)


# -- the waiting room itself, in this process ----------------------------------------


class Lobby:
    """A WaitingRoom in this process (deadlines 0.3 s after admission), a listening socket,
    what was handed over."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.handed = []
        self.handed_by = []  # the thread that handed each one over
        self.deadlines = []  # the deadline each one was admitted with, and handed over with
        self.arrived = threading.Event()
        self.room = WaitingRoom(self._hand_over)

    def _hand_over(self, sock, address, deadline):
        self.handed.append(sock)
        self.deadlines.append(deadline)
        self.handed_by.append(threading.current_thread())
        self.arrived.set()

    def admitted_client(self, before_admit=None):
        """A client connection and its server side, admitted to the room; `before_admit`
        (sending, closing) is done to the client first, and has reached the server side."""
        client = socket.create_connection(self.listener.getsockname(), timeout=5)
        server_side, address = self.listener.accept()
        if before_admit is not None:
            before_admit(client)
            assert select.select([server_side], [], [], 5)[0]
        deadline = time.monotonic() + 0.3
        self.deadlines.append(deadline)
        self.room.admit(server_side, address, deadline)
        return client, server_side

    def close(self):
        self.room.close()
        self.listener.close()
        for sock in self.handed:
            sock.close()


@pytest.fixture
def lobby():
    lobby = Lobby()
    yield lobby
    lobby.close()


def test_waiting_room_hands_over_a_speaking_connection_with_its_bytes_unread(lobby):
    client, _ = lobby.admitted_client()
    with client:
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert lobby.arrived.wait(5)
        [sock] = lobby.handed
        assert sock.gettimeout() is None  # blocking again, as werkzeug expects
        assert sock.recv(100) == b"GET / HTTP/1.1\r\n"
        admitted, handed = lobby.deadlines
        assert handed == admitted  # the request head's deadline runs on from accept


def test_a_connection_that_has_spoken_already_skips_the_room(lobby):
    client, _ = lobby.admitted_client(before_admit=lambda c: c.sendall(b"GET / HTTP/1.1\r\n"))
    with client:
        assert lobby.handed_by == [threading.current_thread()]  # not the room's thread
        [sock] = lobby.handed
        assert sock.gettimeout() is None
        assert sock.recv(100) == b"GET / HTTP/1.1\r\n"


def test_a_connection_closed_before_it_is_admitted_is_closed_at_once(lobby):
    client, server_side = lobby.admitted_client(before_admit=socket.socket.close)
    assert server_side.fileno() == -1
    assert lobby.handed == []


def test_waiting_room_closes_a_connection_silent_past_the_timeout(lobby):
    client, _ = lobby.admitted_client()
    with client:
        began = time.monotonic()
        assert client.recv(1) == b""  # closed by the room
        assert 0.25 < time.monotonic() - began < 2
    assert lobby.handed == []


def test_waiting_room_closes_a_connection_its_client_gave_up_without_a_thread(lobby):
    client, server_side = lobby.admitted_client()
    client.close()
    wait_for(lambda: server_side.fileno() == -1, timeout=5, message="the room to close it")
    assert lobby.handed == []


def test_waiting_room_close_closes_every_waiting_connection(lobby):
    clients = [lobby.admitted_client()[0] for _ in range(5)]
    lobby.room.close()
    for client in clients:
        assert client.recv(1) == b""
        client.close()
    late, _ = lobby.admitted_client()  # admitted after close: closed at once
    assert late.recv(1) == b""
    late.close()
    assert lobby.handed == []
