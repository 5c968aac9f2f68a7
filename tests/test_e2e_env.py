"""The environment a real process gets through a real server (SPEC §4, command mode).

COMMAND is `helpers.PROGRAM`, a Python one-liner that sends its whole initial
environment as one JSON line, exactly the bytes the process got.
"""

import json
import os

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from websocketd_py import __version__, environment

from helpers import PROGRAM, STANDARD, parametrize_fast_first, raw_upgrade

#: Set for every process unless --passenv passes the server's own (see test_buffering).
DEFAULTS = {"PYTHONUNBUFFERED"}
#: What the default --passenv takes from the server's environment besides PATH and its kind.
LOCALE = {"LANG", "LC_ALL", "LC_CTYPE"}


def defaults(passed):
    """The variables set for every process unless passed: DEFAULTS, and LC_CTYPE where no
    locale variable is passed and C.UTF-8 is installed (see test_locale)."""
    return DEFAULTS | (set() if LOCALE & passed else set(environment.utf8_locale()))


def env_over_websockets(srv, path="/"):
    """(environment, client port, the handshake request) for one websockets connection."""
    with connect(srv.url(path), open_timeout=10) as ws:
        client_port = ws.socket.getsockname()[1]
        messages = []
        try:
            while True:
                messages.append(ws.recv(timeout=10))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1000, closed
        assert len(messages) == 1, messages
        return json.loads(messages[0]), client_port, ws.request


def sent_bytes(value):
    """A JSON-carried environment value back to the bytes the process got."""
    return value.encode("latin-1")


# -- the standard variables ----------------------------------------------------------


def test_every_variable_for_one_connection(server):
    srv = server(*PROGRAM)
    env, client_port, request = env_over_websockets(srv, "/some/path%20x?a=1&b=%20c")
    header_names = {"HTTP_" + name.upper().replace("-", "_") for name in request.headers}
    passed = {name for name in {"PATH", "LD_LIBRARY_PATH"} | LOCALE if os.environ.get(name)}
    assert set(env) == STANDARD | header_names | passed | defaults(passed)

    assert env["SERVER_SOFTWARE"].startswith("websocketd/")
    assert "websocketd-py" in env["SERVER_SOFTWARE"]
    assert __version__ in env["SERVER_SOFTWARE"].split("websocketd-py", 1)[1]
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.port))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["REMOTE_HOST"] == "127.0.0.1"
    assert env["SCRIPT_NAME"] == "/"
    assert env["PATH_INFO"] == "/some/path x"
    assert env["PATH_TRANSLATED"] == "/some/path x"
    assert env["QUERY_STRING"] == "a=1&b=%20c"
    assert env["REQUEST_URI"] == "/some/path%20x?a=1&b=%20c"
    assert env["UNIQUE_ID"].isdigit()
    assert "HTTPS" not in env
    for name in ("AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_IDENT", "REMOTE_USER"):
        assert env[name] == "", name
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert env["HTTP_UPGRADE"] == "websocket"
    assert env["HTTP_SEC_WEBSOCKET_KEY"] == request.headers["Sec-WebSocket-Key"]
    assert env["HTTP_USER_AGENT"] == request.headers["User-Agent"]
    for name in passed:
        assert env[name] == os.environ[name]


@pytest.mark.slow
def test_unique_id_differs_between_connections_and_matches_the_log(server):
    srv = server(*PROGRAM)
    first, _, _ = env_over_websockets(srv)
    second, _, _ = env_over_websockets(srv)
    assert first["UNIQUE_ID"] != second["UNIQUE_ID"]
    counters = [int(env["UNIQUE_ID"][-4:]) for env in (first, second)]
    assert counters[1] == (counters[0] + 1) % 10000  # one id per connection, none wasted
    for env in (first, second):
        srv.wait_log(rf"id:'{env['UNIQUE_ID']}'.*\| CONNECT$")


