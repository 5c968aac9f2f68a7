"""Dot segments (cleanpath): websocketd's 301 to the cleaned path, and no `..` for a program.

A path that has "." or ".." segments or "//" as sent gets a 301 to the path
as Go's net/http cleans it (query kept, still %-encoded as sent) over plain
HTTP, and 400 on an upgrade; a ".." that only %-decoding makes gets 404. In
every mode nothing runs: scripts here leave a marker file when they do. Raw
sockets send the paths exactly (clients clean them before sending).
"""

import socket

import pytest

from helpers import (children_of, env_of, parametrize_fast_first, raw_upgrade, script,
                     start_on_free_port)
from websocketd_py.cleanpath import clean


@pytest.mark.parametrize("raw, cleaned", [
    ("/", "/"), ("", "/"), ("/a/b", "/a/b"), ("/a/./b", "/a/b"), ("/a/../b", "/b"),
    ("/../a", "/a"), ("/..", "/"), ("/.", "/"), ("//a//b/", "/a/b/"), ("/a/b/..", "/a"),
    ("/a/b/../", "/a/"), ("/a/.", "/a"), ("/a/./", "/a/"), ("a/b", "/a/b"),
    ("/a/%2e%2e/b", "/a/%2e%2e/b"), ("/..a/b../", "/..a/b../"),
])
def test_clean_is_gos_clean_path(raw, cleaned):
    assert clean(raw) == cleaned


def exchange(port, target, upgrade=False):
    """One raw GET of `target` (bytes as sent); (status, headers with lower-case names)."""
    head = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if upgrade:
        head += (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            assert chunk, response
            response += chunk
    status_line, *lines = response.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}


REDIRECTS = [
    (b"/a/./b/../c?q=%41&r", "/a/c?q=%41&r"),
    (b"/caf%C3%A9/../x%20y/.", "/x%20y"),
    (b"/caf\xc3\xa9/./x/", "/caf%C3%A9/x/"),
    (b"//evil.example/x", "/evil.example/x"),
    (b"/a//b?", "/a/b"),
    (b"http://127.0.0.1/a/../b", "/b"),
]
DECODED_DOT_DOT = [b"/a/..%2f..%2fetc", b"/%2e%2e/etc", b"/a/%2E%2E", b"/a/..%5cetc"]


def test_command_mode_redirects_plain_http_and_refuses_upgrades(server):
    srv = server("cat")
    for target, location in REDIRECTS:
        status, headers = exchange(srv.port, target)
        assert (status, headers.get("location")) == (301, location), target
        assert exchange(srv.port, target, upgrade=True)[0] == 400, target
    for target in DECODED_DOT_DOT:
        assert exchange(srv.port, target)[0] == 404, target
        assert exchange(srv.port, target, upgrade=True)[0] == 404, target
    assert children_of(srv.proc.pid) == []
    assert not any("CONNECT" in line for line in srv.lines)
    for clean_target in (b"/..a/b../", b"/a/%2e/b", b"/a..%2fb"):  # no ".." segment
        assert exchange(srv.port, clean_target, upgrade=True)[0] == 101, clean_target


@pytest.fixture
def marked(tmp_path):
    """`marked(directory, name)`: a script that leaves `ran-NAME` in tmp_path when it runs
    and prints its environment (as CGI output); `marked.runs()`: the markers left."""
    def make(directory, name):
        return script(directory, name, f"""
            touch {tmp_path}/ran-{name}
            printf 'Content-Type: text/plain\\r\\n\\r\\n'
            env
            """)
    make.runs = lambda: sorted(p.name for p in tmp_path.glob("ran-*"))
    return make


def test_dir_mode_runs_nothing_for_a_path_with_dot_segments(server, tmp_path, marked):
    root = tmp_path / "root"
    marked(root, "env.sh")
    srv = server(f"--dir={root}")
    assert exchange(srv.port, b"/env.sh/../../etc", upgrade=True)[0] == 400
    assert exchange(srv.port, b"/env.sh/..%2f..%2fetc", upgrade=True)[0] == 404
    status, headers = exchange(srv.port, b"/env.sh/../../etc")
    assert (status, headers["location"]) == (301, "/etc")
    assert exchange(srv.port, b"/env.sh/..%2f..%2fetc")[0] == 404
    assert marked.runs() == []
    assert children_of(srv.proc.pid) == []
    reply = raw_upgrade(srv.port, "/env.sh/x/y")  # a clean path runs the script
    assert reply.status == 101
    assert marked.runs() == ["ran-env.sh"]


@parametrize_fast_first("target, status", [
    (b"/ok.sh/../../outside/evil.sh", 301),
    (b"/ok.sh/..%2f..%2foutside%2fevil.sh", 404),
    (b"/ok.sh/%2e%2e/%2e%2e/outside/evil.sh", 404),
    (b"/sub/../ok.sh", 301),
])
def test_cgidir_runs_nothing_for_a_path_with_dot_segments(server, tmp_path, marked, target,
                                                          status):
    cgi = tmp_path / "cgi"
    marked(cgi, "ok.sh")
    marked(tmp_path / "outside", "evil.sh")
    (cgi / "sub").mkdir()
    srv = start_on_free_port(server, f"--cgidir={cgi}")
    assert exchange(srv.port, target)[0] == status
    assert marked.runs() == []
    assert children_of(srv.proc.pid) == []


@pytest.mark.slow
def test_cgi_path_translated_of_a_clean_path_stays_inside(server, tmp_path, marked):
    cgi = tmp_path / "cgi"
    marked(cgi, "ok.sh")
    srv = start_on_free_port(server, f"--cgidir={cgi}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /ok.sh/x/y HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    env = env_of(response.split(b"\r\n\r\n", 1)[1])
    assert (env["PATH_INFO"], env["PATH_TRANSLATED"]) == ("/x/y", f"{cgi}/x/y")


@pytest.mark.slow
def test_static_files_redirect_to_the_cleaned_path(server, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "page.html").write_text("page")
    srv = server(f"--staticdir={tmp_path}")
    status, headers = exchange(srv.port, b"/sub/../page.html")
    assert (status, headers["location"]) == (301, "/page.html")
    assert exchange(srv.port, b"/sub/..%2fpage.html")[0] == 404
