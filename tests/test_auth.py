"""--basic-auth and --basic-auth-file: the whole server behind HTTP Basic authentication.

Real servers, real clients: upgrades with websockets (credentials in the URL
or the header), static files, CGI scripts and the dev console with
http.client. The process environment is read with the JSON-dumping program
of test_e2e_env.
"""

import base64
import hashlib
import json
import re
import socket
import subprocess
import sys

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.uri import parse_uri

from helpers import PROGRAM, env_of, parametrize_fast_first, receive_all, request, script
from websocketd_py import auth

USER, PASSWORD = "ann", "s3cret:Pa55 word"   # a password may hold ":" and spaces
CHALLENGE = 'Basic realm="websocketd-py"'
#: Whether the websockets client decodes %-escapes in ws://user:password@ (15.0, the newest for
#: Python 3.9, sends them as they are).
CLIENT_DECODES_USER_INFO = parse_uri("ws://a%3Ab:c%20d@h/").user_info == ("a:b", "c d")


def basic(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def refused_upgrade(url, headers=None):
    """The HTTP response a refused upgrade got."""
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers, open_timeout=10)
    return refused.value.response


def env_of_session(url, headers=None):
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        messages, code, _ = receive_all(ws)
    assert code == 1000 and len(messages) == 1
    return json.loads(messages[0])