def test_path_info_is_decoded_request_uri_and_query_stay_raw(server):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, "/caf%C3%A9/a%2Fb/%3F%25?q=%C3%A9&x=%2F").env()
    assert sent_bytes(env["PATH_INFO"]) == "/café/a/b/?%".encode("utf-8")
    assert sent_bytes(env["PATH_TRANSLATED"]) == "/café/a/b/?%".encode("utf-8")
    assert env["QUERY_STRING"] == "q=%C3%A9&x=%2F"
    assert env["REQUEST_URI"] == "/caf%C3%A9/a%2Fb/%3F%25?q=%C3%A9&x=%2F"
    assert env["SCRIPT_NAME"] == "/"

    env = raw_upgrade(srv.port, "/").env()
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["REQUEST_URI"]) == ("/", "", "/")


@pytest.mark.slow
def test_path_info_keeps_bytes_that_are_not_utf8(server):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, "/caf%E9").env()
    assert env["REQUEST_URI"] == "/caf%E9"
    assert sent_bytes(env["PATH_INFO"]) == b"/caf\xe9"


@parametrize_fast_first("host, name, port", [
    ("example.com", "example.com", "80"),
    ("example.com:8080", "example.com", "8080"),
    ("[::1]:1234", "::1", "1234"),
    ("[::1]", "::1", "80"),
])
def test_server_name_and_port_come_from_the_host_header(server, host, name, port):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, "/", host=host).env()
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port)
    assert env["HTTP_HOST"] == host


@pytest.mark.slow
def test_host_with_trailing_blanks_is_accepted_as_websocketd_does(server):
    srv = server(*PROGRAM)
    reply = raw_upgrade(srv.port, host="example.com \t")
    assert reply.status == 101, (reply.head, reply.body)


@pytest.mark.slow
def test_host_with_a_non_ascii_digit_port_is_refused_not_a_500(server):
    srv = server("--sameorigin", *PROGRAM)
    reply = raw_upgrade(srv.port, host="example.com:\xb2",
                        headers=b"Origin: http://example.com\r\n")
    assert 400 <= reply.status < 500, (reply.head, reply.body)
    assert srv.session_pids() == []


@pytest.mark.slow
def test_remote_port_is_the_clients_port_for_a_raw_client_too(server):
    srv = server(*PROGRAM)
    reply = raw_upgrade(srv.port)
    assert reply.env()["REMOTE_PORT"] == str(reply.client_port)


# -- headers -------------------------------------------------------------------------


def test_headers_become_http_variables_repeats_joined(server):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, headers=(
        b"X-Custom: one\r\n"
        b"X-Repeat: 1\r\n"
        b"X-Other: o\r\n"
        b"x-repeat: 2\r\n"
        b"X-REPEAT: 3\r\n"
        b"X-Empty:\r\n"
        b"Content-Type: text/plain\r\n")).env()
    assert env["HTTP_X_CUSTOM"] == "one"
    assert env["HTTP_X_REPEAT"] == "1, 2, 3"
    assert env["HTTP_X_OTHER"] == "o"
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_TYPE"] == ""
    assert env["HTTP_CONNECTION"] == "Upgrade"
    assert env["HTTP_SEC_WEBSOCKET_VERSION"] == "13"


def test_underscore_headers_and_proxy_are_dropped(server):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, headers=b"X_Und: 1\r\nProxy: evil\r\nX-Keep: kept\r\n").env()
    assert "HTTP_X_UND" not in env
    assert "HTTP_PROXY" not in env and "http_proxy" not in env
    assert env["HTTP_X_KEEP"] == "kept"

    # the `_` form cannot add to (or replace) the value of the `-` form either
    env = raw_upgrade(srv.port, headers=b"X_Und: evil\r\nX-Und: good\r\nx_und: evil\r\n"
                                        b"proxy: evil\r\nPROXY: evil\r\n").env()
    assert env["HTTP_X_UND"] == "good"
    assert "HTTP_PROXY" not in env


def test_a_path_header_cannot_change_path(server):
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, headers=b"Path: /evil\r\nLd-Preload: /evil.so\r\n").env()
    assert env["HTTP_PATH"] == "/evil"
    assert env["PATH"] == os.environ["PATH"]
    assert env["HTTP_LD_PRELOAD"] == "/evil.so"
    assert "LD_PRELOAD" not in env


