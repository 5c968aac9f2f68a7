"""--origin and --sameorigin (SPEC §5): the rules one by one, then on a real server.

A refused upgrade must get 403 before anything runs: no process, no CONNECT.
"""

import re

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import children_of
from websocketd_py.handshake import origin_allowed

H = "h.test:8080"  # the Host header where it does not matter


@pytest.mark.parametrize("origin, allowed, expected", [
    # no restriction: anything goes, no Origin and "null" included
    (None, (), True), ("null", (), True), ("http://anything.test", (), True),
    # a restriction: no Origin or "null" is refused
    (None, ("a.test",), False), ("", ("a.test",), False), ("null", ("a.test",), False),
    # no port in the entry: any port
    ("http://a.test", ("a.test",), True), ("http://a.test:8080", ("a.test",), True),
    ("https://a.test:8443", ("a.test",), True),
    # a port in the entry: that port only (the Origin's default port counts)
    ("http://a.test:8080", ("a.test:8080",), True), ("http://a.test:8081", ("a.test:8080",), False),
    ("http://a.test", ("a.test:80",), True), ("https://a.test", ("a.test:443",), True),
    ("https://a.test", ("a.test:80",), False), ("http://a.test", ("a.test:8080",), False),
    # no scheme in the entry: http and https, nothing else
    ("https://a.test", ("a.test",), True), ("ftp://a.test", ("a.test",), False),
    ("file://a.test", ("a.test",), False),
    # a scheme in the entry: that scheme only
    ("http://a.test", ("https://a.test",), False), ("https://a.test", ("https://a.test",), True),
    ("https://a.test:8443", ("https://a.test",), True),
    ("https://a.test:8443", ("https://a.test:8443",), True),
    ("http://a.test:8443", ("https://a.test:8443",), False),
    ("http://a.test", ("HTTP://a.test/",), True),
    # IPv6 hosts, with and without brackets in the entry
    ("http://[::1]:8080", ("[::1]:8080",), True), ("http://[::1]:8080", ("[::1]",), True),
    ("http://[::1]:9999", ("[::1]:8080",), False), ("http://[::1]", ("::1",), True),
    ("http://[::2]", ("[::1]",), False), ("http://[::1]:8080", ("http://[::1]:8080",), True),
    # host names compare case-insensitively, and whole
    ("http://A.Test", ("a.test",), True), ("http://a.test", ("A.TEST",), True),
    ("http://a.test.evil.test", ("a.test",), False), ("http://evila.test", ("a.test",), False),
    ("http://evil.test", ("a.test", "evil.test"), True),
    # an Origin that is not a URL with a host and a valid port
    ("http://a.test:99999", ("a.test",), False), ("a.test", ("a.test",), False),
])
def test_origin_entries(origin, allowed, expected):
    assert origin_allowed(origin, H, False, allowed, False) is expected


@pytest.mark.parametrize("origin, host, https, expected", [
    ("http://h.test:8080", "h.test:8080", False, True),
    ("http://h.test:8081", "h.test:8080", False, False),
    ("http://other.test:8080", "h.test:8080", False, False),
    ("http://h.test", "h.test", False, True), ("http://h.test", "h.test:80", False, True),
    ("http://h.test:80", "h.test", False, True),
    ("https://h.test", "h.test", True, True), ("https://h.test", "h.test:443", True, True),
    ("http://h.test", "h.test", True, False),
    ("http://H.TEST:8080", "h.test:8080", False, True),
    ("http://h.test:8080", "H.Test:8080", False, True),
    ("http://[::1]:8080", "[::1]:8080", False, True),
    ("http://[::1]:8080", "[::1]:8081", False, False),
    (None, "h.test:8080", False, False), ("null", "h.test:8080", False, False),
    ("http://:8080", "", False, False),
])
def test_sameorigin(origin, host, https, expected):
    assert origin_allowed(origin, host, https, (), True) is expected


def test_sameorigin_and_origin_list_must_both_agree():
    assert origin_allowed("http://h.test:8080", H, False, ("h.test",), True)
    assert not origin_allowed("http://h.test:8080", H, False, ("other.test",), True)


def count(srv, pattern):
    return sum(1 for line in list(srv.lines) if re.search(pattern, line))


def assert_refused_without_a_process(srv, origin):
    connects, refusals = count(srv, r"\| CONNECT$"), count(srv, r"ERROR .*origin not allowed")
    with pytest.raises(InvalidStatus) as refused:
        connect(srv.url(), origin=origin, open_timeout=10)
    assert refused.value.response.status_code == 403
    srv.wait_log(r"ERROR .*origin not allowed", count=refusals + 1)
    assert children_of(srv.proc.pid) == []
    assert count(srv, r"\| CONNECT$") == connects


def echo_works(srv, origin=None):
    with connect(srv.url(), origin=origin, open_timeout=10) as ws:
        ws.send("hi")
        return ws.recv(timeout=10) == "hi"


def test_origin_list_on_a_real_server(server):
    srv = server("--origin=good.test:8080,https://secure.test", "cat")
    assert echo_works(srv, "http://good.test:8080")
    assert echo_works(srv, "https://secure.test")
    for origin in ("http://evil.test:8080", "http://good.test:8081", "http://secure.test", None):
        assert_refused_without_a_process(srv, origin)


@pytest.mark.slow
def test_sameorigin_on_a_real_server(server):
    srv = server("--sameorigin", "cat")
    assert echo_works(srv, f"http://127.0.0.1:{srv.port}")
    for origin in (f"http://127.0.0.1:{srv.port + 1}", f"http://localhost:{srv.port}", "null"):
        assert_refused_without_a_process(srv, origin)


@pytest.mark.slow
def test_no_restriction_accepts_any_or_no_origin(server):
    srv = server("cat")
    assert echo_works(srv)
    assert echo_works(srv, "null")
    assert echo_works(srv, "http://anywhere.test")


@pytest.mark.parametrize("flag", ["--origin=h.test", "--sameorigin"])
@pytest.mark.parametrize("origin", ["http://[x", "http://[::1"])
def test_an_origin_that_cannot_be_parsed_gets_403_and_one_log_line(server, flag, origin):
    import socket
    srv = server(flag, "cat")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: h.test\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n"
                     f"\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 403")
    srv.wait_log(r"ERROR .*origin not allowed")
    assert children_of(srv.proc.pid) == []
    assert not any("Traceback" in line or "500" in line for line in srv.lines)
