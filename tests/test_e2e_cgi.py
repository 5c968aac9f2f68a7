"""--cgidir (SPEC §5): CGI/1.1 scripts over plain HTTP, on a real server and real sockets.

Scripts are small /bin/sh files written per test. The fixture proves no
process outlives the server; tests that end a request early check that the
script is gone while the server still runs.
"""

import http.client
import os
import signal
import socket
import struct
import threading

import pytest
from websockets.sync.client import connect

from helpers import (children_of, env_of, parametrize_fast_first, read_until_eof, request, script,
                     start_on_free_port, wait_for, wait_for_no_leftovers)

OK_HEADERS = r"printf 'Content-Type: text/plain\r\n\r\n'"


def cgi_server(server, root, *args, env=None):
    """websocketd-py with --cgidir=root on a free port (no URL is logged for --cgidir alone)."""
    return start_on_free_port(server, f"--cgidir={root}", *args, env=env)


def raw(port, data):
    """Send `data` as is; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.fixture
def cgi(tmp_path):
    return tmp_path / "cgi"


def test_status_and_headers_from_the_script(server, cgi):
    script(cgi, "made.sh", r"""
        printf 'Status: 201 Made here\r\nContent-Type: text/x-made\r\nX-Extra: yes\r\n\r\n'
        printf 'the body\n'
        """)
    srv = cgi_server(server, cgi)
    status, headers, body = request(srv.port, "GET", "/made.sh")
    assert (status, body) == (201, b"the body\n")
    assert headers["content-type"] == "text/x-made"
    assert headers["x-extra"] == "yes"


@pytest.mark.slow
def test_location_without_status_is_a_302(server, cgi):
    script(cgi, "go.sh", r"printf 'Location: /elsewhere?x=1\n\n'")
    srv = cgi_server(server, cgi)
    status, headers, _ = request(srv.port, "GET", "/go.sh")
    assert (status, headers["location"]) == (302, "/elsewhere?x=1")


def test_cgi_environment(server, cgi, tmp_path):
    script(cgi, "sub/env.sh", OK_HEADERS + "\nenv; echo PWD_IS=$(pwd)\n")
    environ = dict(os.environ, PASSED_ON="yes", NOT_PASSED="no")
    srv = cgi_server(server, cgi, "--passenv=PATH,PASSED_ON", env=environ)
    status, _, body = request(
        srv.port, "POST", "/sub/env.sh/more/p%20th?a=1%20b&c", body=b"x=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Custom": "v",
                 "Host": "example.test:8080"})
    assert status == 200
    env = env_of(body)
    expected = {
        "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": "3",
        "QUERY_STRING": "a=1%20b&c", "REQUEST_URI": "/sub/env.sh/more/p%20th?a=1%20b&c",
        "SCRIPT_NAME": "/sub/env.sh", "PATH_INFO": "/more/p th",
        "PATH_TRANSLATED": str(cgi.resolve() / "more/p th"),
        "SCRIPT_FILENAME": str(cgi.resolve() / "sub/env.sh"),
        "SERVER_NAME": "example.test", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_X_CUSTOM": "v", "PASSED_ON": "yes",
        "PWD_IS": str(cgi.resolve() / "sub"),
    }
    assert {key: env.get(key) for key in expected} == expected
    assert env["SERVER_SOFTWARE"].startswith("websocketd/")
    assert int(env["REMOTE_PORT"]) > 0
    for absent in ("NOT_PASSED", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"):
        assert absent not in env


def test_request_body_is_stdin_then_eof(server, cgi):
    script(cgi, "echo.sh", OK_HEADERS + "\ncat\n")
    srv = cgi_server(server, cgi)
    status, _, body = request(srv.port, "POST", "/echo.sh", body=b"line 1\nline 2 no newline")
    assert (status, body) == (200, b"line 1\nline 2 no newline")


@pytest.mark.slow
def test_chunked_request_body_is_passed_to_its_end(server, cgi):
    script(cgi, "echo.sh", OK_HEADERS + '\necho "length=[$CONTENT_LENGTH]"; cat\n')
    srv = cgi_server(server, cgi)
    response = raw(srv.port, b"POST /echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    assert b"length=[]" in response and b"hello world" in response


@pytest.mark.slow
def test_large_bodies_stream_both_ways_in_bounded_memory(server, cgi):
    script(cgi, "count.sh", OK_HEADERS + "\nwc -c\n")
    script(cgi, "zeros.sh", OK_HEADERS + "\nhead -c 33554432 /dev/zero\n")
    srv = cgi_server(server, cgi)
    size = 32 * 1024 * 1024
    status, _, body = request(srv.port, "POST", "/count.sh", body=b"z" * size)
    assert (status, int(body)) == (200, size)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("GET", "/zeros.sh")
    response = conn.getresponse()
    received = 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    conn.close()
    assert received == size
    rss_kib = int(open(f"/proc/{srv.proc.pid}/statm").read().split()[1]) * 4
    assert rss_kib < 100_000, f"server RSS grew to {rss_kib} KiB"


def test_output_is_streamed_as_it_comes(server, cgi, tmp_path):
    go = tmp_path / "go"
    script(cgi, "slow.sh", OK_HEADERS + f"""
        echo first
        while [ ! -e {go} ]; do sleep 0.01; done
        echo second
        """)
    srv = cgi_server(server, cgi)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request("GET", "/slow.sh")
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline() == b"first\n"  # while the script still waits
    go.touch()
    assert response.read() == b"second\n"
    conn.close()


@pytest.mark.slow
def test_head_gets_the_headers_only(server, cgi):
    script(cgi, "page.sh", OK_HEADERS + "\necho body that HEAD must not get\n")
    srv = cgi_server(server, cgi)
    response = raw(srv.port, b"HEAD /page.sh HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: text/plain" in head
    assert body == b""


@parametrize_fast_first("headers", [
    b"Content-Length: 3\r\nContent-Length: 5\r\n",
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Content-Length: +3\r\n",
], ids=["two-lengths", "length-and-chunked", "not-chunked", "signed-length"])
def test_ambiguous_body_framing_is_refused_with_400_before_any_process(server, cgi, tmp_path,
                                                                        headers):
    ran = tmp_path / "ran"
    script(cgi, "x.sh", f"touch {ran}\n" + OK_HEADERS + "\ncat\n")
    srv = cgi_server(server, cgi)
    response = raw(srv.port, b"POST /x.sh HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabcde")
    assert response.startswith(b"HTTP/1.1 400"), response
    assert not ran.exists()


@parametrize_fast_first("body, log", [
    ("echo oops >&2; exit 3", r"ERROR .*exit status 3 before any output"),
    ("exit 0", r"ERROR .*wrote nothing"),
    (r"printf 'no colon here\n\nbody'", r"ERROR .*malformed header line"),
    (r"printf 'X-Only: this\n\nbody'", r"ERROR .*no Content-Type"),
    (r"printf 'Status: two hundred\nContent-Type: text/plain\n\n'", r"ERROR .*malformed Status"),
    (r"printf 'Content-Type: text/plain\n'", r"ERROR .*ended inside its headers"),
    ("head -c 70000 /dev/zero | tr '\\0' a", r"ERROR .*headers are longer"),
], ids=["exit-3", "no-output", "bad-line", "no-type", "bad-status", "no-blank-line", "huge"])
def test_script_errors_are_500_and_logged(server, cgi, body, log):
    script(cgi, "bad.sh", body + "\n")
    srv = cgi_server(server, cgi)
    status, _, _ = request(srv.port, "GET", "/bad.sh")
    assert status == 500
    srv.wait_log(log)


@pytest.mark.slow
def test_script_that_cannot_start_is_500_and_logged(server, cgi):
    path = cgi / "broken.sh"
    cgi.mkdir()
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    srv = cgi_server(server, cgi)
    assert request(srv.port, "GET", "/broken.sh")[0] == 500
    srv.wait_log(r"ERROR  \| cgi .*cannot start")


@pytest.mark.slow
def test_stderr_lines_are_logged_with_the_script(server, cgi):
    script(cgi, "noisy.sh", OK_HEADERS + "\necho 'first problem' >&2; echo 'second' >&2\n")
    srv = cgi_server(server, cgi)
    assert request(srv.port, "GET", "/noisy.sh")[0] == 200
    srv.wait_log(r"\| ERROR  \| stderr     \| .*cgiscript:'.*noisy\.sh' pid:'\d+' "
                 r"\| first problem$")
    srv.wait_log(r"\| ERROR  \| stderr .*\| second$")


def test_missing_script_is_404_and_not_executable_is_403(server, cgi):
    script(cgi, "plain.txt", "echo never\n", mode=0o644)
    srv = cgi_server(server, cgi)
    assert request(srv.port, "GET", "/absent.sh")[0] == 404
    assert request(srv.port, "GET", "/plain.txt")[0] == 403
    assert request(srv.port, "GET", "/")[0] == 404


@pytest.mark.slow
def test_scripts_and_static_files_share_the_port(server, cgi, tmp_path):
    script(cgi, "hello.sh", OK_HEADERS + "\necho from the script\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>static</p>")
    srv = cgi_server(server, cgi, f"--staticdir={site}")
    assert request(srv.port, "GET", "/hello.sh")[2] == b"from the script\n"
    assert request(srv.port, "GET", "/")[2] == b"<p>static</p>"


def hold_open(port, path):
    """A request whose script has answered its first line and now waits; the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    while b"started" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return sock


