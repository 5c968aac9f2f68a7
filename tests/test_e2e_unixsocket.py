"""--unixsocket: alone or with TCP; stale files replaced, live ones and non-sockets refused."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from websockets.sync.client import connect, unix_connect

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")


@pytest.fixture
def socket_path():
    """A path short enough for AF_UNIX (about 100 bytes); pytest's tmp_path is not, on macOS."""
    directory = tempfile.mkdtemp(prefix="wsd-", dir="/tmp" if os.path.isdir("/tmp") else None)
    yield os.path.join(directory, "ws.sock")
    shutil.rmtree(directory, ignore_errors=True)


def start_unix_only(server, path, *program):
    srv = server(f"--unixsocket={path}", *program, port_flag=False, wait=False)
    srv.wait_log(r"INFO   \| server     \|  \| Starting WebSocket server   : unix socket at "
                 + re.escape(path) + "$")
    return srv


def test_unix_socket_alone_serves_and_the_client_address_is_unix(server, socket_path):
    srv = start_unix_only(server, socket_path, "sh", "-c",
                          'echo "$REMOTE_ADDR|$REMOTE_PORT|$REMOTE_HOST"; exec cat')
    with unix_connect(socket_path, uri="ws://localhost/", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "unix:||unix:"
        ws.send("over a unix socket")
        assert ws.recv(timeout=10) == "over a unix socket"
    assert not [line for line in srv.lines if "ws://" in line]  # no TCP listener
    assert srv.stop() == 0


@pytest.mark.slow
def test_unix_socket_with_a_tcp_port_serves_both(server, socket_path):
    srv = server(f"--unixsocket={socket_path}", "cat")
    with unix_connect(socket_path, uri="ws://localhost/", open_timeout=10) as ws:
        ws.send("unix")
        assert ws.recv(timeout=10) == "unix"
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send("tcp")
        assert ws.recv(timeout=10) == "tcp"


def test_socket_file_is_removed_after_sigterm(server, socket_path):
    srv = start_unix_only(server, socket_path, "cat")
    # A served connection: the shutdown handlers are installed (server.run does that first).
    with unix_connect(socket_path, uri="ws://localhost/", open_timeout=10) as ws:
        ws.send("up")
        assert ws.recv(timeout=10) == "up"
    assert srv.stop() == 0
    assert not os.path.exists(socket_path)


@pytest.mark.slow
def test_stale_socket_file_is_replaced(server, socket_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()  # the file stays, nobody listens on it
    assert os.path.exists(socket_path)
    start_unix_only(server, socket_path, "cat")
    with unix_connect(socket_path, uri="ws://localhost/", open_timeout=10) as ws:
        ws.send("replaced")
        assert ws.recv(timeout=10) == "replaced"


def start_failure(path):
    """Run websocketd-py on `path` expecting it not to start: (exit status, the FATAL log
    line's text, stderr lines)."""
    result = subprocess.run([sys.executable, "-m", "websocketd_py", f"--unixsocket={path}", "cat"],
                            capture_output=True, text=True, timeout=30)
    fatal = re.fullmatch(r".* \| FATAL  \| server     \|  \| (.*)\n", result.stdout)
    assert fatal, result.stdout
    return result.returncode, fatal.group(1), result.stderr.splitlines()


def test_live_socket_is_refused_and_left_alone(socket_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(socket_path)
        live.listen()
        status, fatal, stderr = start_failure(socket_path)
        assert status == 3
        assert fatal == (f"Can't start server: socket {socket_path} is already in use by a "
                         "running server")
        assert stderr == [f"websocketd-py: socket {socket_path} is already in use by a running "
                          "server: stop it or choose another --unixsocket"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(socket_path)  # still the other server's socket


def test_path_that_is_not_a_socket_is_refused_and_left_alone(socket_path):
    with open(socket_path, "w") as file:
        file.write("precious")
    status, fatal, stderr = start_failure(socket_path)
    assert status == 3
    assert fatal == f"Can't start server: listen unix {socket_path}: bind: address already in use"
    assert len(stderr) == 1 and "exists and is not a socket" in stderr[0]
    with open(socket_path) as file:
        assert file.read() == "precious"
