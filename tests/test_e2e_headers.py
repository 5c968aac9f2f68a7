"""--header, --header-ws, --header-http (SPEC §5): which response gets which header.

A 101 gets --header and --header-ws; every other response (files, redirects,
errors, refusals, CGI output, the dev console) gets --header and --header-http.
"""

import socket

import pytest
from websockets.sync.client import connect

from helpers import parametrize_fast_first

HEADER_FLAGS = ("--header=X-All: every", "--header-ws=X-Ws: upgrade only",
                "--header-http=X-Http: plain only")
UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def response_head(port, method, path, extra=""):
    """(status, {lower-case name: value}) of one raw request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return parse_head(received)


def parse_head(received):
    lines = received.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def assert_plain_headers(status, headers, expected_status):
    assert status == expected_status
    assert (headers.get("x-all"), headers.get("x-http"), headers.get("x-ws")) == \
        ("every", "plain only", None), (status, headers)


@pytest.fixture
def full_server(server, tmp_path):
    """A command, static files, CGI scripts, an origin rule, one fork slot, and the header flags."""
    site, cgi = tmp_path / "site", tmp_path / "cgi"
    (site / "dir").mkdir(parents=True)
    (site / "index.html").write_text("home")
    cgi.mkdir()
    for name, body in (("ok.sh", r"printf 'Content-Type: text/plain\n\nok'"), ("bad.sh", "exit 1")):
        (cgi / name).write_text(f"#!/bin/sh\n{body}\n")
        (cgi / name).chmod(0o755)
    return server(*HEADER_FLAGS, f"--staticdir={site}", f"--cgidir={cgi}",
                  "--origin=ok.test", "--maxforks=1", "cat")


def test_101_gets_header_and_header_ws_only(full_server):
    with connect(full_server.url(), origin="http://ok.test") as ws:
        headers = ws.response.headers
        assert (headers.get("X-All"), headers.get("X-Ws"), headers.get("X-Http")) == \
            ("every", "upgrade only", None)


@parametrize_fast_first("method, path, extra, status", [
    ("GET", "/index.html", "", 200),
    ("GET", "/dir", "", 301),
    ("GET", "/missing", "", 404),
    ("POST", "/index.html", "Content-Length: 0\r\n", 405),
    ("GET", "/ok.sh", "", 200),
    ("GET", "/bad.sh", "", 500),
    ("POST", "/ok.sh", "Content-Length: 1\r\nContent-Length: 2\r\n", 400),
    ("GET", "/", UPGRADE + "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.test\r\n", 403),
    ("GET", "/", UPGRADE + "Sec-WebSocket-Version: 8\r\nOrigin: http://ok.test\r\n", 400),
], ids=["file", "redirect", "404", "405", "cgi", "cgi-500", "cgi-400", "origin-403",
        "handshake-400"])
def test_every_other_response_gets_header_and_header_http(full_server, method, path, extra,
                                                           status):
    assert_plain_headers(*response_head(full_server.port, method, path, extra), status)


@pytest.mark.slow
def test_429_refusals_get_header_and_header_http(full_server):
    with connect(full_server.url(), origin="http://ok.test") as ws:
        ws.send("holding the only slot")
        assert ws.recv(timeout=10) == "holding the only slot"
        upgrade = UPGRADE + "Sec-WebSocket-Version: 13\r\nOrigin: http://ok.test\r\n"
        assert_plain_headers(*response_head(full_server.port, "GET", "/", upgrade), 429)
        assert_plain_headers(*response_head(full_server.port, "GET", "/ok.sh"), 429)


@pytest.mark.slow
def test_devconsole_page_gets_header_and_header_http(server):
    srv = server(*HEADER_FLAGS, "--devconsole", "cat")
    assert_plain_headers(*response_head(srv.port, "GET", "/any/path"), 200)


@pytest.mark.slow
def test_malformed_request_errors_get_header_and_header_http(server):
    srv = server(*HEADER_FLAGS, "cat")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"NOT A REQUEST LINE AT ALL\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert_plain_headers(*parse_head(received), 400)
