"""--dir with --devconsole: a directory's page lists its programs, and says which will not run.

Real servers, raw HTTP GETs, and the page parsed as HTML: the entries, their
links and what each says, with a program that runs, one that is not
executable, one saved with Windows line endings, one whose name needs
escaping, a subdirectory, a hidden file and a link that leads out.
"""

import html.parser
import re
import socket
import urllib.parse

import pytest

from helpers import read_until_eof, script


class Entries(html.parser.HTMLParser):
    """The list items of a page: {shown name: (href or None, the "will not run" text or "")}."""

    def __init__(self, page):
        super().__init__()
        self.entries, self.title = {}, ""
        self._item = None     # [name, href, problem] of the <li> being read
        self._in = None       # "name", "problem" or "title": where text goes now
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "li":
            self._item = ["", None, ""]
        elif tag == "a" and self._item is not None:
            self._item[1], self._in = attrs["href"], "name"
        elif tag == "span" and self._item is not None:
            self._in = "problem" if attrs.get("class") == "problem" else "name"
        elif tag == "title":
            self._in = "title"

    def handle_endtag(self, tag):
        if tag == "li" and self._item is not None:
            name, href, problem = self._item
            self.entries[name] = (href, problem)
            self._item = None
        if tag in ("a", "span", "title"):
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "name":
            self._item[0] += data
        elif self._in == "problem":
            self._item[2] += data


def get(port, target):
    """(status line, headers, body) of a GET written by hand."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        response = read_until_eof(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}, body


@pytest.fixture
def classroom(tmp_path):
    root = tmp_path / "class"
    script(root, "ok.sh", "echo ok\n")
    script(root, "noexec.sh", "echo never\n", mode=0o644)
    crlf = root / "crlf.sh"
    crlf.write_bytes(b"#!/bin/bash\r\necho hi\r\n")
    crlf.chmod(0o755)
    script(root, '<b>&"x.sh', "echo escaped\n")
    script(root / "carol", "guess.sh", "echo guess\n")
    script(root, ".hidden.sh", "echo hidden\n")
    script(tmp_path / "outside", "evil.sh", "echo evil\n")
    (root / "out.sh").symlink_to(tmp_path / "outside" / "evil.sh")
    return root


def test_the_top_lists_every_program_and_what_keeps_one_from_running(server, classroom):
    srv = server("--devconsole", f"--dir={classroom}")
    banner = srv.wait_log(r"Developer console +: (http://\S+)").group(1)
    assert banner == f"http://127.0.0.1:{srv.port}/"
    status, headers, body = get(srv.port, "/")
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/html; charset=utf-8"
    page = Entries(body.decode("utf-8"))
    assert page.title == "Programs in /"
    assert set(page.entries) == {"carol/", "ok.sh", "noexec.sh", "crlf.sh", '<b>&"x.sh'}
    assert page.entries["carol/"] == ("/carol/", "")
    assert page.entries["ok.sh"] == ("/ok.sh", "")
    assert page.entries["noexec.sh"] == (None, "will not run: not executable: run chmod +x noexec.sh")
    href, problem = page.entries["crlf.sh"]
    assert href == "/crlf.sh"
    assert problem == (r"will not run: interpreter /bin/bash\r not found: the script has Windows "
                       "line endings; run dos2unix crlf.sh (or set the editor to save with LF "
                       "line endings)")
    href, problem = page.entries['<b>&"x.sh']
    assert (urllib.parse.unquote(href), problem) == ('/<b>&"x.sh', "")
    assert b"<b>" not in body and b"&lt;b&gt;&amp;&quot;x.sh" in body
    assert re.fullmatch(r"[A-Za-z0-9/%._-]+", href)


def test_a_subdirectory_has_its_own_page_with_or_without_the_slash(server, classroom):
    srv = server("--devconsole", f"--dir={classroom}")
    for target in ("/carol/", "/carol", "/carol/?x=1"):
        status, _, body = get(srv.port, target)
        assert status == "HTTP/1.1 200 OK", target
        page = Entries(body.decode())
        assert page.title == "Programs in /carol/"
        assert page.entries == {"../": ("/", ""), "guess.sh": ("/carol/guess.sh", "")}


def test_each_link_opens_the_dev_console(server, classroom):
    srv = server("--devconsole", f"--dir={classroom}")
    for href in ("/ok.sh", "/crlf.sh", "/carol/guess.sh"):
        status, _, body = get(srv.port, href)
        assert status == "HTTP/1.1 200 OK"
        assert b"<title>websocketd-py dev console</title>" in body


def test_what_is_no_directory_under_dir_is_not_listed(server, classroom):
    srv = server("--devconsole", f"--dir={classroom}")
    for target in ("/nothing/", "/..%2f", "/%2e%2e/", "/carol/..%2f..%2f", "/out.sh/",
                   "/ok.sh/../"):
        status, _, body = get(srv.port, target)
        assert b"Programs in" not in body, (target, status)  # a 404, or a script's console


def test_without_devconsole_a_directory_is_websocketds_404(server, classroom):
    srv = server(f"--dir={classroom}")
    for target in ("/", "/carol/"):
        status, _, body = get(srv.port, target)
        assert status.startswith("HTTP/1.1 404 ")
        assert body == b"404 page not found\n"
