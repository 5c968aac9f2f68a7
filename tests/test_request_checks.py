"""What Go's net/http (so websocketd) refuses with 400 before anything runs, and http.server
lets through: a Host that is not host[:port], two Host headers, Content-Length headers that
disagree or are not a number, a request target that is neither a path nor an absolute URL
or that cannot be split. Raw sockets send what a library would not."""

import pytest

from helpers import children_of, raw_request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\n")


def status_of(port, head):
    return int(raw_request(port, head)[0].split()[1])


@pytest.mark.parametrize("headers", [
    "Host: evil;$(id)`id`:8080\r\n",
    "Host: a b\r\n",
    "Host: h:8a\r\n",
    "Host: [::1\r\n",
    "Host: one\r\nHost: two\r\n",
    "Host: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
    "Host: h\r\nContent-Length: ten\r\n",
], ids=["backticks", "space", "port", "bracket", "two-hosts", "two-lengths", "length-nan"])
@pytest.mark.parametrize("upgrade", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["upgrade", "plain"])
def test_refused_with_400_and_nothing_runs(server, headers, upgrade):
    srv = server("cat")
    head = "GET / HTTP/1.1\r\n" + headers + (UPGRADE if upgrade else "")
    assert status_of(srv.port, head) == 400
    assert children_of(srv.proc.pid) == []
    assert not any("CONNECT" in line for line in srv.lines)


@pytest.mark.slow
@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "[::1]:80", "127.0.0.1",
                                  "h.test  ", "[fe80::1%25eth0]:99"])
def test_hosts_of_the_grammar_are_served(server, host):
    srv = server("cat")
    assert status_of(srv.port, f"GET / HTTP/1.1\r\nHost: {host}\r\n{UPGRADE}") == 101


@pytest.mark.parametrize("target", ["http://[::1/x", "http://[x]/", "../x", "*"],
                         ids=["open-bracket", "not-ipv6", "relative", "asterisk"])
@pytest.mark.parametrize("upgrade", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["upgrade", "plain"])
def test_malformed_targets_get_400_without_a_traceback(server, target, upgrade):
    srv = server("cat")
    head = f"GET {target} HTTP/1.1\r\nHost: h\r\n" + (UPGRADE if upgrade else "")
    assert status_of(srv.port, head) == 400
    srv.wait_log(r"400 Bad Request")
    assert children_of(srv.proc.pid) == []
    assert not any("ERROR" in line or "CONNECT" in line for line in srv.lines)
    srv.stop()
    assert srv.stderr_lines == []
