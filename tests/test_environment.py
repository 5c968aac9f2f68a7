"""Unit tests of `environment`: the CGI-style variables a process gets (SPEC §4)."""

import os
import re
import sys
import threading

import pytest

from websocketd_py import __version__, environment, launching

from helpers import STANDARD, make_request


def as_received(text):
    """A header value as http.server hands it over: the sent bytes decoded as latin-1."""
    return text.encode("utf-8").decode("latin-1")


# -- split_host ----------------------------------------------------------------------


@pytest.mark.parametrize("host, https, expected", [
    ("example.com", False, ("example.com", "80")),
    ("example.com", True, ("example.com", "443")),
    ("example.com:8080", False, ("example.com", "8080")),
    ("example.com:8443", True, ("example.com", "8443")),
    ("127.0.0.1:1", False, ("127.0.0.1", "1")),
    ("[::1]:1234", False, ("::1", "1234")),
    ("[::1]", False, ("::1", "80")),
    ("[::1]", True, ("::1", "443")),
    ("[fe80::1%25eth0]:99", False, ("fe80::1%25eth0", "99")),
    ("example.com:", False, ("example.com", "80")),
    ("example.com:http", False, ("example.com", "80")),
    ("  example.com:81  ", False, ("example.com", "81")),
    ("", False, ("", "80")),
    (None, True, ("", "443")),
    ("user:pw@example.com", False, ("example.com", "80")),   # absolute-form target's netloc
    ("u@p@[::1]:81", False, ("::1", "81")),
])
def test_split_host(host, https, expected):
    assert environment.split_host(host, https) == expected


@pytest.mark.parametrize("port", ["\xb2", "\xb3", "\xb9"])
def test_split_host_takes_only_ascii_digits_as_a_port(port):
    assert environment.split_host("example.com:" + port, False) == ("example.com", "80")


# -- header_variables ----------------------------------------------------------------


def test_header_names_become_http_variables():
    variables = environment.header_variables([
        ("Host", "example.com:8080"), ("x-custom", "one"), ("Sec-WebSocket-Key", "k"),
        ("X-Empty", ""), ("X-9", "nine")])
    assert variables == {"HTTP_HOST": "example.com:8080", "HTTP_X_CUSTOM": "one",
                         "HTTP_SEC_WEBSOCKET_KEY": "k", "HTTP_X_EMPTY": "", "HTTP_X_9": "nine"}


def test_repeated_headers_are_joined_in_order_whatever_their_case():
    variables = environment.header_variables([
        ("X-Multi", "1"), ("Other", "o"), ("x-multi", "2"), ("X-MULTI", "3")])
    assert variables == {"HTTP_X_MULTI": "1, 2, 3", "HTTP_OTHER": "o"}


def test_names_with_underscore_are_dropped_even_next_to_the_dash_form():
    assert environment.header_variables([("X_Und", "1")]) == {}
    assert environment.header_variables([("X_Und", "evil"), ("X-Und", "good")]) == {
        "HTTP_X_UND": "good"}
    assert environment.header_variables([("X-Und", "good"), ("x_und", "evil")]) == {
        "HTTP_X_UND": "good"}


@pytest.mark.parametrize("name", ["Proxy", "proxy", "PROXY", "pRoXy"])
def test_proxy_header_is_dropped(name):
    assert environment.header_variables([(name, "http://evil:3128"), ("X-Ok", "1")]) == {
        "HTTP_X_OK": "1"}


def test_proxy_lookalikes_are_kept():
    assert environment.header_variables([("Proxy-Authorization", "x"), ("X-Proxy", "y")]) == {
        "HTTP_PROXY_AUTHORIZATION": "x", "HTTP_X_PROXY": "y"}


def test_every_variable_name_is_a_plain_shell_name():
    odd_names = ["X.Dot", "X Space", "X:Colon", "", "X=Eq", "X/Slash", "Ünïcode", "X\x00Nul",
                 "(X)", "X;Y", "$X", "-", "X-Ok"]
    variables = environment.header_variables([(name, "v") for name in odd_names])
    for key in variables:
        assert re.fullmatch(r"HTTP_[A-Z0-9_]+", key), key
    assert variables["HTTP_X_OK"] == "v"


