"""Logs in websocketd's line format (SPEC §6), on a real server and in-process.

    Tue, 24 Nov 2026 16:58:12 +0000 | ACCESS | session    | url:'…' id:'…' | CONNECT

Every line a real server prints is checked against one strict pattern; the
`Log` class is checked in-process for the threshold, the padding, one entry
per line, and whole lines when many threads write at once.
"""

import datetime
import email.utils
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from websocketd_py import __version__
from websocketd_py.log import LEVELS, Log

from helpers import receive_all, start_on_free_port, wait_for

SH = os.path.abspath(shutil.which("sh"))
ORIGIN = "http://client.example"

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
LINE = re.compile(
    rf"^(?P<time>{_DAY}, \d\d {_MONTH} \d{{4}} \d\d:\d\d:\d\d [+-]\d{{4}})"
    r" \| (?P<level>DEBUG |TRACE |ACCESS|INFO  |ERROR |FATAL )"
    r" \| (?P<category>[a-z]+ *)"
    r" \| (?P<fields>(?:[a-z]+:'(?:[^'\\\n]|\\.)*'(?: [a-z]+:'(?:[^'\\\n]|\\.)*')*)?)"
    r" \| (?P<message>[^\n]*)$")
FIELD = re.compile(r"([a-z]+):'((?:[^'\\]|\\.)*)'")  # \\ and \' escaped in values


def parse_line(line):
    """A log line as a dict (time, level, category, fields, message), or the test fails."""
    match = LINE.match(line)
    assert match, f"not a websocketd log line: {line!r}"
    category = match["category"]
    assert len(category) == max(10, len(category.rstrip(" "))), \
        f"category not padded to 10: {line!r}"
    fields = FIELD.findall(match["fields"])
    assert " ".join(f"{k}:'{v}'" for k, v in fields) == match["fields"]
    when = email.utils.parsedate_to_datetime(match["time"])
    # Round trip: the weekday matches the date, and the zone is numeric.
    assert when.strftime("%a, %d %b %Y %H:%M:%S %z") == match["time"]
    return {"time": when, "level": match["level"].rstrip(), "category": category.rstrip(),
            "keys": [k for k, _ in fields], "fields": dict(fields),
            "message": match["message"], "line": line}


