"""The Python API: `websocketd_py.serve()` and `websocketd_py.WebSocketApp` with real clients.

`serve()` and the embedding example run as subprocesses (stopped with
SIGTERM or SIGINT, as Ctrl-C would); `WebSocketApp` also runs in this process
under werkzeug's threaded server, next to a small werkzeug app. Every test
checks that no process is left behind.
"""

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

import websocketd_py
from helpers import (IS_LINUX, PROGRAM, Server, receive_all, request, wait_for,
                     wait_for_no_leftovers)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedding" / "app.py"


class PythonProgram(Server):
    """helpers' `Server`, running `python ARGS`: a program that embeds websocketd-py."""

    def __init__(self, args):
        self._start([sys.executable, *args])


@pytest.fixture
def python_program():
    """`python_program(*args)` starts `python ARGS`; at teardown: stopped, no process left."""
    started = []

    def start(*args, wait=True):
        program = PythonProgram(args)
        started.append(program)
        return program.wait_started() if wait else program

    yield start
    for program in started:
        program.stop()
    if IS_LINUX:
        assert wait_for_no_leftovers() == []


def serve_code(*arguments):
    """`python -c` code that calls websocketd_py.serve(ARGUMENTS) and exits with its result."""
    return ("import sys, websocketd_py\n"
            f"sys.exit(websocketd_py.serve({', '.join(arguments)}))\n")


# -- import cost ---------------------------------------------------------------------------


