"""handshake.accept: the upgrade decided from the request and the settings alone (no socket)."""

import pytest

from websocketd_py.config import Config
from websocketd_py.handshake import accept, accept_token, is_upgrade
from websocketd_py.refused import Refused

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def request(**headers):
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "HTTP_HOST": "h.test:8080",
               "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "keep-alive, Upgrade",
               "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": KEY}
    for name, value in headers.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


def response_lines(accepted):
    head = accepted.response.decode("latin-1")
    assert head.endswith("\r\n\r\n")
    return head[:-4].split("\r\n")


def test_the_accept_token_is_rfc_6455s():
    assert accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_an_upgrade_gets_the_101_with_websocketd_pys_headers_in_order():
    config = Config(headers=(("X-All", "1"),), headers_ws=(("X-Ws", "2"),),
                    headers_http=(("X-Http", "3"),))
    accepted = accept(request(), config)
    assert (accepted.subprotocol, accepted.compression) == (None, None)
    assert response_lines(accepted) == [
        "HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "X-All: 1", "X-Ws: 2"]


def test_the_first_offered_subprotocol_the_server_speaks_is_chosen():
    config = Config(subprotocols=("b", "a"))
    accepted = accept(request(HTTP_SEC_WEBSOCKET_PROTOCOL="x, a, b"), config)
    assert accepted.subprotocol == "a"
    assert "Sec-WebSocket-Protocol: a" in response_lines(accepted)
    assert accept(request(HTTP_SEC_WEBSOCKET_PROTOCOL="x"), config).subprotocol is None


@pytest.mark.parametrize("compress", [False, True])
def test_compression_only_with_compress(compress):
    offer = "permessage-deflate; client_max_window_bits"
    accepted = accept(request(HTTP_SEC_WEBSOCKET_EXTENSIONS=offer), Config(compress=compress))
    extensions = [line for line in response_lines(accepted)
                  if line.startswith("Sec-WebSocket-Extensions")]
    if compress:
        assert accepted.compression is not None
        assert extensions == [f"Sec-WebSocket-Extensions: {accepted.compression.response}"]
    else:
        assert (accepted.compression, extensions) == (None, [])


@pytest.mark.parametrize("headers, status, words", [
    ({"REQUEST_METHOD": "POST"}, 400, "must be a GET"),
    ({"SERVER_PROTOCOL": "HTTP/1.0"}, 400, "needs HTTP/1.1"),
    ({"HTTP_HOST": None}, 400, "missing Host"),
    ({"HTTP_HOST": "a b"}, 400, "malformed Host"),
    ({"HTTP_X_NUL": "a\0b"}, 400, "NUL"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 400, "Sec-WebSocket-Version"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "short"}, 400, "Sec-WebSocket-Key"),
    ({"HTTP_SEC_WEBSOCKET_KEY": None}, 400, "Sec-WebSocket-Key"),
])
def test_what_rfc_6455_forbids_is_refused_with_400(headers, status, words):
    with pytest.raises(Refused) as refusal:
        accept(request(**headers), Config())
    assert refusal.value.status == status and words in refusal.value.text


def test_a_wrong_version_is_told_the_version_spoken():
    with pytest.raises(Refused) as refusal:
        accept(request(HTTP_SEC_WEBSOCKET_VERSION="8"), Config())
    assert refusal.value.headers == (("Sec-WebSocket-Version", "13"),)


def test_the_origin_is_checked_before_the_form():
    config = Config(origins=("good.test",))
    with pytest.raises(Refused) as refusal:
        accept(request(REQUEST_METHOD="POST", HTTP_ORIGIN="http://evil.test"), config)
    assert refusal.value.status == 403
    assert accept(request(HTTP_ORIGIN="http://good.test"), config).response


@pytest.mark.parametrize("upgrade, connection, expected", [
    ("websocket", "Upgrade", True), ("WebSocket", "keep-alive, upgrade", True),
    ("websocket", "keep-alive", False), ("h2c", "Upgrade", False), ("", "", False)])
def test_is_upgrade(upgrade, connection, expected):
    assert is_upgrade({"HTTP_UPGRADE": upgrade, "HTTP_CONNECTION": connection}) is expected


@pytest.mark.parametrize("origin", ["http://[x", "http://[::1", "http://h.test:99999"])
def test_an_origin_that_cannot_be_parsed_is_refused_with_403(origin):
    for config in (Config(origins=("h.test",)), Config(sameorigin=True)):
        with pytest.raises(Refused) as refusal:
            accept(request(HTTP_ORIGIN=origin), config)
        assert refusal.value.status == 403


def test_the_devconsole_subprotocol_is_chosen_only_with_devconsole():
    offer = request(HTTP_SEC_WEBSOCKET_PROTOCOL="websocketd-py.devconsole")
    assert accept(offer, Config()).subprotocol is None
    accepted = accept(offer, Config(devconsole=True, subprotocols=("chat",)))
    assert (accepted.subprotocol, accepted.devconsole) == ("websocketd-py.devconsole", True)
    plain = accept(request(HTTP_SEC_WEBSOCKET_PROTOCOL="chat"),
                             Config(devconsole=True, subprotocols=("chat",)))
    assert (plain.subprotocol, plain.devconsole) == ("chat", False)
