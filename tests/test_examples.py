"""Every program in examples/ through a real websocketd-py and a real WebSocket client.

The servers run from the repository root with the command lines of
examples/README.md (smaller COUNT/DELAY arguments where a program takes them),
so a broken example or a README command that no longer works fails here.
The `server` fixture proves at teardown that no process is left behind.
"""

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import parametrize_fast_first, receive_all, start_on_free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, "IEND", its CRC


def need(program):
    """Skip the test (saying why) when `program` is not on PATH."""
    if shutil.which(program) is None:
        pytest.skip(f"{program} not found on PATH")


@lru_cache(maxsize=None)
def _unsupported(flag_args):
    """True while websocketd-py still answers these flags with "not supported yet"."""
    result = subprocess.run([sys.executable, "-m", "websocketd_py", *flag_args],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    return "not supported yet" in result.stdout + result.stderr


def need_flag(flag):
    probe = {"cgidir": ("--cgidir=x",), "devconsole": ("--devconsole",)}[flag]
    if _unsupported(probe):
        pytest.skip(f"needs --{flag}")


def start(server, *args):
    """websocketd-py ARGS, started from the repository root like the README says."""
    return server(*args, cwd=ROOT)


def session(srv, path="/"):
    """Connect, read until the server closes; (messages, close code)."""
    with connect(srv.url(path), open_timeout=10) as ws:
        messages, code, _ = receive_all(ws)
    return messages, code


def http_get(srv, path="/"):
    """(status, content type, body text) of a plain GET."""
    try:
        with urllib.request.urlopen(srv.url(path, scheme="http"), timeout=10) as response:
            return (response.status, response.headers.get("Content-Type", ""),
                    response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


# --- README --------------------------------------------------------------------------

def test_readme_commands_use_websocketd_py_and_name_existing_programs():
    readme = (EXAMPLES / "README.md").read_text()
    commands = re.findall(r"^\|[^|]*\| `([^`]*)`", readme, flags=re.M)
    assert len(commands) >= 10
    for command in commands:
        if command.startswith("cc "):
            command = command.split("&& ", 1)[1]
        assert command.startswith("websocketd-py "), command
        for word in command.split():
            path = word.split("=", 1)[-1]
            if path.startswith("examples/") and not path.endswith("/count"):
                assert (ROOT / path).exists(), f"{path} in {command!r}"
                if (ROOT / path).is_file():
                    assert (ROOT / path).stat().st_mode & 0o111, f"{path} is not executable"
    assert not re.search(r"`websocketd --", readme), "a command still says websocketd"


def test_readme_first_command_serves_the_page_and_the_counter_on_one_port(server):
    # websocketd-py --port=8080 --staticdir=examples/counter examples/counter/count.sh
    srv = start(server, "--staticdir=examples/counter", "examples/counter/count.sh")
    status, content_type, page = http_get(srv, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert 'id="count"' in page and "new WebSocket(" in page
    with connect(srv.url(), open_timeout=10) as ws:  # default: 1..10, every 0.5 s
        assert [ws.recv(timeout=10), ws.recv(timeout=10)] == ["1", "2"]


# --- Counters --------------------------------------------------------------------------

COUNTERS = [("bash", "count.sh"), ("python3", "count.py"), ("node", "count.js"),
            ("perl", "count.pl"), ("ruby", "count.rb"), ("php", "count.php")]


def check_counter(server, program):
    srv = start(server, program, "3", "0.01")
    assert session(srv) == (["1", "2", "3"], 1000)
    # flushed: "1" arrives while the program still sleeps before "2"
    srv = start(server, program, "2", "60")
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=5) == "1"


@parametrize_fast_first("interpreter, script", COUNTERS, ids=[c[0] for c in COUNTERS])
def test_counter(server, interpreter, script):
    need(interpreter)
    check_counter(server, f"examples/counter/{script}")


@pytest.mark.slow
def test_counter_in_c(server, tmp_path):
    need("cc")
    binary = tmp_path / "count"
    subprocess.run(["cc", "-o", str(binary), str(EXAMPLES / "counter" / "count.c")],
                   check=True, timeout=60)
    check_counter(server, str(binary))


# --- Greeter, environment, static page -------------------------------------------------

def test_greeter_answers_each_line_and_the_devconsole_page_is_served(server):
    need_flag("devconsole")
    srv = start(server, "--devconsole", "examples/greeter/greeter.py")
    with connect(srv.url(), open_timeout=10) as ws:
        for name in ("Ann", "Bob Smith", ""):
            ws.send(name)
            assert ws.recv(timeout=10) == f"Hello, {name}!"
    status, content_type, page = http_get(srv, "/")
    assert status == 200 and content_type.startswith("text/html") and "<html" in page


@pytest.mark.slow
def test_env_dump_shows_the_cgi_variables(server):
    need_flag("devconsole")
    srv = start(server, "--devconsole", "examples/env/dump-env.sh")
    with connect(srv.url("/some/path?name=value"), open_timeout=10,
                 additional_headers={"X-Student": "Ann"}) as ws:
        lines, code, _ = receive_all(ws)
    assert code == 1000
    assert lines == sorted(lines)
    env = dict(line.split("=", 1) for line in lines)
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "name=value"
    assert env["SCRIPT_NAME"] == "/"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_SOFTWARE"].startswith("websocketd/")
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["HTTP_X_STUDENT"] == "Ann"
    assert "PATH" in env and "HOME" not in env  # only --passenv variables pass through


@pytest.mark.slow
def test_static_page_and_the_endpoint_share_one_port(server):
    srv = start(server, "--staticdir=examples/static", "examples/greeter/greeter.py")
    status, content_type, page = http_get(srv, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert "Say your name" in page and 'href="style.css"' in page
    status, content_type, css = http_get(srv, "/style.css")
    assert status == 200 and content_type.startswith("text/css") and "body" in css
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send("Ann")
        assert ws.recv(timeout=10) == "Hello, Ann!"


# --- Chat and tail: following files ----------------------------------------------------

@pytest.mark.slow
def test_chat_room_two_clients_see_both_lines(server, tmp_path):
    room = tmp_path / "room.log"
    srv = start(server, "--staticdir=examples/chat", "examples/chat/chat.sh", str(room))
    assert "ws.send(line)" in http_get(srv, "/")[2]
    with connect(srv.url(), open_timeout=10) as ann, connect(srv.url(), open_timeout=10) as bob:
        ann.send("ann: hi")
        assert [ann.recv(timeout=10), bob.recv(timeout=10)] == ["ann: hi"] * 2
        bob.send("bob: hello")
        assert [ann.recv(timeout=10), bob.recv(timeout=10)] == ["bob: hello"] * 2
    assert room.read_text() == "ann: hi\nbob: hello\n"
    # both chat.sh copies end, and their background `tail -f` with them
    wait_for(lambda: srv.session_pids() == [], message="the chat processes to end")


@pytest.mark.slow
def test_broadcast_room_one_process_names_each_client(server):
    need_flag("devconsole")
    srv = start(server, "--devconsole", "--broadcast", "--broadcast-ids",
                "examples/broadcast/room.py")
    with connect(srv.url(), open_timeout=10) as ann:
        ann.send("Ann")
        assert ann.recv(timeout=10) == "* Ann joined"
        with connect(srv.url(), open_timeout=10) as bob:
            bob.send("Bob")
            assert [ann.recv(timeout=10), bob.recv(timeout=10)] == ["* Bob joined"] * 2
            ann.send("hi Bob")
            bob.send("Ann: fake")  # bob cannot write as Ann
            for ws in (ann, bob):
                assert sorted(ws.recv(timeout=10) for _ in range(2)) == [
                    "Ann: hi Bob", "Bob: Ann: fake"]
            assert len(srv.session_pids()) == 1


@pytest.mark.slow
def test_tail_sends_the_last_lines_then_each_appended_line(server, tmp_path):
    need("tail")
    need_flag("devconsole")
    log = tmp_path / "app.log"
    log.write_text("".join(f"old {n}\n" for n in range(1, 13)))
    srv = start(server, "--devconsole", "examples/tail/tail.sh", str(log))
    with connect(srv.url(), open_timeout=10) as ws:
        assert [ws.recv(timeout=10) for _ in range(10)] == [f"old {n}" for n in range(3, 13)]
        with log.open("a") as f:
            f.write("new line\n")
        assert ws.recv(timeout=10) == "new line"


# --- JSON, binary ----------------------------------------------------------------------

@pytest.mark.slow
def test_json_each_message_is_one_object(server):
    srv = start(server, "--staticdir=examples/json", "examples/json/stats.py", "3", "0.01")
    assert "JSON.parse(event.data)" in http_get(srv, "/")[2]
    messages, code = session(srv)
    assert code == 1000
    objects = [json.loads(message) for message in messages]
    assert [o["n"] for o in objects] == [1, 2, 3]
    for o in objects:
        assert isinstance(o["time"], float)
        assert o["load"] is None or len(o["load"]) == 3


@pytest.mark.slow
def test_binary_each_message_is_one_whole_png(server):
    srv = start(server, "--binary", "--staticdir=examples/binary",
                "examples/binary/frames.py", "4", "0.05")
    assert 'binaryType = "blob"' in http_get(srv, "/")[2]
    messages, code = session(srv)
    assert code == 1000
    assert len(messages) == 4
    for image in messages:
        assert isinstance(image, bytes)
        assert image.startswith(PNG_SIGNATURE) and image.endswith(PNG_IEND)
        assert image.count(b"IEND") == 1
        assert image[12:24] == b"IHDR" + (32).to_bytes(4, "big") * 2  # 32x32 pixels


# --- --dir -----------------------------------------------------------------------------

@pytest.mark.slow
def test_dir_picks_the_script_from_the_url(server):
    need_flag("devconsole")
    srv = start(server, "--devconsole", "--dir=examples/dir")
    assert session(srv, "/sub/where.sh/extra/path?x=1") == (
        ["SCRIPT_NAME=/sub/where.sh", "PATH_INFO=/extra/path", "QUERY_STRING=x=1"], 1000)
    with connect(srv.url("/echo.sh"), open_timeout=10) as ws:
        ws.send("  spaces and a \\backslash kept  ")
        assert ws.recv(timeout=10) == "  spaces and a \\backslash kept  "
    with connect(srv.url("/upper.py"), open_timeout=10) as ws:
        ws.send("hello, world")
        assert ws.recv(timeout=10) == "HELLO, WORLD"
    with connect(srv.url("/time.sh"), open_timeout=10) as ws:
        assert re.fullmatch(r"\d\d:\d\d:\d\d", ws.recv(timeout=10))
    with pytest.raises(InvalidStatus) as refused:
        connect(srv.url("/no-such-script.sh"), open_timeout=10)
    assert refused.value.response.status_code == 404


# --- --cgidir --------------------------------------------------------------------------

def _cgi_server(server):
    """--cgidir alone, on a port picked here (the test below checks the URL it logs)."""
    return start_on_free_port(server, "--cgidir=examples/cgi", cwd=ROOT, timeout=15)


@pytest.mark.slow
def test_cgi_scripts_answer_plain_http(server):
    need_flag("cgidir")
    srv = _cgi_server(server)
    status, content_type, body = http_get(srv, "/hello.sh?x=1")
    assert (status, content_type) == (200, "text/plain")
    assert body.splitlines() == ["Hello from a CGI script!", "QUERY_STRING=x=1"]
    status, content_type, page = http_get(srv, "/form.py")
    assert status == 200 and content_type.startswith("text/html")
    assert '<form method="get">' in page and "Hello," not in page
    status, _, page = http_get(srv, "/form.py?name=%3Cb%3EAnn+Lee")
    assert status == 200 and "<p>Hello, &lt;b&gt;Ann Lee!</p>" in page


@pytest.mark.slow
def test_cgidir_alone_logs_the_url_to_open(server):
    need_flag("cgidir")
    srv = _cgi_server(server)
    srv.wait_log(rf"http://127\.0\.0\.1:{srv.port}/")