def test_importing_the_package_imports_no_server_code():
    code = ("import sys, websocketd_py\n"
            "print([m for m in sys.modules if m.startswith(('werkzeug', 'websocketd_py.'))])\n"
            "websocketd_py.WebSocketApp, websocketd_py.serve\n"
            "print('werkzeug' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.splitlines() == ["[]", "True"]


# -- serve() -------------------------------------------------------------------------------


def test_serve_runs_the_server_with_command_line_options_until_ctrl_c(python_program):
    program = python_program("-c", serve_code(
        "['cat']", "port=0", "address='127.0.0.1'", "subprotocol=['chat', 'json']",
        "status_path='/_status'"))
    with connect(program.url(), subprotocols=["json"], open_timeout=10) as ws:
        assert ws.subprotocol == "json"
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        assert json.loads(request(program.port, "GET", "/_status")[2])["session_count"] == 1
        assert program.stop(signal.SIGINT) == 0
        assert receive_all(ws)[1] == 1001


def test_make_server_stops_when_the_embedding_program_asks(python_program):
    """serve() installs no signal handler: a program that wants SIGTERM to stop the server
    says so, through `request_stop` (safe in a signal handler) or `shutdown()`."""
    code = ("import signal, sys, websocketd_py\n"
            "server = websocketd_py.make_server('cat', port=0, address='127.0.0.1')\n"
            "signal.signal(signal.SIGTERM, lambda *_: server.request_stop('SIGTERM received'))\n"
            "server.serve_forever()\n")
    program = python_program("-c", code)
    with connect(program.url(), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        assert program.stop(signal.SIGTERM) == 0
        assert receive_all(ws)[1] == 1001
    program.wait_log(r"SIGTERM received: shutting down")


@pytest.mark.slow
def test_serve_stops_on_ctrl_c(python_program):
    program = python_program("-c", serve_code("'cat'", "port=0", "address='127.0.0.1'"))
    with connect(program.url(), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        assert program.stop(signal.SIGINT) == 0
    program.wait_log(r"SIGINT received: shutting down")


def test_serve_returns_3_when_the_port_is_taken_and_says_so_as_the_command_line(
        python_program):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        program = python_program("-c", serve_code("'cat'", f"port={port}",
                                                  "address='127.0.0.1'"), wait=False)
        assert program.proc.wait(30) == 3
    program.stop()
    program.wait_log(rf"\| FATAL  \| server     \|  \| Can't start server: listen tcp "
                     rf"127\.0\.0\.1:{port}: bind: address already in use$")
    assert program.stderr_lines == [
        f"websocketd-py: cannot listen on 127.0.0.1:{port}: Address already in use (another "
        "program uses this port: stop it or choose another --port)"]


#: Serves one session in the main thread until a KeyboardInterrupt (Ctrl-C) sent by the
#: client's thread; prints what serving could have changed: before, while serving, after.
_WHAT_SERVE_CHANGES = """
import _thread, json, os, signal, sys, threading, websocketd_py
from websockets.sync.client import connect

def cpus_of(task):
    try:
        return tuple(sorted(os.sched_getaffinity(int(task))))
    except ProcessLookupError:  # the thread ended between the listing and the question
        return None

def state():
    cpus = {cpus_of(t) for t in os.listdir("/proc/self/task")} - {None}
    return {"handlers": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM,
                                                              signal.SIGHUP)],
            "interval": sys.getswitchinterval(), "threads": len(threading.enumerate()),
            "cpus": sorted(cpus)}

before = state()
server = websocketd_py.make_server("cat", port=0, address="127.0.0.1")
port = server.listeners[0].port
seen = {}

def client():
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        seen["while"] = state()
    _thread.interrupt_main()

visitor = threading.Thread(target=client)
visitor.start()
server.serve_forever()  # until the KeyboardInterrupt
visitor.join()
print(json.dumps({"before": before, "while": seen["while"], "after": state()}))
"""


@pytest.mark.skipif(not IS_LINUX, reason="/proc/self/task and sched_getaffinity")
def test_serving_from_python_changes_nothing_process_wide():
    """No signal handler, no switch interval, no CPU affinity while serving or after; and
    after serve_forever() returns, the threads are those of before."""
    result = subprocess.run([sys.executable, "-c", _WHAT_SERVE_CHANGES], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    before = seen["before"]
    for moment in ("while", "after"):
        for key in ("handlers", "interval", "cpus"):
            assert seen[moment][key] == before[key], (moment, key)
    assert seen["after"]["threads"] == before["threads"]


# -- WebSocketApp --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_embedding_example_serves_its_page_and_the_counter(python_program):
    program = python_program(str(EXAMPLE), "0")
    status, headers, body = request(program.port, "GET", "/")
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/html")
    assert b'+ "/count"' in body
    with connect(program.url("/count"), open_timeout=10) as ws:
        assert [ws.recv(timeout=10) for _ in range(2)] == ["1", "2"]
        assert program.stop(signal.SIGINT) == 0  # Ctrl-C while a counter runs
        assert receive_all(ws)[1] == 1001


@pytest.fixture
def werkzeug_server():
    """`werkzeug_server(wsgi_app)`: werkzeug's threaded server in a thread; its port.

    An error that reaches the server (socketserver would print its traceback
    and drop the connection), e.g. reading the next request from a stream
    the session closed, fails the test.
    """
    servers, errors = [], []

    def start(app):
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.handle_error = lambda request, address: errors.append(repr(sys.exc_info()[1]))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server.port

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join()
        server.server_close()
    assert errors == []


def site(environ, start_response):
    return Response("the rest of the site")(environ, start_response)


def as_user(app, user):
    """A middleware in front that has authenticated `user`, as a site's login would."""
    def middleware(environ, start_response):
        environ.update(REMOTE_USER=user, AUTH_TYPE="Cookie")
        return app(environ, start_response)
    return middleware


def recording_errors(app, raised):
    """The app, with the type of every exception it raises appended to `raised`."""
    def middleware(environ, start_response):
        try:
            return app(environ, start_response)
        except Exception as error:
            raised.append(type(error))
            raise
    return middleware


def test_a_mounted_app_runs_its_command_with_the_cgi_environment(werkzeug_server):
    app = websocketd_py.WebSocketApp(list(PROGRAM), passenv=["PATH"], loglevel="none")
    raised = []
    port = werkzeug_server(recording_errors(
        DispatcherMiddleware(site, {"/ws": as_user(app, "carol")}), raised))
    with connect(f"ws://127.0.0.1:{port}/ws/room?x=1", open_timeout=10,
                 user_agent_header="test-agent") as ws:
        messages, code, _ = receive_all(ws)
    assert request(port, "GET", "/")[2] == b"the rest of the site"
    assert code == 1000
    env = json.loads(messages[0])
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/ws/room", "x=1")
    assert (env["REMOTE_USER"], env["AUTH_TYPE"]) == ("carol", "Cookie")
    assert (env["HTTP_USER_AGENT"], env["HTTP_HOST"]) == ("test-agent", f"127.0.0.1:{port}")
    assert "LD_LIBRARY_PATH" not in env
    # After the session werkzeug must write nothing more: a ConnectionError tells it so.
    wait_for(lambda: raised, message="the session's request to end")
    assert len(raised) == 1 and issubclass(raised[0], ConnectionError), raised
    app.close()
    assert wait_for_no_leftovers() == []


@pytest.mark.slow
def test_close_ends_every_session_and_refuses_new_ones(werkzeug_server):
    app = websocketd_py.WebSocketApp("cat", loglevel="none")
    port = werkzeug_server(DispatcherMiddleware(site, {"/cat": app}))
    with connect(f"ws://127.0.0.1:{port}/cat", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        app.close()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1001
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/cat", open_timeout=10)
    assert refused.value.response.status_code == 503
    assert wait_for_no_leftovers() == []


@pytest.mark.parametrize("options, error", [
    ({"port": 8080}, TypeError), ({"staticdir": "."}, TypeError), ({"help": True}, TypeError),
    ({"no_such_flag": 1}, TypeError), ({"binary": "yes"}, TypeError),
    ({"maxforks": True}, TypeError), ({"maxforks": "10"}, TypeError),
    ({"passenv": [1]}, TypeError), ({"status_path": 5}, TypeError),
    ({"closems": -1}, ValueError), ({"loglevel": "loud"}, ValueError),
    ({"passstderr": True, "binary": True}, ValueError), ({"basic_auth": "nocolon"}, ValueError),
])
def test_options_are_checked_like_flags(options, error):
    with pytest.raises(error):
        websocketd_py.WebSocketApp("cat", **options)


def test_a_missing_command_has_the_command_line_message():
    with pytest.raises(ValueError, match="no-such-program-here not found"):
        websocketd_py.WebSocketApp(["no-such-program-here", "arg"])


def test_serve_refuses_what_the_command_line_refuses_before_listening(tmp_path):
    """What the command line ends with exit status 4 (and 1) raises ValueError here."""
    with pytest.raises(ValueError, match="--devconsole cannot be used with --cgidir"):
        websocketd_py.serve("cat", port=0, devconsole=True, cgidir=str(tmp_path))
    with pytest.raises(ValueError, match="is not a directory"):
        websocketd_py.serve("cat", port=0, staticdir=str(tmp_path / "missing"))
