"""--subprotocol: negotiated in the handshake (RFC 6455 §4.2.2), passed as WEBSOCKET_PROTOCOL.

Each test runs a real server whose program prints WEBSOCKET_PROTOCOL, or
`unset` when the variable is absent, and connects a real client asking for
subprotocols.
"""

import subprocess
import sys

import pytest
from websockets.sync.client import connect

from helpers import raw_upgrade, receive_all

PRINT_PROTOCOL = ("sh", "-c", 'echo "${WEBSOCKET_PROTOCOL-unset}"')


def negotiate(srv, asked):
    """(the subprotocol the client got, what the program saw) for one connection."""
    with connect(srv.url(), subprotocols=asked, open_timeout=10) as ws:
        messages, code, _ = receive_all(ws)
        assert code == 1000
        return ws.subprotocol, messages[0]


def test_the_first_protocol_the_client_asks_for_that_the_server_lists_is_chosen(server):
    srv = server("--subprotocol=chat", "--subprotocol=json", *PRINT_PROTOCOL)
    assert negotiate(srv, ["json", "chat"]) == ("json", "json")
    assert negotiate(srv, ["mqtt", "chat"]) == ("chat", "chat")


@pytest.mark.slow
def test_the_101_names_the_chosen_protocol(server):
    srv = server("--subprotocol=chat", *PRINT_PROTOCOL)
    with connect(srv.url(), subprotocols=["chat"], open_timeout=10) as ws:
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat"
        receive_all(ws)


@pytest.mark.slow
def test_a_client_asking_only_for_unknown_protocols_connects_without_one(server):
    srv = server("--subprotocol=chat", *PRINT_PROTOCOL)
    with connect(srv.url(), subprotocols=["mqtt", "soap"], open_timeout=10) as ws:
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        assert ws.subprotocol is None
        assert receive_all(ws)[0] == ["unset"]


@pytest.mark.slow
def test_a_client_asking_for_none_gets_none(server):
    srv = server("--subprotocol=chat", *PRINT_PROTOCOL)
    assert negotiate(srv, None) == (None, "unset")


def test_off_by_default_a_requested_protocol_is_not_chosen(server):
    srv = server(*PRINT_PROTOCOL)
    assert negotiate(srv, ["chat"]) == (None, "unset")


@pytest.mark.slow
def test_protocols_in_repeated_headers_count_in_the_order_sent(server):
    srv = server("--subprotocol=chat", "--subprotocol=json", *PRINT_PROTOCOL)
    reply = raw_upgrade(srv.port, headers=b"Sec-WebSocket-Protocol: mqtt, json\r\n"
                                          b"Sec-WebSocket-Protocol: chat\r\n")
    assert reply.status == 101
    assert "\r\nSec-WebSocket-Protocol: json" in reply.head
    assert reply.messages == ["json"]


@pytest.mark.slow
def test_a_name_that_is_not_a_token_is_a_usage_error():
    for bad in ("two words", "a,b", ""):
        result = subprocess.run(
            [sys.executable, "-m", "websocketd_py", "--port=0", f"--subprotocol={bad}", "cat"],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 1, bad
        assert result.stdout == ""
        assert "--subprotocol" in result.stderr and result.stderr.count("\n") == 1
