"""What more than one test file uses: a running server, waiting, /proc, clients, programs.

Test files import from here (`from helpers import ...`), never from each
other or from conftest.py; conftest.py holds the fixtures. A helper that
only one file uses stays in that file. This module imports no websocketd_py
module at import time, so a broken package module fails its own tests, not
the collection of every file.
"""

import collections
import dataclasses
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

IS_LINUX = sys.platform.startswith("linux")


# -- waiting -------------------------------------------------------------------------------


def wait_for(condition, timeout=10.0, interval=0.01, message="condition"):
    """Poll `condition()` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# -- processes (Linux /proc) ---------------------------------------------------------------


def children_of(pid):
    """PIDs whose parent is `pid` (Linux /proc)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # it has just exited (a session's process, say)
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    return found


def descendants(pid):
    result, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        result += kids
        todo += kids
    return result


def process_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def leftover_processes():
    """Our live children: re-parented leftovers of the servers (which have exited by now)."""
    return [p for p in children_of(os.getpid()) if process_state(p) not in (None, "Z")]


def wait_for_no_leftovers(timeout=3.0):
    """Leftover processes after `timeout` (a just-killed process may still be exiting)."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = leftover_processes()
        if not leftovers or time.monotonic() > deadline:
            return leftovers
        time.sleep(0.02)


# -- the fast tier ------------------------------------------------------------------------


def parametrize_fast_first(argnames, cases, **options):
    """`pytest.mark.parametrize` for an end-to-end test whose every case starts its own
    server: the fast tier (`-m "not slow"`) runs the first case, the whole suite all of them."""
    single = len(argnames.split(",") if isinstance(argnames, str) else argnames) == 1
    cases = list(cases)
    return pytest.mark.parametrize(
        argnames, cases[:1] + [_marked_slow(case, single) for case in cases[1:]], **options)


def _marked_slow(case, single):
    if isinstance(case, _PARAMETER_SET):
        return pytest.param(*case.values, marks=[*case.marks, pytest.mark.slow], id=case.id)
    return pytest.param(*((case,) if single else case), marks=pytest.mark.slow)


_PARAMETER_SET = type(pytest.param(None))


# -- a running server ----------------------------------------------------------------------


#: The command line's `serve` with shorter `session.Timings`: argv[1] is their JSON.
_SERVE_WITH_TIMINGS = """
import json, sys
from websocketd_py import cli
from websocketd_py.session import Timings
sys.exit(cli.serve(cli.parse_args(sys.argv[2:]), Timings(**json.loads(sys.argv[1]))))
"""


class Server:
    """A running websocketd-py and everything it logs. `timings`: a dict of `session.Timings`
    fields, for tests that would otherwise wait out the real ones."""

    def __init__(self, args, cwd=None, env=None, port_flag=True, preexec_fn=None, timings=None):
        command = [sys.executable, "-m", "websocketd_py"]
        if timings:
            command = [sys.executable, "-c", _SERVE_WITH_TIMINGS, json.dumps(timings)]
        if port_flag:
            command += ["--port=0", "--address=127.0.0.1"]
        self._start(command + list(args), cwd=cwd, env=env, preexec_fn=preexec_fn)

    def _start(self, command, **popen_options):
        """Run `command`, collecting its stdout and stderr lines as they come."""
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            **popen_options)
        self.lines = []
        self.stderr_lines = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True)]
        for reader in self._readers:
            reader.start()
        self.port = None

    def _collect(self, stream, into):
        for raw in stream:
            with self._changed:
                into.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_started(self, timeout=15):
        match = self.wait_log(r"(?:ws|http)s?://127\.0\.0\.1:(\d+)/", timeout=timeout)
        self.port = int(match.group(1))
        return self

    def wait_log(self, pattern, timeout=10, count=1):
        """Wait until `count` log lines match `pattern`; the last match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and
                                      not any(r.is_alive() for r in self._readers)):
                    pytest.fail(f"no log line matching {pattern!r}; log:\n" + self.log_text())
                self._changed.wait(min(remaining, 0.2))

    def log_text(self):
        return "\n".join(self.lines + ["-- stderr --"] + self.stderr_lines)

    def url(self, path="/", scheme="ws"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def session_pids(self):
        """PIDs of the processes the server runs now."""
        return children_of(self.proc.pid)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop the server; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("server did not exit after " + sig.name + "\n" + self.log_text())
        for reader in self._readers:
            reader.join(5)
        return status


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_on_free_port(server, *args, timeout=10, **options):
    """`server(*args)` on a port chosen here, for a server that logs no URL to read it from
    (--cgidir alone, or a log level that hides the startup lines)."""
    port = free_port()
    srv = server(f"--port={port}", "--address=127.0.0.1", *args, port_flag=False, wait=False,
                 **options)
    srv.port = port  # so the fixture checks the exit status too

    def accepting():
        assert srv.proc.poll() is None, "server exited:\n" + srv.log_text()
        return listening(port)
    wait_for(accepting, timeout=timeout, message=f"a listener on 127.0.0.1:{port}")
    return srv


# -- what a server holds: threads, descriptors, processes, memory --------------------------

Footprint = collections.namedtuple("Footprint", "threads fds processes")


def footprint(pid):
    """What the server holds now: threads, open descriptors, descendant processes."""
    return Footprint(len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")),
                     len(descendants(pid)))


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def start_measured(server, *args):
    """A server whose idle footprint and memory are recorded (as `idle`, `idle_rss`)."""
    srv = server(*args)
    srv.idle = footprint(srv.proc.pid)
    srv.idle_rss = rss_kib(srv.proc.pid)
    return srv


def assert_back_to_idle(srv, timeout=10):
    """Wait until the server holds exactly the threads, descriptors and processes of its start."""
    seen = []

    def idle_again():
        seen.append(footprint(srv.proc.pid))
        return seen[-1] == srv.idle
    try:
        wait_for(idle_again, timeout=timeout, message="the footprint to come back to idle")
    except pytest.fail.Exception:
        pytest.fail(f"the server holds {seen[-1]}, at start it held {srv.idle}")


# -- WebSocket clients ---------------------------------------------------------------------

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def receive_all(ws, timeout=10):
    """Every message until the server closes; (messages, close code, close reason)."""
    messages = []
    try:
        while True:
            messages.append(ws.recv(timeout=timeout))
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return messages, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None)