@pytest.mark.slow
def test_maxforks_counts_cgi_scripts_and_sessions(server, cgi):
    script(cgi, "wait.sh", OK_HEADERS + "\necho started; exec sleep 1000\n")
    script(cgi, "quick.sh", OK_HEADERS + "\necho quick\n")
    srv = cgi_server(server, cgi, "--maxforks=1", "cat")
    held = hold_open(srv.port, "/wait.sh")
    assert request(srv.port, "GET", "/quick.sh")[0] == 429
    with pytest.raises(Exception, match="429"):
        connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=10)
    assert len(children_of(srv.proc.pid)) == 1
    reset(held)  # the client leaves: the script is stopped, the slot comes back
    wait_for(lambda: request(srv.port, "GET", "/quick.sh")[0] == 200,
             message="the slot to come back")


def reset(sock):
    """Close `sock` with a reset (RST), as a client that is gone for good."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@parametrize_fast_first("before_headers", [False, True], ids=["after-headers", "silent"])
def test_a_client_that_resets_stops_the_script(server, cgi, before_headers):
    """A silent script that would run for ever is stopped (and reaped) once its client's
    connection is reset."""
    body = "echo started >&2; exec sleep 1000" if before_headers else \
        OK_HEADERS + "\necho started; exec sleep 1000"
    script(cgi, "forever.sh", body + "\n")
    srv = cgi_server(server, cgi)
    if before_headers:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        sock.sendall(b"GET /forever.sh HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.wait_log(r"stderr .*\| started$")
    else:
        sock = hold_open(srv.port, "/forever.sh")
    assert len(children_of(srv.proc.pid)) == 1
    reset(sock)
    srv.wait_log(r"client went away")
    wait_for(lambda: children_of(srv.proc.pid) == [], message="the script to be reaped")


def test_a_client_that_closes_stops_a_script_at_its_next_write(server, cgi):
    script(cgi, "ticks.sh", OK_HEADERS + "\necho started\n"
                            "while true; do echo tick; sleep 0.05; done\n")
    srv = cgi_server(server, cgi)
    sock = hold_open(srv.port, "/ticks.sh")
    sock.close()
    wait_for(lambda: children_of(srv.proc.pid) == [], message="the script to be reaped")


def test_a_client_that_half_closes_after_its_request_gets_the_whole_answer(server, cgi,
                                                                           tmp_path):
    """websocketd answers `GET` + shutdown(SHUT_WR): a FIN is not a client that left."""
    go = tmp_path / "go"
    script(cgi, "late.sh", f"echo started >&2\nwhile [ ! -e {go} ]; do sleep 0.02; done\n"
                           + OK_HEADERS + "\necho hello\n")
    srv = cgi_server(server, cgi)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(b"GET /late.sh HTTP/1.0\r\nHost: x\r\n\r\n")
        srv.wait_log(r"stderr .*\| started$")
        sock.shutdown(socket.SHUT_WR)
        go.touch()
        response = read_until_eof(sock)
    assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"\r\n\r\nhello\n"), response
    assert b"Transfer-Encoding" not in response  # an HTTP/1.0 client cannot read chunks
    assert not any("went away" in line for line in srv.lines)


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_process(server, cgi):
    script(cgi, "pid.sh", OK_HEADERS + "\necho $$\n")
    srv = cgi_server(server, cgi)
    results = []

    def fetch():
        results.append(request(srv.port, "GET", "/pid.sh")[2])
    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 8


@pytest.mark.slow
def test_server_shutdown_stops_running_scripts(server, cgi):
    script(cgi, "forever.sh", OK_HEADERS + "\necho started; exec sleep 1000\n")
    srv = cgi_server(server, cgi)
    held = hold_open(srv.port, "/forever.sh")
    assert srv.stop() == 0
    held.close()
    leftovers = wait_for_no_leftovers()
    for pid in leftovers:  # so the fixture's own check stays clean while this is expected to fail
        os.kill(pid, signal.SIGKILL)
    assert leftovers == []
