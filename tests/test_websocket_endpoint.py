"""websocket.WebSocketEndpoint on a socket pair: sends that must never block the caller."""

import socket
import threading

from websocketd_py.protocol import Connection
from websocketd_py.websocket import WebSocketEndpoint


def endpoint_with_a_full_send_buffer():
    """An endpoint whose peer reads nothing, after its send buffer has filled up."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        while True:
            ours.send(b"x" * 65536)
    except BlockingIOError:
        pass
    ours.setblocking(True)
    return WebSocketEndpoint(ours, Connection()), theirs


def returns_within(call, seconds=5.0):
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_ping_to_a_client_that_does_not_read_returns_at_once():
    endpoint, peer = endpoint_with_a_full_send_buffer()
    try:
        assert returns_within(endpoint.ping)
    finally:
        endpoint.abort()
        peer.close()
        endpoint.sock.close()


def test_close_or_abort_cuts_a_client_that_does_not_read():
    endpoint, peer = endpoint_with_a_full_send_buffer()
    results = []
    try:
        assert returns_within(lambda: results.append(
            endpoint.close_or_abort(1008, "ping timeout", timeout=0.1)))
        assert results == [False]
        peer.setblocking(False)
        drained = b""
        try:
            while True:
                chunk = peer.recv(1 << 20)
                if not chunk:
                    break
                drained += chunk
        except BlockingIOError:
            raise AssertionError("the connection was not shut down") from None
        assert b"\x88" not in drained[-200:]  # no close frame: it could not go out
    finally:
        peer.close()
        endpoint.sock.close()


def test_close_or_abort_sends_the_close_frame_when_it_can():
    ours, theirs = socket.socketpair()
    endpoint = WebSocketEndpoint(ours, Connection())
    try:
        assert endpoint.close_or_abort(1001, "bye", timeout=0.1)
        assert theirs.recv(100) == b"\x88\x05\x03\xe9bye"
        assert endpoint.close_code == 1001
    finally:
        theirs.close()
        ours.close()
