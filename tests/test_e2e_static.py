"""--staticdir (SPEC §5): files over plain HTTP next to the WebSocket endpoint, on one port."""

import http.client
import os
import socket

import pytest
from websockets.sync.client import connect


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "evil.com").mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    files = {"style.css": "body{}", "app.js": "let x;", "data.json": "{}", "notes.txt": "n",
             "pic.png": "\x89PNG", "blob.unknownext": "?"}
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def get(port, path, method="GET", headers=None):
    """(status, headers as a dict with lower-case names, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


#: File name -> the content types it may be served with (mimetypes differ a little by platform).
CONTENT_TYPES = {
    "index.html": {"text/html"}, "style.css": {"text/css"},
    "app.js": {"text/javascript", "application/javascript"}, "data.json": {"application/json"},
    "notes.txt": {"text/plain"}, "pic.png": {"image/png"},
    "blob.unknownext": {"application/octet-stream"},
}


def test_files_are_served_with_their_content_type(server, site):
    srv = server(f"--staticdir={site}")
    for name, content_types in CONTENT_TYPES.items():
        status, headers, body = get(srv.port, "/" + name)
        assert (name, status, body) == (name, 200, (site / name).read_bytes())
        assert headers["content-type"].split(";")[0] in content_types, name


def test_root_and_directories_serve_their_index_html(server, site):
    srv = server(f"--staticdir={site}")
    assert get(srv.port, "/")[2] == b"<h1>home</h1>"
    assert get(srv.port, "/docs/")[2] == b"<h1>docs</h1>"
    assert get(srv.port, "/empty/")[0] == 404


@pytest.mark.slow
def test_directory_without_slash_redirects_to_it_keeping_the_query(server, site):
    srv = server(f"--staticdir={site}")
    status, headers, _ = get(srv.port, "/docs?page=2")
    assert (status, headers["location"]) == (301, "/docs/?page=2")


def test_directory_redirect_never_names_another_host(server, site):
    """`/%2Fevil.com` is the directory `evil.com`: its redirect must not read as `//evil.com/`."""
    srv = server(f"--staticdir={site}")
    status, headers, _ = get(srv.port, "/%2Fevil.com")
    assert (status, headers["location"]) == (301, "/evil.com/")


def test_missing_file_is_404(server, site):
    srv = server(f"--staticdir={site}")
    assert get(srv.port, "/nope.html")[0] == 404
    assert get(srv.port, "/docs/nope/")[0] == 404


@pytest.mark.slow
def test_a_changed_file_is_seen_on_reload(server, site):
    """Every response must be revalidated (max-age=0), and a change must change the ETag."""
    srv = server(f"--staticdir={site}")
    page = site / "docs" / "index.html"
    status, headers, body = get(srv.port, "/docs/")
    assert (status, body) == (200, b"<h1>docs</h1>")
    assert "max-age=0" in headers["cache-control"] or "no-cache" in headers["cache-control"]
    etag = headers["etag"]
    assert get(srv.port, "/docs/", headers={"If-None-Match": etag})[0] == 304
    page.write_text("<h1>docs, edited</h1>")
    status, headers, body = get(srv.port, "/docs/", headers={"If-None-Match": etag})
    assert (status, body) == (200, b"<h1>docs, edited</h1>")
    assert headers["etag"] != etag


@pytest.mark.slow
def test_head_gets_headers_without_the_file(server, site):
    srv = server(f"--staticdir={site}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 6" in head
    assert body == b""


@pytest.mark.slow
def test_other_methods_are_405(server, site):
    srv = server(f"--staticdir={site}")
    status, headers, _ = get(srv.port, "/index.html", method="POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD")


def test_upgrade_runs_the_command_and_get_serves_the_file_on_one_port(server, site):
    srv = server(f"--staticdir={site}", "cat")
    with connect(srv.url("/")) as ws:
        ws.send("through the program")
        assert ws.recv(timeout=10) == "through the program"
        assert get(srv.port, "/")[2] == b"<h1>home</h1>"  # while the session runs


@pytest.mark.slow
def test_symlinks_inside_the_directory_are_followed(server, site):
    os.symlink("docs/index.html", site / "alias.html")
    srv = server(f"--staticdir={site}")
    assert get(srv.port, "/alias.html")[2] == b"<h1>docs</h1>"
