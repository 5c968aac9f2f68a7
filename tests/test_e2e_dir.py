"""--dir routing through a real server (SPEC §5, first bullet).

The served tree has scripts that print their SCRIPT_NAME and PATH_INFO; the
tree around it has a script that leaves a marker file if it ever runs. Every
attempt to leave the directory must be refused with a 4xx and leave no marker.
"""

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import raw_upgrade

REPORT = '#!/bin/sh\necho "SCRIPT_NAME=$SCRIPT_NAME"\necho "PATH_INFO=$PATH_INFO"\n'


class Tree:
    """tmp/root is served; tmp/outside/evil.sh touches tmp/escaped-evil if it ever runs."""

    def __init__(self, base):
        self.base = base
        self.root = base / "root"
        self.outside = base / "outside"
        (self.root / "sub").mkdir(parents=True)
        (self.root / "empty").mkdir()
        self.outside.mkdir()
        self.script(self.root / "script.sh", REPORT)
        self.script(self.root / "my script.sh", REPORT)
        self.script(self.root / "sub" / "other.sh", REPORT)
        self.evil = self.script(self.outside / "evil.sh", self.marking("evil"))
        self.script(self.root / "noexec.sh", self.marking("noexec"), mode=0o644)
        (self.root / "alias.sh").symlink_to("script.sh")
        (self.root / "link.sh").symlink_to(self.evil)
        (self.root / "outdir").symlink_to(self.outside, target_is_directory=True)
        (self.root / "sub" / "uplink.sh").symlink_to(os.path.join("..", "..", "outside",
                                                                  "evil.sh"))

    @staticmethod
    def script(path, text, mode=0o755):
        path.write_text(text)
        path.chmod(mode)
        return path

    def marking(self, name):
        return f"#!/bin/sh\ntouch '{self.base / ('escaped-' + name)}'\necho escaped\n"

    def markers(self):
        return sorted(p.name for p in self.base.glob("escaped-*"))


@pytest.fixture
def tree(tmp_path):
    tree = Tree(tmp_path)
    # the marker really shows a run: run the outside script once by hand, then clear it
    subprocess.run([str(tree.evil)], check=True, stdout=subprocess.DEVNULL, timeout=10)
    assert tree.markers() == ["escaped-evil"]
    (tmp_path / "escaped-evil").unlink()
    return tree


@pytest.fixture
def dir_server(server, tree):
    """A server on `--dir=root`, started from the directory above it (relative --dir)."""
    return server("--dir=root", cwd=str(tree.base))


def run_script(srv, path):
    """(messages, close code) of a session with a real client."""
    reply = raw_upgrade(srv.port, path)
    assert reply.status == 101, (path, reply.head, reply.body)
    return reply.messages, reply.close_code


def started_nothing(srv):
    return srv.session_pids() == [] and not any(
        line.endswith("| CONNECT") for line in srv.lines)


# -- what runs -----------------------------------------------------------------------


def test_script_at_the_top_runs_with_its_script_name(dir_server):
    assert run_script(dir_server, "/script.sh") == (
        ["SCRIPT_NAME=/script.sh", "PATH_INFO="], 1000)
    assert run_script(dir_server, "/script.sh?x=1&y=%2F") == (
        ["SCRIPT_NAME=/script.sh", "PATH_INFO="], 1000)


def test_script_in_a_subdirectory_the_rest_is_path_info(dir_server):
    assert run_script(dir_server, "/sub/other.sh/extra/path") == (
        ["SCRIPT_NAME=/sub/other.sh", "PATH_INFO=/extra/path"], 1000)


@pytest.mark.slow
def test_encoded_names_are_decoded(dir_server):
    assert run_script(dir_server, "/my%20script.sh/a%20b/c%C3%A9") == (
        ["SCRIPT_NAME=/my script.sh", "PATH_INFO=/a b/cé"], 1000)


@pytest.mark.slow
def test_trailing_slash_stays_in_path_info(dir_server):
    assert run_script(dir_server, "/sub/other.sh/extra/") == (
        ["SCRIPT_NAME=/sub/other.sh", "PATH_INFO=/extra/"], 1000)
    assert run_script(dir_server, "/script.sh/") == (
        ["SCRIPT_NAME=/script.sh", "PATH_INFO=/"], 1000)


@pytest.mark.slow
def test_absolute_form_request_target_runs_the_script(dir_server):
    target = f"http://127.0.0.1:{dir_server.port}/sub/other.sh/x?y=1"
    assert run_script(dir_server, target) == (
        ["SCRIPT_NAME=/sub/other.sh", "PATH_INFO=/x"], 1000)


