"""Behind a real nginx: examples/nginx/nginx.conf in front of two websocketd-py instances.

The example runs as it is, but for its ports (ephemeral ones here) and one
added line, `proxy_bind 127.0.0.2`: nginx connects to the instances from
127.0.0.2 while the test client uses 127.0.0.1, so REMOTE_ADDR tells the
proxy from the client. nginx runs in the foreground (`daemon off`) with its
own prefix directory for pid, logs and temporary files, on a listening socket
the test opens and hands over (nginx's `NGINX` variable), so no port is
guessed. Skipped when nginx is not installed (Debian package `nginx`).
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from helpers import PROXY_ADDRESS, needs_proxy_address

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx", path=os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
#: Each instance's program: its instance tag and what it was told about the request, as JSON.
TELL = ("import json, os, sys\n"
        "names = ('REMOTE_ADDR', 'REMOTE_PORT', 'HTTPS', 'SERVER_NAME', 'SERVER_PORT')\n"
        "print(json.dumps({'instance': sys.argv[1], **{n: os.environ.get(n) for n in names}}))\n")

pytestmark = [pytest.mark.slow, needs_proxy_address, pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian/Ubuntu: apt-get install nginx)")]


def example_config(listen_port, upstream_ports):
    """The example with the test's ports and `proxy_bind`; fails if the example changed shape."""
    text = EXAMPLE.read_text()
    for old, new in (
            ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
            ("server 127.0.0.1:8081;", f"server 127.0.0.1:{upstream_ports[0]};"),
            ("server 127.0.0.1:8082;", f"server 127.0.0.1:{upstream_ports[1]};"),
            ("proxy_pass http://websocketd;",
             f"proxy_pass http://websocketd;\n            proxy_bind {PROXY_ADDRESS};")):
        assert text.count(old) == 1, f"{old!r} is no longer once in {EXAMPLE}"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in the foreground on a socket handed over to it; `stop()` checks it exits 0."""

    def __init__(self, prefix, upstream_ports):
        self.prefix = prefix
        self.upstream_ports = upstream_ports
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        config = prefix / "nginx.conf"
        config.write_text(example_config(self.port, upstream_ports))
        command = [NGINX, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "startup.log")]
        checked = subprocess.run(command + ["-t"], capture_output=True, text=True)
        assert checked.returncode == 0, f"nginx -t refused the configuration:\n{checked.stderr}"
        with listener, open(prefix / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                command + ["-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=stderr,
                stderr=stderr, pass_fds=[listener.fileno()],
                env={**os.environ, "NGINX": f"{listener.fileno()};"})

    def url(self):
        return f"ws://127.0.0.1:{self.port}/"

    def logs(self):
        return "\n".join(f"-- {name} --\n{(self.prefix / name).read_text(errors='replace')}"
                         for name in ("stderr.log", "startup.log", "error.log")
                         if (self.prefix / name).exists())

    def stop(self):
        self.process.terminate()
        try:
            status = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail("nginx did not exit after SIGTERM\n" + self.logs())
        assert status == 0, f"nginx exited with {status}\n{self.logs()}"


@pytest.fixture
def behind_nginx(server, tmp_path):
    """`behind_nginx(*flags)`: instances A and B started with `flags`, nginx in front; nginx.

    Depends on `server`, so nginx is stopped before the instances are checked.
    """
    started = []

    def start(*flags):
        instances = [server(*flags, sys.executable, "-c", TELL, tag) for tag in ("A", "B")]
        started.append(Nginx(tmp_path, [instance.port for instance in instances]))
        return started[-1]

    yield start
    for nginx in started:
        nginx.stop()


def told(url, headers=None):
    """What the program said for one connection to `url`."""
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        return json.loads(ws.recv(timeout=10))


def test_sessions_reach_both_instances_and_see_the_real_client(behind_nginx):
    nginx = behind_nginx(f"--trusted-proxy={PROXY_ADDRESS}")
    sessions = [told(nginx.url()) for _ in range(4)]
    assert {session["instance"] for session in sessions} == {"A", "B"}, nginx.logs()
    for session in sessions:
        assert (session["REMOTE_ADDR"], session["REMOTE_PORT"], session["HTTPS"]) == (
            "127.0.0.1", "", None)
        assert (session["SERVER_NAME"], session["SERVER_PORT"]) == ("127.0.0.1", str(nginx.port))


def test_without_the_flag_the_program_sees_nginx(behind_nginx):
    nginx = behind_nginx()
    assert told(nginx.url())["REMOTE_ADDR"] == PROXY_ADDRESS


def test_a_client_cannot_spoof_its_address_through_nginx_or_around_it(behind_nginx):
    nginx = behind_nginx(f"--trusted-proxy={PROXY_ADDRESS}")
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    through = told(nginx.url(), spoof)  # nginx appends the address it saw: the last one counts
    assert (through["REMOTE_ADDR"], through["HTTPS"]) == ("127.0.0.1", None)
    direct = told(f"ws://127.0.0.1:{nginx.upstream_ports[0]}/", spoof)
    assert (direct["REMOTE_ADDR"], direct["HTTPS"]) == ("127.0.0.1", None)
    assert direct["REMOTE_PORT"].isdigit()
