"""--redirport: every plain HTTP request there gets a 301 to the main port, path and query kept."""

import ssl

import pytest
from websockets.sync.client import connect

from certificates import Authority
from helpers import children_of, free_port, parametrize_fast_first, raw_request
from websocketd_py.redirect import location


@pytest.fixture
def redirecting(server):
    """A server without --ssl redirecting from a free port: (server, redirect port)."""
    port = free_port()
    srv = server(f"--redirport={port}", "cat")
    srv.wait_log(rf"Starting redirect server   : http://127\.0\.0\.1:{port}/$")
    return srv, port


@parametrize_fast_first("host_line, expected_host", [
    ("Host: example.com:8080\r\n", "example.com"),
    ("Host: example.com\r\n", "example.com"),
    ("Host: [::1]:8080\r\n", "[::1]"),
    ("Host: [::1]\r\n", "[::1]"),
    ("", "127.0.0.1"),                       # no Host: the address the client connected to
    ("Host: a!b\r\n", "127.0.0.1"),          # a valid name no redirect can use: the same
    ("Host: \r\n", "127.0.0.1"),
])
def test_redirect_target_keeps_path_and_query(redirecting, host_line, expected_host):
    srv, port = redirecting
    status, headers = raw_request(port, f"GET /a/b%20c?x=1&y=%2F HTTP/1.1\r\n{host_line}")
    assert status == "HTTP/1.1 301 Moved Permanently"
    assert headers["Location"] == f"http://{expected_host}:{srv.port}/a/b%20c?x=1&y=%2F"


@pytest.mark.parametrize("host_line", ["Host: evil.com/x@y\r\n", "Host: a:b:c\r\n"])
def test_a_host_that_is_not_host_and_port_gets_400_as_everywhere(redirecting, host_line):
    status, _ = raw_request(redirecting[1], f"GET / HTTP/1.1\r\n{host_line}")
    assert status.split()[1] == "400"


@pytest.mark.slow
def test_http_10_request_without_host_and_upgrades_are_redirected_too(redirecting):
    srv, port = redirecting
    status, headers = raw_request(port, "GET / HTTP/1.0\r\n")
    assert status.split()[1] == "301"
    assert headers["Location"] == f"http://127.0.0.1:{srv.port}/"
    status, headers = raw_request(port, (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"))
    assert status.split()[1] == "301"
    assert children_of(srv.proc.pid) == []
    srv.wait_log(r"ACCESS \| http .* url:'http://127\.0\.0\.1/ws' .*\| 301 Moved Permanently")


@pytest.mark.slow
def test_with_ssl_the_redirect_leads_to_the_wss_endpoint(server, tmp_path):
    ca = Authority(tmp_path)
    cert, key = ca.issue("server", "localhost")
    port = free_port()
    srv = server("--ssl", f"--sslcert={cert}", f"--sslkey={key}", f"--redirport={port}", "cat")
    status, headers = raw_request(port, f"GET /chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n")
    assert status.split()[1] == "301"
    target = headers["Location"]
    assert target == f"https://127.0.0.1:{srv.port}/chat?room=1"
    context = ssl.create_default_context(cafile=ca.cert_path)
    with connect("wss" + target[len("https"):], ssl=context, open_timeout=10) as ws:
        ws.send("arrived")
        assert ws.recv(timeout=10) == "arrived"


@pytest.mark.parametrize("scheme, port, host, local, target, expected", [
    ("https", 443, "example.com", "10.0.0.1", "/p?q", "https://example.com/p?q"),
    ("https", 8443, "example.com:80", "10.0.0.1", "/", "https://example.com:8443/"),
    ("http", 80, None, "::1", "/x", "http://[::1]/x"),
    ("http", 8080, None, "::ffff:192.0.2.7", "/", "http://192.0.2.7:8080/"),
    ("https", 443, "h", "10.0.0.1", "/caf\xe9", "https://h/caf%C3%A9"),
    ("https", 443, "h", "10.0.0.1", "/a\udcff", "https://h/a%FF"),
])
def test_location(scheme, port, host, local, target, expected):
    assert location(scheme, port, host, local, target) == expected