def test_cr_and_lf_in_values_become_spaces():
    variables = environment.header_variables([("X-Fold", "a\r\n b"), ("X-Cr", "c\rd"),
                                              ("X-Lf", "e\nf")])
    assert variables == {"HTTP_X_FOLD": "a   b", "HTTP_X_CR": "c d", "HTTP_X_LF": "e f"}


def test_control_characters_become_spaces_tab_is_kept():
    variables = environment.header_variables([("X-Ctl", "a\x01b\x1fc\x7fd\te\x00f")])
    assert variables == {"HTTP_X_CTL": "a b c d\te f"}


def test_utf8_values_are_given_back_as_the_bytes_sent():
    value = environment.header_variables([("X-Utf", as_received("é€😀"))])["HTTP_X_UTF"]
    assert value == "é€😀"
    assert os.fsencode(value) == "é€😀".encode("utf-8")


@pytest.mark.skipif(sys.platform == "win32",
                    reason="os.fsencode gives the bytes back on POSIX only (surrogateescape)")
def test_non_utf8_values_keep_their_bytes():
    value = environment.header_variables([("X-Latin", "caf\xe9")])["HTTP_X_LATIN"]
    assert os.fsencode(value) == b"caf\xe9"


def test_values_that_are_not_latin1_are_kept_as_they_are():
    assert environment.header_variables([("X-Euro", "€")]) == {"HTTP_X_EURO": "€"}


# -- passed_through ------------------------------------------------------------------


def test_passed_through_takes_only_listed_non_empty_variables():
    source = {"PATH": "/bin", "LD_LIBRARY_PATH": "", "HOME": "/root", "FOO": "bar"}
    assert environment.passed_through(("PATH", "LD_LIBRARY_PATH", "FOO", "MISSING"), source) == {
        "PATH": "/bin", "FOO": "bar"}
    assert environment.passed_through((), source) == {}


def test_passed_through_reads_the_servers_environment_by_default(monkeypatch):
    monkeypatch.setenv("WEBSOCKETD_TEST_PASS", "yes")
    monkeypatch.setenv("WEBSOCKETD_TEST_EMPTY", "")
    monkeypatch.setenv("WEBSOCKETD_TEST_NOT_LISTED", "no")
    monkeypatch.delenv("WEBSOCKETD_TEST_MISSING", raising=False)
    assert environment.passed_through(
        ("WEBSOCKETD_TEST_PASS", "WEBSOCKETD_TEST_EMPTY", "WEBSOCKETD_TEST_MISSING")) == {
        "WEBSOCKETD_TEST_PASS": "yes"}


# -- unique_id -----------------------------------------------------------------------


def test_unique_ids_are_unique_and_plain_digits():
    ids = [environment.unique_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9]+", i) for i in ids)


