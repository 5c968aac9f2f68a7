"""--trusted-proxy: X-Forwarded-* headers count only when the peer is a listed proxy.

The end-to-end tests connect from two loopback addresses: 127.0.0.2 plays
the trusted proxy, 127.0.0.1 a client that connects directly and tries to
choose its own REMOTE_ADDR. (tests/test_nginx.py does the same behind nginx.)
"""

import io
import json

import pytest
from websockets.sync.client import connect

from websocketd_py import cli, proxy
from websocketd_py.config import UsageError
from websocketd_py.log import Log

from helpers import PROGRAM, PROXY_ADDRESS, needs_proxy_address

FORWARDED = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "example.org:8443"}


# -- the flag --------------------------------------------------------------------------


def test_the_flag_takes_addresses_and_networks():
    config = cli.parse_args(["--trusted-proxy=127.0.0.1, 10.0.0.0/8,[::1],fd00::/8", "cat"])
    assert config.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "[::1]", "fd00::/8")


@pytest.mark.parametrize("value, problem", [
    ("proxy.example.com", "'proxy.example.com' does not appear to be an IPv4 or IPv6 network"),
    ("10.0.0.1/8", "10.0.0.1/8 has host bits set"),
    ("127.0.0.1,300.1.1.1", "'300.1.1.1'"),
])
def test_a_bad_entry_is_a_usage_error_naming_it(value, problem):
    with pytest.raises(UsageError, match="invalid --trusted-proxy entry") as error:
        cli.parse_args([f"--trusted-proxy={value}", "cat"])
    assert problem in str(error.value)


# -- which peers are trusted -----------------------------------------------------------

NETWORKS = proxy.parse_networks(["127.0.0.2", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize("address, trusted", [
    ("127.0.0.2", True), ("10.200.3.4", True), ("::1", True),
    ("::ffff:127.0.0.2", True),  # an IPv4 proxy seen by a dual-stack listener
    ("127.0.0.1", False), ("11.0.0.1", False), ("::2", False), ("::ffff:127.0.0.1", False),
    ("unix:", False), ("", False),
])
def test_is_trusted(address, trusted):
    assert proxy.is_trusted(address, NETWORKS) is trusted


# -- the middleware ----------------------------------------------------------------------


def seen_by_the_app(remote_addr, headers):
    """The environ the wrapped app gets for a request from `remote_addr` with `headers`."""
    environ = {"REMOTE_ADDR": remote_addr, "REMOTE_PORT": 40000, "wsgi.url_scheme": "http",
               "HTTP_HOST": "10.9.9.9:8081", "SERVER_NAME": "10.9.9.9", "SERVER_PORT": "8081"}
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value
                    for name, value in headers.items()})
    seen = {}
    app = proxy.TrustedProxies(lambda env, start_response: seen.update(env) or [],
                               ["127.0.0.2"], Log("debug", io.StringIO()))
    app(environ, None)
    return seen


def test_a_trusted_proxy_gives_the_client_address_scheme_and_host():
    seen = seen_by_the_app("127.0.0.2", FORWARDED)
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("198.51.100.7", "")
    assert seen["wsgi.url_scheme"] == "https"
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == (
        "example.org:8443", "example.org", "8443")


def test_a_trusted_proxy_that_forwards_nothing_changes_nothing():
    seen = seen_by_the_app("127.0.0.2", {})
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"], seen["HTTP_HOST"]) == (
        "127.0.0.2", 40000, "10.9.9.9:8081")


@pytest.mark.parametrize("forwarded", ["evil' remote:'10.9.8.7", "unix:", "a.b.c.d", "::1x"])
def test_a_forwarded_address_that_is_no_address_is_ignored_and_logged(forwarded):
    stream = io.StringIO()
    seen = {}
    app = proxy.TrustedProxies(lambda env, start_response: seen.update(env) or [],
                               ["127.0.0.2"], Log("debug", stream))
    app({"REMOTE_ADDR": "127.0.0.2", "REMOTE_PORT": 40000, "wsgi.url_scheme": "http",
         "HTTP_HOST": "h", "SERVER_NAME": "h", "SERVER_PORT": "80",
         "HTTP_X_FORWARDED_FOR": forwarded}, None)
    assert seen["REMOTE_ADDR"] == "127.0.0.2"
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "X-Forwarded-For is not an IP address" in lines[0]
    assert "remote:'127.0.0.2'" in lines[0] and "remote:'10.9.8.7'" not in lines[0]


def test_any_other_peer_cannot_choose_what_the_app_sees():
    seen = seen_by_the_app("127.0.0.1", FORWARDED)
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.1", 40000)
    assert (seen["wsgi.url_scheme"], seen["HTTP_HOST"]) == ("http", "10.9.9.9:8081")


# -- end to end ------------------------------------------------------------------------


def program_environment(srv, source, headers):
    """The environment the program gets for a connection from address `source`."""
    with connect(srv.url(), additional_headers=headers, source_address=(source, 0),
                 open_timeout=10) as ws:
        return json.loads(ws.recv(timeout=10))


@needs_proxy_address
def test_the_program_sees_the_client_a_trusted_proxy_names(server):
    srv = server(f"--trusted-proxy={PROXY_ADDRESS}", *PROGRAM)
    env = program_environment(srv, PROXY_ADDRESS, FORWARDED)
    assert (env["REMOTE_ADDR"], env["REMOTE_HOST"], env["REMOTE_PORT"]) == (
        "198.51.100.7", "198.51.100.7", "")
    assert (env["HTTPS"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("on", "example.org", "8443")
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 198.51.100.7"
    srv.wait_log(r"remote:'198\.51\.100\.7'.*\| CONNECT")


def test_a_direct_client_cannot_spoof_its_address(server):
    srv = server(f"--trusted-proxy={PROXY_ADDRESS}", *PROGRAM)
    env = program_environment(srv, "127.0.0.1", FORWARDED)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert "HTTPS" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.port))


@needs_proxy_address
@pytest.mark.slow
def test_without_the_flag_nobody_is_trusted(server):
    srv = server(*PROGRAM)
    assert program_environment(srv, PROXY_ADDRESS, FORWARDED)["REMOTE_ADDR"] == PROXY_ADDRESS