@pytest.mark.slow
def test_websockets_client_and_symlink_inside_the_directory(dir_server):
    with connect(dir_server.url("/alias.sh/x"), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "SCRIPT_NAME=/alias.sh"
        assert ws.recv(timeout=10) == "PATH_INFO=/x"


@pytest.mark.slow
def test_dir_given_through_a_symlink_still_confines(server, tree):
    (tree.base / "root-link").symlink_to(tree.root, target_is_directory=True)
    srv = server(f"--dir={tree.base / 'root-link'}")
    assert run_script(srv, "/sub/other.sh") == (["SCRIPT_NAME=/sub/other.sh", "PATH_INFO="],
                                                1000)
    for path in ("/link.sh", "/outdir/evil.sh", "/sub/uplink.sh"):
        assert raw_upgrade(srv.port, path).status in (403, 404), path
    assert tree.markers() == []


# -- what is refused -----------------------------------------------------------------


def status_of(srv, path):
    with pytest.raises(InvalidStatus) as refused:
        connect(srv.url(path), open_timeout=10).close()
    return refused.value.response.status_code


def test_missing_scripts_and_directories_get_404_and_start_nothing(dir_server):
    for path in ("/missing", "/missing.sh/x", "/sub/missing.sh", "/sub", "/sub/", "/empty",
                 "/empty/", "/empty/x/y", "/", "/outdir"):
        assert status_of(dir_server, path) == 404, path
    assert started_nothing(dir_server)


@pytest.mark.slow
def test_non_executable_file_is_refused(dir_server, tree):
    for path in ("/noexec.sh", "/noexec.sh/more"):
        assert status_of(dir_server, path) in (403, 404), path
    assert tree.markers() == []
    assert started_nothing(dir_server)


def test_symlinks_leading_out_never_run(dir_server, tree):
    for path in ("/link.sh", "/link.sh/x", "/outdir/evil.sh", "/outdir/evil.sh/x",
                 "/sub/uplink.sh"):
        assert status_of(dir_server, path) in (403, 404), path
    assert tree.markers() == []
    assert started_nothing(dir_server)


def traversals(tree, port):
    evil = str(tree.evil)
    quoted_evil = urllib.parse.quote(evil, safe="")
    return [
        "/../outside/evil.sh",
        "/sub/../../outside/evil.sh",
        "/%2e%2e/outside/evil.sh",
        "/%2E%2E/outside/evil.sh",
        "/.%2e/outside/evil.sh",
        "/%2E%2E%2Foutside%2Fevil.sh",
        "/..%2Foutside%2Fevil.sh",
        "/..%2foutside%2fevil.sh",
        "/sub/%2e%2e%2f%2e%2e%2foutside%2fevil.sh",
        "/%2e%2e/" * 40 + evil.lstrip("/"),
        "/..%5coutside%5cevil.sh",
        "/%5c..%5c..%5coutside%5cevil.sh",
        "/sub%5c..%5c..%5coutside%5cevil.sh",
        "/..\\outside\\evil.sh",
        "/%252e%252e/outside/evil.sh",
        evil,
        "//" + evil.lstrip("/"),
        "/" + quoted_evil,
        "/%2F" + quoted_evil,
        "/script.sh%00",
        "/link.sh%00",
        "/%00/../outside/evil.sh",
        "/%00",
        "/script.sh%00/../../outside/evil.sh",
        "/a" + "a" * 10_000,
        "/" + "x/" * 5_000 + "evil.sh",
        "/outdir%2fevil.sh",
        "../outside/evil.sh",
        f"http://127.0.0.1:{port}/../outside/evil.sh",
    ]


def test_traversal_attempts_get_4xx_and_never_run_anything_outside(dir_server, tree):
    for path in traversals(tree, dir_server.port):
        reply = raw_upgrade(dir_server.port, path)
        assert 400 <= reply.status < 500, (path[:80], reply.head, reply.body)
    assert tree.markers() == []
    assert started_nothing(dir_server)


INVALID_UTF8 = ["/%ff", "/sub/%fe%ff.sh", "/%c0%ae%c0%ae/outside/evil.sh",
                "/%c0%af..%c0%afoutside%c0%afevil.sh"]


@pytest.mark.slow
def test_paths_that_are_not_utf8_never_run_anything(dir_server, tree):
    for path in INVALID_UTF8:
        assert raw_upgrade(dir_server.port, path).status != 101, path
    assert tree.markers() == []
    assert started_nothing(dir_server)


@pytest.mark.slow
def test_paths_that_are_not_utf8_get_404_and_a_clean_log(dir_server):
    for path in INVALID_UTF8:
        assert raw_upgrade(dir_server.port, path).status == 404, path
    dir_server.wait_log(r"404", count=len(INVALID_UTF8))
    assert "Traceback" not in dir_server.log_text()


# -- plain HTTP and the command line -------------------------------------------------


@pytest.mark.slow
def test_plain_http_get_to_a_script_says_a_websocket_client_is_needed(dir_server):
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(dir_server.url("/script.sh", "http"), timeout=10)
    assert error.value.code == 404
    assert b"WebSocket client" in error.value.read()
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(dir_server.url("/missing", "http"), timeout=10)
    assert error.value.code == 404
    assert error.value.read() == b"404 page not found\n"
    assert started_nothing(dir_server)


def test_command_together_with_dir_is_a_usage_error(server, tree):
    srv = server(f"--dir={tree.root}", sys.executable, "-c", "print(1)", wait=False)
    assert srv.proc.wait(timeout=10) != 0
    assert srv.stop() != 0  # also joins the log readers
    errors = [line for line in srv.stderr_lines if line.strip()]
    assert len(errors) == 1, errors
    assert "--dir" in errors[0] and "COMMAND" in errors[0]
    assert not any("ws://" in line for line in srv.lines)