def test_unique_ids_are_unique_across_threads():
    found = []

    def collect():
        mine = [environment.unique_id() for _ in range(2000)]
        found.extend(mine)
    threads = [threading.Thread(target=collect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 16000
    assert len(set(found)) == len(found)


# -- build ---------------------------------------------------------------------------


def test_build_gives_exactly_the_cgi_variables():
    env = environment.build(make_request(), ("PATH", "LD_LIBRARY_PATH", "FOO"),
                            {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "", "FOO": "bar",
                             "HOME": "/root"})
    assert env == {
        "PATH": "/usr/bin:/bin",
        "FOO": "bar",
        "PYTHONUNBUFFERED": "1",
        "SERVER_SOFTWARE": f"websocketd/0.4.1 (websocketd-py/{__version__})",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "10.1.2.3",
        "REMOTE_PORT": "54321",
        "REMOTE_HOST": "10.1.2.3",
        "SCRIPT_NAME": "/",
        "PATH_INFO": "/some/path x",
        "PATH_TRANSLATED": "/some/path x",
        "QUERY_STRING": "a=1&b=%20c",
        "REQUEST_URI": "/some/path%20x?a=1&b=%20c",
        "UNIQUE_ID": "1234567890001",
        "AUTH_TYPE": "",
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "",
        "REMOTE_IDENT": "",
        "REMOTE_USER": "",
        "HTTP_HOST": "example.com:8080",
        "HTTP_UPGRADE": "websocket",
        "HTTP_X_CUSTOM": "1, 2",
        **environment.utf8_locale(),
        **launching.CHILD_ENVIRONMENT,  # Windows: PYTHONIOENCODING
    }
    assert all(isinstance(value, str) for value in env.values())


def test_server_software_keeps_the_websocketd_prefix():
    software = environment.build(make_request(), (), {})["SERVER_SOFTWARE"]
    assert software.startswith("websocketd/")
    assert "websocketd-py" in software and __version__ in software


def test_build_over_tls_sets_https_and_the_default_port_443():
    env = environment.build(make_request(https=True, host="secure.example"), (), {})
    assert env["HTTPS"] == "on"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("secure.example", "443")
    assert "HTTPS" not in environment.build(make_request(), (), {})


def test_build_ipv6_host_without_port():
    env = environment.build(make_request(host="[::1]"), (), {})
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("::1", "80")


def test_headers_and_passenv_cannot_replace_the_cgi_variables():
    headers = (("Path", "/evil"), ("Remote-Addr", "6.6.6.6"), ("Proxy", "http://evil"),
               ("Server_Name", "evil"), ("Ld_Preload", "/evil.so"))
    source = {"PATH": "/bin", "SERVER_NAME": "evil", "REMOTE_ADDR": "6.6.6.6",
              "HTTP_PROXY": "http://from-env"}
    env = environment.build(make_request(headers=headers),
                            ("PATH", "SERVER_NAME", "REMOTE_ADDR"), source)
    assert env["PATH"] == "/bin"
    assert env["HTTP_PATH"] == "/evil"
    assert env["SERVER_NAME"] == "example.com"
    assert env["REMOTE_ADDR"] == "10.1.2.3"
    assert env["HTTP_REMOTE_ADDR"] == "6.6.6.6"
    assert "HTTP_PROXY" not in env
    assert "LD_PRELOAD" not in env and "HTTP_LD_PRELOAD" not in env
    assert "HTTP_SERVER_NAME" not in env


def test_build_leaves_no_nul_in_any_value():
    """A NUL would make the process start fail (execve cannot carry it)."""
    env = environment.build(make_request(path_info="/a\0b", path="/a\0b",
                                         headers=(("X-Nul", "c\0d"),)), ("FOO",), {"FOO": "e\0f"})
    assert env["PATH_INFO"] == "/ab"
    assert env["HTTP_X_NUL"] == "c d"  # a control character in a header: a space
    assert env["FOO"] == "ef"
    assert not any("\0" in key or "\0" in value for key, value in env.items())


def test_build_reads_the_servers_environment_by_default(monkeypatch):
    monkeypatch.setenv("WEBSOCKETD_TEST_PASS", "yes")
    monkeypatch.setenv("WEBSOCKETD_TEST_OTHER", "no")
    env = environment.build(make_request(), ("WEBSOCKETD_TEST_PASS",))
    assert env["WEBSOCKETD_TEST_PASS"] == "yes"
    assert "WEBSOCKETD_TEST_OTHER" not in env


def test_build_has_nothing_but_standard_http_and_passenv_names():
    env = environment.build(make_request(), ("PATH",), {"PATH": "/bin", "HOME": "/root"})
    extra = {k for k in env if not k.startswith("HTTP_")} - STANDARD
    assert extra == ({"PATH", "PYTHONUNBUFFERED", *launching.CHILD_ENVIRONMENT}
                     | set(environment.utf8_locale()))