def echo_through_binary_cat(ws, payload):
    """Send `payload` while reading what comes back (cat may return it in other pieces)."""
    sender = threading.Thread(target=ws.send, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        message = ws.recv(timeout=20)
        assert isinstance(message, bytes)
        received += message
    sender.join()
    return bytes(received)


def read_until_eof(sock, initial=b""):
    """Everything `sock` receives until its peer closes, after `initial`."""
    data = initial
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def raw_request(port, head):
    """Send `head` (request line and headers) and return (status line, headers dict)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed before the response ended: {response!r}"
            response += chunk
    status, *lines = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines)


def raw_handshake(port, path="/", extra=""):
    """A hand-written upgrade: (the socket, the response head, bytes read past it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY.decode()}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "connection closed during the handshake"
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    return sock, head.decode(), rest


class RawReply:
    """What a hand-written upgrade got: status, head, body or messages, close code and reason."""

    def __init__(self, status, head, body=b"", messages=(), close_code=None, close_reason="",
                 client_port=None):
        self.status, self.head, self.body = status, head, body
        self.messages, self.close_code, self.client_port = list(messages), close_code, client_port
        self.close_reason = close_reason

    def env(self):
        assert self.status == 101, (self.head, self.body)
        assert self.close_code == 1000 and len(self.messages) == 1, (self.messages,
                                                                      self.close_code)
        return json.loads(self.messages[0])


def raw_upgrade(port, target="/", headers=b"", host=None):
    """A WebSocket upgrade written by hand, so headers can be repeated, folded or odd.

    `headers` are raw header lines (bytes, each ending in CRLF). Reads the whole
    session: every text message until the server's close frame, which it answers.
    """
    host_line = b"Host: " + (host or f"127.0.0.1:{port}").encode("latin-1") + b"\r\n"
    request = (b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\n" + host_line +
               b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + WS_KEY +
               b"\r\nSec-WebSocket-Version: 13\r\n" + headers + b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(request)
        reader = _Reader(sock)
        head = reader.until(b"\r\n\r\n").decode("latin-1")
        status = int(head.split(" ", 2)[1])
        if status != 101:
            length = [int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:")]
            body = reader.exactly(length[0]) if length else reader.rest()
            return RawReply(status, head, body, client_port=client_port)
        messages, code = [], None
        while True:
            opcode, payload = reader.frame()
            if opcode in (0x1, 0x0):
                messages.append(payload.decode("utf-8"))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else None
                reason = payload[2:].decode("utf-8")
                sock.sendall(b"\x88\x82\x00\x00\x00\x00" + payload[:2])
                break
        return RawReply(status, head, messages=messages, close_code=code,
                        close_reason=reason, client_port=client_port)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed early; got {self.buffer[:200]!r}"
        self.buffer += chunk

    def until(self, marker):
        while marker not in self.buffer:
            self._more()
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    def exactly(self, count):
        while len(self.buffer) < count:
            self._more()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def rest(self):
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return self.buffer
            self.buffer += chunk

    def frame(self):
        first, second = self.exactly(2)
        assert not second & 0x80, "the server masked a frame"
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self.exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(self.exactly(8), "big")
        return first & 0x0F, self.exactly(length)


# -- plain HTTP and CGI scripts ------------------------------------------------------------


def request(port, method, path, body=None, headers=None):
    """(status, headers as a dict with lower-case names, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        conn.close()


def script(directory, name, body, mode=0o755):
    """A /bin/sh script `name` in `directory`; its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(mode)
    return path


def env_of(body):
    """The NAME=value lines of a body (a CGI script that prints its environment) as a dict."""
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


# -- a program's environment ---------------------------------------------------------------

#: COMMAND for a process that sends its whole initial environment as one JSON line. It
#: reads /proc/self/environ rather than os.environ, because Python adds LC_CTYPE to
#: os.environ by itself in a C locale; the bytes are carried as latin-1 code points so
#: a test sees exactly the bytes the process got.
DUMP_ENV = (
    "import json, os\n"
    "try:\n"
    "    raw = open('/proc/self/environ', 'rb').read()\n"
    "except OSError:\n"
    "    raw = b''.join(k + b'=' + v + b'\\0' for k, v in os.environb.items())\n"
    "pairs = (item.decode('latin-1').split('=', 1) for item in raw.split(b'\\0') if item)\n"
    "print(json.dumps(dict(pairs)))\n")
PROGRAM = (sys.executable, "-I", "-c", DUMP_ENV)

#: The CGI-style variables every process gets (SPEC §4).
STANDARD = {
    "SERVER_SOFTWARE", "GATEWAY_INTERFACE", "SERVER_PROTOCOL", "REQUEST_METHOD", "SERVER_NAME",
    "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_HOST", "SCRIPT_NAME", "PATH_INFO",
    "PATH_TRANSLATED", "QUERY_STRING", "REQUEST_URI", "UNIQUE_ID", "AUTH_TYPE",
    "CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_IDENT", "REMOTE_USER"}


def make_request(**changes):
    """An `EndpointRequest` for unit tests of `environment`, with `changes` made to it."""
    from websocketd_py.environment import EndpointRequest
    request = EndpointRequest(
        method="GET", host="example.com:8080", https=False, remote_addr="10.1.2.3",
        remote_port=54321, remote_host="10.1.2.3", script_name="/", path_info="/some/path x",
        path="/some/path x", query_string="a=1&b=%20c", request_uri="/some/path%20x?a=1&b=%20c",
        unique_id="1234567890001",
        headers=(("Host", "example.com:8080"), ("Upgrade", "websocket"),
                 ("X-Custom", "1"), ("X-Custom", "2")))
    return dataclasses.replace(request, **changes)


# -- a second loopback address -------------------------------------------------------------

PROXY_ADDRESS = "127.0.0.2"


def _is_local(address):
    try:
        socket.create_server((address, 0)).close()
    except OSError:
        return False
    return True


#: For tests that need a second loopback address to play the proxy.
needs_proxy_address = pytest.mark.skipif(
    not _is_local(PROXY_ADDRESS), reason=f"{PROXY_ADDRESS} is not a local address here "
    f"(Linux has all of 127/8; macOS: sudo ifconfig lo0 alias {PROXY_ADDRESS})")