def test_an_upgrade_without_credentials_gets_401_and_starts_nothing(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", *PROGRAM)
    response = refused_upgrade(srv.url())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    srv.wait_log(r"\| ERROR  \| auth .*\| 401 Unauthorized: no Basic credentials$")
    assert "CONNECT" not in srv.log_text()


def test_good_credentials_give_the_process_remote_user_but_not_the_password(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", *PROGRAM)
    env = env_of_session(srv.url(), basic(USER, PASSWORD))
    assert (env["REMOTE_USER"], env["AUTH_TYPE"]) == (USER, "Basic")
    assert "HTTP_AUTHORIZATION" not in env


@pytest.mark.slow
@pytest.mark.skipif(not CLIENT_DECODES_USER_INFO,
                    reason="this websockets client sends URL user info still percent-encoded")
def test_credentials_in_the_url_work_and_a_user_name_may_be_utf8(server):
    srv = server("--basic-auth=zoë:pässword", *PROGRAM)
    env = env_of_session(f"ws://zo%C3%AB:p%C3%A4ssword@127.0.0.1:{srv.port}/")
    assert env["REMOTE_USER"].encode("latin-1") == "zoë".encode()


@parametrize_fast_first("headers", [
    basic(USER, "wrong"), basic("bob", PASSWORD), basic(USER, PASSWORD + "x"),
    basic(USER, PASSWORD[:-1]), basic(USER.upper(), PASSWORD),
    {"Authorization": "Bearer " + basic(USER, PASSWORD)["Authorization"][6:]},
    {"Authorization": "Basic not*base64"},
    {"Authorization": "Basic " + base64.b64encode(b"no colon").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"ann:\xff\xfe").decode()}])
def test_wrong_or_malformed_credentials_get_401(server, headers):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", "cat")
    assert refused_upgrade(srv.url(), headers).status_code == 401


@pytest.mark.slow
def test_the_scheme_name_is_case_insensitive(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", *PROGRAM)
    token = basic(USER, PASSWORD)["Authorization"].split()[1]
    assert env_of_session(srv.url(), {"Authorization": "bAsIc " + token})["REMOTE_USER"] == USER


@pytest.mark.slow
def test_every_user_of_flags_and_file_gets_in_with_plain_or_hashed_passwords(server, tmp_path):
    hashed = hashlib.sha256("bob's pass".encode()).hexdigest()
    users = tmp_path / "users"
    users.write_text(f"# who may connect\n\nbob:sha256:{hashed}\r\ncy:plain:text\n")
    srv = server(f"--basic-auth={USER}:{PASSWORD}", f"--basic-auth-file={users}", *PROGRAM)
    for user, password in ((USER, PASSWORD), ("bob", "bob's pass"), ("cy", "plain:text")):
        assert env_of_session(srv.url(), basic(user, password))["REMOTE_USER"] == user
    for user, password in (("bob", f"sha256:{hashed}"), ("# who may connect", "")):
        assert refused_upgrade(srv.url(), basic(user, password)).status_code == 401


def test_static_files_are_protected(server, tmp_path):
    (tmp_path / "index.html").write_text("<h1>home</h1>")
    srv = server(f"--basic-auth={USER}:{PASSWORD}", f"--staticdir={tmp_path}", "cat")
    status, headers, _ = request(srv.port, "GET", "/")
    assert (status, headers["www-authenticate"]) == (401, CHALLENGE)
    assert request(srv.port, "GET", "/", headers=basic(USER, PASSWORD))[::2] == (
        200, b"<h1>home</h1>")


@pytest.mark.slow
def test_the_dev_console_is_protected(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", "--devconsole", "cat")
    assert request(srv.port, "GET", "/")[0] == 401
    status, headers, _ = request(srv.port, "GET", "/", headers=basic(USER, PASSWORD))
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/html")


def test_cgi_scripts_are_protected_and_get_remote_user_without_the_password(server, tmp_path):
    script(tmp_path, "who.sh", r"""
        printf 'Content-Type: text/plain\r\n\r\n'
        echo "REMOTE_USER=$REMOTE_USER"
        echo "AUTH_TYPE=$AUTH_TYPE"
        echo "HTTP_AUTHORIZATION=${HTTP_AUTHORIZATION-unset}"
        """)
    srv = server(f"--basic-auth={USER}:{PASSWORD}", f"--cgidir={tmp_path}", "cat")
    status, headers, _ = request(srv.port, "GET", "/who.sh")
    assert (status, headers["www-authenticate"]) == (401, CHALLENGE)
    status, _, body = request(srv.port, "GET", "/who.sh", headers=basic(USER, PASSWORD))
    assert status == 200
    assert env_of(body) == {"REMOTE_USER": USER, "AUTH_TYPE": "Basic",
                            "HTTP_AUTHORIZATION": "unset"}


@pytest.mark.slow
def test_off_by_default_authorization_reaches_the_process_untouched(server):
    srv = server(*PROGRAM)
    env = env_of_session(srv.url(), basic(USER, PASSWORD))
    assert env["HTTP_AUTHORIZATION"] == basic(USER, PASSWORD)["Authorization"]
    assert (env["REMOTE_USER"], env["AUTH_TYPE"]) == ("", "")


def test_no_password_is_ever_logged_even_at_debug_level(server, tmp_path):
    (tmp_path / "index.html").write_text("home")
    srv = server("--loglevel=debug", f"--basic-auth={USER}:{PASSWORD}",
                 f"--staticdir={tmp_path}", *PROGRAM)
    env_of_session(srv.url("/?q=1"), basic(USER, PASSWORD))
    refused_upgrade(srv.url(), basic(USER, "other-Secret"))
    request(srv.port, "GET", "/", headers=basic(USER, PASSWORD))
    request(srv.port, "GET", "/", headers=basic(USER, "third-Secret"))
    srv.wait_log(r"\| ERROR  \| auth .* wrong user name or password \(user 'ann'\)$", count=2)
    srv.wait_log(rf"url:'http://127\.0\.0\.1:{srv.port}/\?q=1'.*\| CONNECT$")
    srv.stop()
    log = srv.log_text()
    assert re.search(r"\| DEBUG  \| env .*\| AUTH_TYPE=Basic$", log, re.M)  # the dump ran
    for secret in (PASSWORD, "s3cret", "other-Secret", "third-Secret"):
        assert secret not in log
        for user in (USER, "ann"):
            assert basic(user, secret)["Authorization"][6:] not in log


def send_with_userinfo_in_the_request_line(port):
    """A request whose absolute-form target carries user:password (no Authorization header)."""
    request_line = f"GET http://{USER}:top-Secret@127.0.0.1:{port}/ HTTP/1.1\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{request_line}Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                     .encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 401")


def test_a_password_in_the_request_line_stays_out_of_the_auth_log(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", "cat")
    send_with_userinfo_in_the_request_line(srv.port)
    line = srv.wait_log(r".*\| ERROR  \| auth .*").group(0)
    assert f"url:'http://127.0.0.1:{srv.port}http://127.0.0.1:{srv.port}/'" in line


@pytest.mark.slow
def test_a_password_in_the_request_line_stays_out_of_the_access_log(server):
    srv = server(f"--basic-auth={USER}:{PASSWORD}", "cat")
    send_with_userinfo_in_the_request_line(srv.port)
    srv.wait_log(r"\| ACCESS \| http .*\| 401 Unauthorized$")
    assert "top-Secret" not in srv.log_text()


def test_every_entry_is_compared_whatever_matched_first():
    """Constant time: the number of comparisons does not depend on where (or if) a match is."""
    checker = auth.BasicAuth([auth.parse_entry(f"user{n}:pw{n}", "test") for n in range(5)])
    compared = []
    original = auth.hmac.compare_digest
    auth.hmac.compare_digest = lambda a, b: compared.append(1) or original(a, b)
    try:
        for user, password in (("user0", "pw0"), ("user4", "pw4"), ("nobody", "x")):
            compared.clear()
            checker._listed(user, password)
            assert len(compared) == 10, (user, password)
    finally:
        auth.hmac.compare_digest = original


@pytest.mark.parametrize("flags, needle", [
    (["--basic-auth=nocolon-Secret"], "--basic-auth entry 1: expected user:password"),
    (["--basic-auth=a:b", "--basic-auth=:x-Secret"], "--basic-auth entry 2: expected user"),
    (["--basic-auth=ann:sha256:abc-Secret"], "64 hex digits"),
    (["--basic-auth-file=/nonexistent/users"], "cannot read --basic-auth-file=/nonexistent/users"),
    (["--basic-auth-file=USERS"], "line 3: expected user:password"),
    (["--basic-auth-file=EMPTY"], "holds no user:password line"),
])
def test_bad_entries_are_usage_errors_that_never_show_a_password(flags, needle, tmp_path):
    (tmp_path / "users").write_text("ann:pw\n# comment\nline-Secret\n")
    (tmp_path / "empty").write_text("# nobody yet\n\n")
    flags = [f.replace("USERS", str(tmp_path / "users")).replace("EMPTY", str(tmp_path / "empty"))
             for f in flags]
    result = subprocess.run([sys.executable, "-m", "websocketd_py", "--port=0", *flags, "cat"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert needle in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Secret" not in result.stderr