@pytest.mark.slow
def test_folded_header_value_arrives_without_cr_or_lf(server):
    srv = server(*PROGRAM)
    reply = raw_upgrade(srv.port, headers=b"X-Fold: first\r\n  second\r\n\tthird\r\n")
    value = reply.env()["HTTP_X_FOLD"]
    assert "\r" not in value and "\n" not in value
    assert value.split() == ["first", "second", "third"]


@pytest.mark.slow
def test_control_characters_in_header_values(server):
    """Tab stays (a field value may hold it); other controls the server lets in become spaces."""
    srv = server(*PROGRAM)
    env = raw_upgrade(srv.port, headers=b"X-Tab: a\tb\r\nX-Ctl: a\x01b\x1fc\x7fd\r\n").env()
    assert env["HTTP_X_TAB"] == "a\tb"
    assert env["HTTP_X_CTL"] == "a b c d"


def test_nul_in_a_header_value_is_refused_and_starts_nothing(server):
    srv = server(*PROGRAM)
    reply = raw_upgrade(srv.port, headers=b"X-Nul: a\x00b\r\n")
    assert reply.status == 400
    assert srv.session_pids() == []
    assert not any(line.endswith("| CONNECT") for line in srv.lines)


@pytest.mark.slow
def test_non_ascii_header_values_reach_the_program_as_sent(server):
    srv = server(*PROGRAM)
    utf8 = "é€😀 ünï".encode("utf-8")
    env = raw_upgrade(srv.port, headers=b"X-Utf: " + utf8 + b"\r\nX-Latin: caf\xe9\r\n").env()
    assert sent_bytes(env["HTTP_X_UTF"]) == utf8
    assert sent_bytes(env["HTTP_X_LATIN"]) == b"caf\xe9"


# -- --passenv -----------------------------------------------------------------------


def server_environment(**changes):
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def test_default_passenv_is_path_ld_library_path_and_the_locale(server, tmp_path):
    library_path = os.pathsep.join(
        filter(None, [os.environ.get("LD_LIBRARY_PATH"), str(tmp_path)]))
    srv = server(*PROGRAM, env=server_environment(
        HOME=str(tmp_path), FOO="foo-value", LD_LIBRARY_PATH=library_path,
        SERVER_NAME="evil", HTTP_X_FROM_SERVER="evil"))
    env, _, request = env_over_websockets(srv)
    header_names = {"HTTP_" + name.upper().replace("-", "_") for name in request.headers}
    passed = {"PATH", "LD_LIBRARY_PATH"} | {name for name in LOCALE if os.environ.get(name)}
    assert set(env) == STANDARD | header_names | passed | defaults(passed)
    assert env["PATH"] == os.environ["PATH"]
    assert env["LD_LIBRARY_PATH"] == library_path
    assert env["SERVER_NAME"] == "127.0.0.1"


@pytest.mark.slow
def test_passenv_passes_exactly_the_listed_non_empty_variables(server, tmp_path):
    srv = server("--passenv=PATH,FOO,EMPTY,MISSING,LD_LIBRARY_PATH,REMOTE_ADDR", *PROGRAM,
                 env=server_environment(FOO="foo value=1", EMPTY="", MISSING=None,
                                        LD_LIBRARY_PATH="", HOME=str(tmp_path), BAR="bar",
                                        REMOTE_ADDR="6.6.6.6"))
    env, _, request = env_over_websockets(srv)
    header_names = {"HTTP_" + name.upper().replace("-", "_") for name in request.headers}
    assert set(env) == STANDARD | header_names | {"PATH", "FOO"} | defaults({"PATH", "FOO"})
    assert env["FOO"] == "foo value=1"
    assert env["PATH"] == os.environ["PATH"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"  # the request's, not the server's


@pytest.mark.slow
def test_passenv_without_path_leaves_path_out(server):
    srv = server("--passenv=FOO", *PROGRAM, env=server_environment(FOO="only"))
    env, _, _ = env_over_websockets(srv)
    assert "PATH" not in env
    assert env["FOO"] == "only"