def plain_get(srv, path="/"):
    try:
        with urllib.request.urlopen(srv.url(path, scheme="http"), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


# -- a real server ---------------------------------------------------------------------


@pytest.fixture
def session_log(server):
    """One full session (stdout, stderr, exit) and one plain HTTP request; every log line."""
    srv = server("sh", "-c", "echo $$; echo oops >&2; printf 'tab\\there\\rcr\\033[31mesc\\n' >&2")
    with connect(srv.url("/?x=1"), origin=ORIGIN, proxy=None, open_timeout=10) as ws:
        messages, code, _ = receive_all(ws)
    assert code == 1000
    srv.wait_log(r"\| DISCONNECT$")
    assert plain_get(srv) == 404
    srv.wait_log(r"\| 404 ")
    assert srv.stop() == 0
    assert srv.stderr_lines == []
    return srv, messages, [parse_line(line) for line in srv.lines]


def test_every_line_has_websocketd_shape_and_a_current_timestamp(session_log):
    srv, _, entries = session_log
    now = datetime.datetime.now(datetime.timezone.utc)
    assert len(entries) >= 8
    for entry in entries:
        assert abs((entry["time"] - now).total_seconds()) < 120, entry["line"]


@pytest.mark.slow
def test_startup_lines_say_what_is_served_and_where(session_log):
    srv, _, entries = session_log
    first, second = entries[0], entries[1]
    assert (first["level"], first["category"], first["fields"]) == ("INFO", "server", {})
    assert first["message"] == (
        f"Serving using application   : {SH} -c "
        "echo $$; echo oops >&2; printf 'tab\\there\\rcr\\033[31mesc\\n' >&2")
    assert (second["level"], second["category"], second["fields"]) == ("INFO", "server", {})
    assert second["message"] == f"Starting WebSocket server   : ws://127.0.0.1:{srv.port}/"


def test_session_lines_connect_stderr_disconnect(session_log):
    srv, messages, entries = session_log
    url = f"http://127.0.0.1:{srv.port}/?x=1"
    child_pid = messages[0]
    assert child_pid.isdigit()

    upgrades = [e for e in entries if e["category"] == "http" and e["message"].startswith("101")]
    assert len(upgrades) == 1
    assert upgrades[0]["level"] == "ACCESS"
    assert upgrades[0]["message"] == "101 Switching Protocols"
    assert upgrades[0]["fields"] == {"url": url, "remote": "127.0.0.1"}

    connects = [e for e in entries if e["message"] == "CONNECT"]
    assert len(connects) == 1
    connect_entry = connects[0]
    assert (connect_entry["level"], connect_entry["category"]) == ("ACCESS", "session")
    assert connect_entry["keys"] == ["url", "id", "remote", "command", "origin"]
    fields = connect_entry["fields"]
    assert fields["url"] == url and fields["remote"] == "127.0.0.1"
    assert fields["command"] == SH and fields["origin"] == ORIGIN
    assert re.fullmatch(r"\d{10,}", fields["id"])

    disconnects = [e for e in entries if e["message"] == "DISCONNECT"]
    assert len(disconnects) == 1
    disconnect = disconnects[0]
    assert (disconnect["level"], disconnect["category"]) == ("ACCESS", "session")
    assert disconnect["keys"] == ["url", "id", "remote", "command", "origin", "pid", "exit",
                                  "close"]
    assert {k: disconnect["fields"][k] for k in fields} == fields
    assert disconnect["fields"]["pid"] == child_pid
    assert disconnect["fields"]["exit"] == "exit status 0"
    assert disconnect["fields"]["close"] == "1000"

    stderr = [e for e in entries if e["category"] == "stderr"]
    assert [e["message"] for e in stderr] == ["oops", "tab here cr [31mesc"]
    for entry in stderr:
        assert entry["level"] == "ERROR"
        assert entry["fields"] == {**fields, "pid": child_pid}

    order = [e["line"] for e in entries]
    assert order.index(upgrades[0]["line"]) < order.index(connect_entry["line"]) \
        < order.index(stderr[0]["line"]) < order.index(disconnect["line"])


def test_plain_http_request_has_an_access_line(session_log):
    srv, _, entries = session_log
    plain = [e for e in entries if e["category"] == "http" and e["message"].startswith("404")]
    assert len(plain) == 1
    assert plain[0]["level"] == "ACCESS"
    assert plain[0]["fields"] == {"url": f"http://127.0.0.1:{srv.port}/", "remote": "127.0.0.1"}


@pytest.mark.slow
def test_shutdown_is_logged(session_log):
    _, _, entries = session_log
    assert [(e["level"], e["category"], e["message"]) for e in entries[-2:]] == [
        ("INFO", "server", "SIGTERM received: shutting down"), ("INFO", "server", "stopped")]


@pytest.mark.slow
def test_failed_exit_is_in_the_disconnect_line(server):
    srv = server("sh", "-c", "exit 3")
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert receive_all(ws)[:2] == ([], 1011)
    entry = parse_line(srv.wait_log(r"\| DISCONNECT$").string)
    assert entry["fields"]["exit"] == "exit status 3"
    assert entry["fields"]["close"] == "1011"
    assert entry["fields"]["origin"] in ("", "file:")  # no Origin sent (websocketd: 'file:')


@pytest.mark.slow
def test_timestamps_use_the_local_numeric_zone(server):
    srv = server("echo", "hi", env={**os.environ, "TZ": "XST-5:30"})
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert receive_all(ws)[:2] == (["hi"], 1000)
    entry = parse_line(srv.wait_log(r"\| CONNECT$").string)
    assert entry["time"].utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert entry["line"][26:31] == "+0530"
    assert abs((entry["time"] - datetime.datetime.now(datetime.timezone.utc))
               .total_seconds()) < 120
    assert all(parse_line(line)["line"][26:31] == "+0530" for line in srv.lines)


@pytest.mark.slow
def test_refused_upgrade_is_logged_at_error(server):
    srv = server("--origin=http://good.example", "echo", "hi")
    with pytest.raises(InvalidStatus) as refused:
        connect(srv.url(), origin="http://evil.example", proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 403
    entry = parse_line(srv.wait_log(r"\| ERROR  \| http ").string)
    assert "refused" in entry["message"] and "origin" in entry["message"]
    assert entry["fields"]["remote"] == "127.0.0.1"
    assert not any(" | CONNECT" in line for line in srv.lines)


@pytest.mark.slow
def test_launch_failure_is_logged_at_error(server, tmp_path):
    script = tmp_path / "vanishing.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    srv = server(str(script))
    script.unlink()  # checked at start, gone by the time a client connects
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        _, code, _ = receive_all(ws)
    assert code == 1011
    entry = parse_line(srv.wait_log(r"\| ERROR  \| process ").string)
    assert str(script) in entry["message"]
    assert entry["fields"]["command"] == str(script)
    srv.wait_log(r"\| DISCONNECT$")


def test_loglevel_none_prints_nothing_for_a_whole_session(server):
    srv = start_on_free_port(server, "--loglevel=none", "sh", "-c", "echo hi; echo oops >&2")
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert receive_all(ws)[:2] == (["hi"], 1000)
    assert plain_get(srv) == 404
    assert srv.stop() == 0
    assert srv.lines == []
    assert srv.stderr_lines == []


@pytest.mark.slow
def test_loglevel_error_shows_stderr_but_no_access_lines(server):
    srv = start_on_free_port(server, "--loglevel=error", "sh", "-c", "echo hi; echo oops >&2")
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert receive_all(ws)[:2] == (["hi"], 1000)
    assert plain_get(srv) == 404
    srv.wait_log(r"\| ERROR  \| stderr .* \| oops$")
    assert srv.stop() == 0
    entries = [parse_line(line) for line in srv.lines]
    assert [(e["level"], e["category"], e["message"]) for e in entries] == [
        ("ERROR", "stderr", "oops")]


@pytest.mark.slow
def test_loglevel_debug_shows_the_environment(server):
    srv = server("--loglevel=debug", "sh", "-c", "echo hi")
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        assert receive_all(ws)[:2] == (["hi"], 1000)
    srv.wait_log(r"\| DISCONNECT$")
    entries = [parse_line(line) for line in srv.lines]
    connect_entry = next(e for e in entries if e["message"] == "CONNECT")
    env = {e["message"].split("=", 1)[0]: e["message"].split("=", 1)[1]
           for e in entries if e["category"] == "env"}
    for entry in (e for e in entries if e["category"] == "env"):
        assert entry["level"] == "DEBUG"
        assert entry["fields"]["id"] == connect_entry["fields"]["id"]
    assert env["SERVER_SOFTWARE"].startswith("websocketd/")
    assert __version__ in env["SERVER_SOFTWARE"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert "HTTP_SEC_WEBSOCKET_KEY" in env


# -- Log, in-process ---------------------------------------------------------------------


def entries_of(stream):
    return [parse_line(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("threshold", [*LEVELS, "none"])
def test_threshold_keeps_this_level_and_more_severe(threshold):
    stream = io.StringIO()
    log = Log(threshold, stream)
    for level in LEVELS:
        log.write(level, "test", f"at {level}")
    order = list(LEVELS) + ["none"]
    expected = [lvl for lvl in LEVELS if order.index(lvl) >= order.index(threshold)]
    assert [e["message"] for e in entries_of(stream)] == [f"at {lvl}" for lvl in expected]
    assert [e["level"] for e in entries_of(stream)] == [lvl.upper() for lvl in expected]
    assert [lvl for lvl in LEVELS if log.enabled(lvl)] == expected


def test_default_level_is_access():
    stream = io.StringIO()
    log = Log(stream=stream)
    log.write("trace", "test", "hidden")
    log.write("access", "test", "shown")
    assert [e["message"] for e in entries_of(stream)] == ["shown"]


def test_padding_and_fields_layout():
    stream = io.StringIO()
    log = Log("debug", stream)
    log.write("info", "server", "m1")
    log.write("access", "session", "m2", (("url", "http://h/?a=1"), ("pid", 42)))
    log.write("error", "averylongcategory", "m3")
    tails = [line.split(" | ", 1)[1] for line in stream.getvalue().splitlines()]
    assert tails == [
        "INFO   | server     |  | m1",
        "ACCESS | session    | url:'http://h/?a=1' pid:'42' | m2",
        "ERROR  | averylongcategory |  | m3",
    ]
    for line in stream.getvalue().splitlines():
        parse_line(line)


def test_context_adds_fields_in_order_and_uses_the_right_levels():
    stream = io.StringIO()
    log = Log("debug", stream)
    request = log.context(url="http://h/", id="7")
    process = request.with_fields(pid=9)
    request.access("session", "CONNECT")
    process.debug("env", "A=1")
    process.info("session", "i")
    process.error("stderr", "e")
    got = [(e["level"], e["category"], e["keys"], e["message"]) for e in entries_of(stream)]
    assert got == [
        ("ACCESS", "session", ["url", "id"], "CONNECT"),
        ("DEBUG", "env", ["url", "id", "pid"], "A=1"),
        ("INFO", "session", ["url", "id", "pid"], "i"),
        ("ERROR", "stderr", ["url", "id", "pid"], "e"),
    ]
    assert request.fields == (("url", "http://h/"), ("id", "7"))  # with_fields made a copy


def test_control_characters_in_messages_are_replaced_one_entry_one_line():
    stream = io.StringIO()
    log = Log("debug", stream)
    controls = "".join(chr(c) for c in [*range(0x20), 0x7F])
    log.write("error", "stderr", f"a{controls}b\r\nc\n")
    log.write("error", "stderr", "déjà vu 日本 ✓")
    text = stream.getvalue()
    assert text.count("\n") == 2 and text.endswith("\n")
    entries = entries_of(stream)
    assert entries[0]["message"] == "a" + " " * 33 + "b  c "
    assert entries[1]["message"] == "déjà vu 日本 ✓"


def test_non_string_message_is_written():
    stream = io.StringIO()
    Log("debug", stream).write("error", "test", ValueError("x\ny"))
    assert entries_of(stream)[0]["message"] == "x y"


def test_control_characters_in_field_values_are_replaced_too():
    stream = io.StringIO()
    Log("debug", stream).write("access", "session", "CONNECT",
                               (("command", "/srv/a\nb"), ("origin", "x\ry\x1b[2J")))
    assert stream.getvalue().count("\n") == 1
    assert entries_of(stream)[0]["fields"] == {"command": "/srv/a b", "origin": "x y [2J"}


def test_quotes_in_field_values_cannot_forge_another_field():
    stream = io.StringIO()
    Log("debug", stream).write("access", "session", "CONNECT", (
        ("origin", "http://a' remote:'10.9.8.7"), ("remote", "127.0.0.1"),
        ("command", "C:\\odd\\")))
    line = stream.getvalue()
    assert "origin:'http://a\\' remote:\\'10.9.8.7' remote:'127.0.0.1'" in line
    entry = entries_of(stream)[0]
    assert entry["keys"] == ["origin", "remote", "command"]
    assert entry["fields"]["remote"] == "127.0.0.1"
    assert entry["fields"]["command"] == "C:\\\\odd\\\\"  # as written: escaped


def test_unicode_line_breaks_in_messages_are_replaced():
    stream = io.StringIO()
    Log("debug", stream).write("error", "stderr", "a\x85b\u2028c\u2029d")
    assert len(stream.getvalue().splitlines()) == 1


def test_timestamp_follows_tz(monkeypatch):
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    try:
        for tz, offset in [("UTC0", "+0000"), ("XST-5:30", "+0530"), ("YST8", "-0800")]:
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            stream = io.StringIO()
            Log("debug", stream).write("info", "test", "t")
            entry = entries_of(stream)[0]
            assert entry["line"][26:31] == offset
            now = datetime.datetime.now(datetime.timezone.utc)
            assert abs((entry["time"] - now).total_seconds()) < 60
    finally:
        monkeypatch.undo()
        time.tzset()


class ChoppyStream(io.StringIO):
    """Writes every string in three pieces and lets other threads run in between
    (as a slow pipe would), so two unlocked writers would interleave their lines."""

    def write(self, text):
        third = len(text) // 3 + 1
        for start in range(0, len(text), third):
            super().write(text[start:start + third])
            time.sleep(0.0001)  # releases the GIL: another writer may run here
        return len(text)


@pytest.mark.slow
def test_many_threads_writing_never_interleave_lines():
    stream = ChoppyStream()
    log = Log("debug", stream)
    threads_count, per_thread = 10, 100
    start = threading.Barrier(threads_count)

    def writer(n):
        context = log.context(thread=n)
        start.wait()
        for i in range(per_thread):
            context.error("stress", f"thread {n} line {i} " + "x" * (i % 40))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    entries = entries_of(stream)
    assert len(entries) == threads_count * per_thread
    seen = set()
    for entry in entries:
        match = re.fullmatch(r"thread (\d+) line (\d+) x*", entry["message"])
        assert match, entry["line"]
        n, i = int(match[1]), int(match[2])
        assert entry["fields"] == {"thread": str(n)}
        assert entry["message"].count("x") == i % 40
        seen.add((n, i))
    assert len(seen) == threads_count * per_thread


def test_closed_stream_does_not_raise():
    stream = io.StringIO()
    stream.close()
    Log("debug", stream).write("error", "stderr", "nobody listens")  # must not raise


def _main_thread_in_write(pid):
    """True while the main thread of `pid` sleeps in write(2) (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            if "pipe_write" in f.read():
                return True
        with open(f"/proc/{pid}/syscall") as f:
            number = f.read().split()[0]
    except (OSError, IndexError):
        return False
    import platform
    return number == {"x86_64": "1", "aarch64": "64", "i686": "4"}.get(platform.machine())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to fill the pipe")
@pytest.mark.timeout(60)
def test_second_signal_while_stdout_is_blocked_does_not_deadlock():
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "websocketd_py", "--port=0",
                             "--address=127.0.0.1", "echo", "hi"],
                            stdout=write_end, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    fill = drainer = None
    seen = bytearray()

    def read_until(predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate(bytes(seen)):
            remaining = deadline - time.monotonic()
            ready = select.select([read_end], [], [], max(remaining, 0))[0]
            chunk = os.read(read_end, 65536) if ready else b""
            if not chunk:
                pytest.fail("expected log output did not come; got:\n" + seen.decode())
            seen.extend(chunk)

    try:
        read_until(lambda text: b"ws://" in text)
        port = int(re.search(rb"ws://127\.0\.0\.1:(\d+)/", bytes(seen)).group(1))
        with connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=10) as ws:
            assert receive_all(ws)[:2] == (["hi"], 1000)  # handlers are installed by now
        read_until(lambda text: text.endswith(b"| DISCONNECT\n"))
        # Fill the (now empty) pipe through a second, non-blocking description of it.
        fill = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(fill, b"." * 4096)
        except BlockingIOError:
            pass
        proc.send_signal(signal.SIGTERM)  # its log line now blocks on the full pipe
        wait_for(lambda: _main_thread_in_write(proc.pid), timeout=5,
                 message="the first signal's log line to block on the full pipe")
        proc.send_signal(signal.SIGTERM)  # a second Ctrl-C / SIGTERM
        os.close(fill)
        os.close(write_end)
        fill = write_end = None
        drained = []
        drainer = threading.Thread(target=lambda: drained.extend(iter(
            lambda: os.read(read_end, 65536), b"")), daemon=True)
        drainer.start()  # the reader catches up: the server may go on
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("server hung after a second SIGTERM while its stdout was blocked")
        assert status in (0, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (fill, write_end):
            if fd is not None:
                os.close(fd)
        if drainer is not None:
            drainer.join(5)
        os.close(read_end)
