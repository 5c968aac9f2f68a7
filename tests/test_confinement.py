"""Nothing outside --staticdir, --cgidir or --dir is ever served or run (SPEC §5).

Next to each served directory lies `outside/` with a secret file and a script
that leaves a marker file when it runs. Every request below tries to reach
them (dot segments plain and %-encoded, encoded slashes and backslashes,
absolute paths, NUL bytes, very long paths, symlinks leading out); the secret
must never appear in a response and the marker must never appear on disk.
"""

import os
import socket
from urllib.parse import quote

import pytest

from helpers import children_of

SECRET = "TOP-SECRET-5f3a9c"
REFUSALS = {400, 403, 404, 414}


@pytest.fixture
def tree(tmp_path):
    """outside/ (secret.txt, evil.sh) and the served roots site/, cgi/, dir/ next to it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "index.html").write_text(SECRET)
    evil = outside / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'MARKER'}\n"
                    f"printf 'Content-Type: text/plain\\r\\n\\r\\n{SECRET}\\n'\n")
    evil.chmod(0o755)
    for name in ("site", "cgi", "dir"):
        root = tmp_path / name
        root.mkdir()
        (root / "sub").mkdir()
        os.symlink(outside / "secret.txt", root / "link-file")
        os.symlink(outside, root / "link-dir")
        os.symlink(evil, root / "link-script")
        (root / "leaky").mkdir()
        os.symlink(outside / "index.html", root / "leaky" / "index.html")
    (tmp_path / "site" / "index.html").write_text("<p>inside</p>")
    for name in ("cgi", "dir"):
        ok = tmp_path / name / "ok.sh"
        ok.write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\ninside\\n'\n")
        ok.chmod(0o755)
    return tmp_path


def attack_targets(tree, name):
    """Request targets that try to reach outside/NAME from a root next to outside/."""
    absolute = str(tree / "outside" / name)
    return [
        f"/../outside/{name}", f"/%2e%2e/outside/{name}", f"/%2E%2E/outside/{name}",
        f"/.%2e/outside/{name}", f"/..%2foutside%2f{name}", f"/%2e%2e%2foutside%2f{name}",
        f"/..%5coutside%5c{name}", f"/..\\outside\\{name}", f"/sub/../../outside/{name}",
        f"/./../outside/{name}", f"/%252e%252e/outside/{name}",
        f"/sub/%2e%2e/%2e%2e/outside/{name}",
        absolute, "/" + absolute, "/" + quote(absolute, safe=""), f"/.{absolute}",
        f"http://127.0.0.1/../outside/{name}", f"/..;/outside/{name}",
        f"/../outside/{name}%00.html", f"/%00/../outside/{name}", f"/../outside/{name}\0",
        "/" + "../" * 3000 + f"outside/{name}", "/" + "a" * 70000, "/" + "%2e%2e%2f" * 2000 + name,
        f"/link-dir/{name}", "/link-file", "/link-script", "/leaky/", f"/link-dir/../{name}",
    ]


def send(port, target, upgrade=False):
    """One raw request to `target` (bytes sent as is); (status, whole response)."""
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if upgrade:
        head += ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((head + "\r\n").encode("utf-8", "surrogateescape"))
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
            if upgrade and response.startswith(b"HTTP/1.1 101"):
                break
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else None
    return status, response


def location_of(response):
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    [location] = [line.split(": ", 1)[1] for line in head.split("\r\n")
                  if line.lower().startswith("location: ")]
    return location


def leaks(srv, targets, upgrade=False):
    """The targets that were not refused or whose response holds the secret; a plain
    request's 301 to the cleaned path (a path with dot segments) is followed, as a
    browser would."""
    found = []
    for target in targets:
        status, response = send(srv.port, target, upgrade)
        if status == 301 and not upgrade:
            status, response = send(srv.port, location_of(response))
        if status not in REFUSALS or SECRET.encode() in response:
            found.append((target[:80], status, response[:200]))
    return found


@pytest.mark.slow
def test_staticdir_serves_nothing_outside(server, tree):
    srv = server(f"--staticdir={tree / 'site'}")
    assert send(srv.port, "/")[1].endswith(b"<p>inside</p>")
    assert leaks(srv, attack_targets(tree, "secret.txt")) == []


@pytest.mark.slow
def test_cgidir_runs_nothing_outside(server, tree):
    srv = server(f"--cgidir={tree / 'cgi'}", f"--staticdir={tree / 'site'}")
    assert b"inside\n" in send(srv.port, "/ok.sh")[1]
    assert leaks(srv, attack_targets(tree, "evil.sh") + attack_targets(tree, "secret.txt")) == []
    assert not (tree / "MARKER").exists()
    assert children_of(srv.proc.pid) == []


def test_dir_runs_nothing_outside(server, tree):
    srv = server(f"--dir={tree / 'dir'}")
    assert send(srv.port, "/ok.sh", upgrade=True)[0] == 101
    assert leaks(srv, attack_targets(tree, "evil.sh"), upgrade=True) == []
    assert not (tree / "MARKER").exists()
