"""One connection, one process: the line rules, binary mode, limits, close codes (SPEC §2–3)."""

import os
import json
import socket
import struct
import sys
import threading
import time

import pytest
from websockets.sync.client import connect

from helpers import (children_of, descendants, echo_through_binary_cat, process_state,
                     raw_handshake, read_until_eof, receive_all, request, wait_for)

PY = sys.executable


def run_program(server, *program, path="/", flags=()):
    srv = server(*flags, *program)
    with connect(srv.url(path), open_timeout=10) as ws:
        return receive_all(ws)


def test_each_line_is_one_message_and_the_close_code_says_success(server):
    messages, code, _ = run_program(server, "printf", "one\ntwo\r\n\nthree\r\r\n")
    assert messages == ["one", "two", "", "three\r"]
    assert code == 1000


@pytest.mark.slow
def test_last_line_without_newline_is_delivered(server):
    messages, code, _ = run_program(server, "printf", "first\nlast without newline")
    assert messages == ["first", "last without newline"]
    assert code == 1000


def test_exit_status_becomes_1011_with_reason(server):
    messages, code, reason = run_program(server, "sh", "-c", "echo bye; exit 3")
    assert messages == ["bye"]
    assert (code, reason) == (1011, "exit status 3")


@pytest.mark.slow
def test_killed_process_reports_the_signal(server):
    _, code, reason = run_program(server, "sh", "-c", "kill -9 $$")
    assert (code, reason) == (1011, "killed by signal 9")


@pytest.mark.slow
def test_invalid_utf8_is_replaced_never_sent_as_invalid_text(server):
    messages, _, _ = run_program(server, "printf", "ok \\377\\376 end\n\\303\\251\n")
    assert messages == ["ok \ufffd\ufffd end", "é"]


def test_client_messages_become_lines_embedded_newlines_kept(server):
    srv = server("cat")
    with connect(srv.url()) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send("a\nb")
        assert [ws.recv(timeout=10), ws.recv(timeout=10)] == ["a", "b"]
        ws.send("")
        assert ws.recv(timeout=10) == ""


@pytest.mark.slow
def test_binary_message_in_text_mode_is_dropped_and_logged(server):
    srv = server("cat")
    with connect(srv.url()) as ws:
        ws.send(b"\x00\x01binary")
        ws.send("after")
        assert ws.recv(timeout=10) == "after"
    srv.wait_log(r"ERROR .*binary message dropped")


def test_binary_mode_one_mebibyte_both_ways_through_cat(server):
    srv = server("--binary", "cat")
    payload = os.urandom(1024 * 1024)
    with connect(srv.url(), max_size=None) as ws:
        assert echo_through_binary_cat(ws, payload) == payload
        ws.send("text gets a newline")
        assert ws.recv(timeout=10) == b"text gets a newline\n"


@pytest.mark.slow
def test_binary_mode_a_write_after_a_quiet_spell_is_one_message(server):
    """Text mode shrinks the reads of a quiet program (`readsize.ReadSize`);
    binary mode must not: there each read of stdout is one message."""
    program = ("import os, sys\nos.write(1, b'ready')\nsys.stdin.buffer.readline()\n"
               "os.write(1, b'x' * 10000)\nsys.stdin.buffer.readline()\n")
    srv = server("--binary", PY, "-c", program)
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=10) == b"ready"
        ws.send(b"go\n")
        assert ws.recv(timeout=10) == b"x" * 10000
        ws.send(b"end\n")


@pytest.mark.slow
def test_text_mode_a_long_burst_after_a_quiet_spell_comes_through_whole(server):
    program = ("import os, sys\nos.write(1, b'ready\\n')\nsys.stdin.buffer.readline()\n"
               "os.write(1, b'y' * 200000 + b'\\n' + b'z\\n' * 1000)\n")
    srv = server(PY, "-c", program)
    with connect(srv.url(), max_size=None) as ws:
        assert ws.recv(timeout=10) == "ready"
        ws.send("go")
        assert ws.recv(timeout=10) == "y" * 200000
        assert [ws.recv(timeout=10) for _ in range(1000)] == ["z"] * 1000


def client_frame(opcode, payload, fin=True):
    """A client frame by hand, masked with an all-zero mask (the payload goes as it is)."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        head = struct.pack("!BB", first, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    return head + b"\0" * 4 + payload


def read_frame(sock, buffered):
    """(opcode, payload, the bytes after it) of the next server frame (unmasked, < 64 KiB)."""
    while len(buffered) < 4 or len(buffered) < _frame_size(buffered):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        buffered += chunk
    size = _frame_size(buffered)
    start = 4 if buffered[1] == 126 else 2
    return buffered[0] & 0x0F, buffered[start:size], buffered[size:]


def _frame_size(data):
    length = data[1] & 0x7F
    return 4 + struct.unpack("!H", data[2:4])[0] if length == 126 else 2 + length


@pytest.mark.slow
def test_a_fragmented_binary_message_reaches_the_program_in_one_write(server):
    """The program (read sizes, one per line) gets the message whole, though its first
    fragment was read, and a ping after it answered, before the rest was sent."""
    reads = ("import os\nos.write(1, b'ready\\n')\nwhile True:\n"
             "    data = os.read(0, 1 << 20)\n    if not data: break\n"
             "    os.write(1, b'%d\\n' % len(data))\n")  # one write per line: one message
    srv = server("--binary", PY, "-c", reads)
    sock, head, rest = raw_handshake(srv.port)
    assert " 101 " in head
    opcode, payload, rest = read_frame(sock, rest)
    assert (opcode, payload) == (0x2, b"ready\n")  # the program reads stdin from now on
    sock.sendall(client_frame(0x2, b"a" * 1000, fin=False) + client_frame(0x9, b"barrier"))
    opcode, payload, rest = read_frame(sock, rest)
    assert (opcode, payload) == (0xA, b"barrier")  # the first fragment was read by now
    sock.sendall(client_frame(0x0, b"b" * 3000, fin=False) + client_frame(0x0, b"c", fin=True))
    opcode, payload, rest = read_frame(sock, rest)
    assert (opcode, payload) == (0x2, b"4001\n")
    sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
    sock.close()


def test_message_over_maxframesize_closes_with_1009(server):
    srv = server("--maxframesize=1000", "cat")
    with connect(srv.url()) as ws:
        ws.send("x" * 900)
        assert ws.recv(timeout=10) == "x" * 900
        ws.send("y" * 1001)
        _, code, _ = receive_all(ws)
    assert code == 1009


@pytest.mark.slow
def test_compression_is_not_negotiated_by_default(server):
    srv = server("cat")
    with connect(srv.url(), compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


@pytest.mark.slow
def test_sends_are_serialised_while_pings_arrive(server):
    """Pongs (reader thread) and data (writer thread) never cut into each other's frames."""
    srv = server("seq", "1", "200000")
    with connect(srv.url(), max_queue=None) as ws:
        stop = threading.Event()

        def ping_storm():
            while not stop.is_set():
                try:
                    ws.ping(os.urandom(8))
                except Exception:
                    return
        pinger = threading.Thread(target=ping_storm)
        pinger.start()
        try:
            messages, code, _ = receive_all(ws, timeout=30)
        finally:
            stop.set()
            pinger.join()
    assert code == 1000
    assert messages == [str(n) for n in range(1, 200001)]


@pytest.mark.slow
def test_no_stray_http_response_after_the_session(server):
    srv = server("echo", "hi")
    sock, head, rest = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    data = rest
    while len(data) < 8:  # text frame "hi" then the close frame 1000
        data += sock.recv(4096)
    assert data[:4] == b"\x81\x02hi"
    assert data[4:8] == b"\x88\x02\x03\xe8"
    # answer the close (masked, code 1000), then the server must only close the TCP stream
    sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
    trailing = read_until_eof(sock, data[8:])
    sock.close()
    assert trailing == b"", f"bytes after the close frame: {trailing!r}"
    srv.wait_log(r"101 Switching Protocols")


def test_handshake_with_bad_key_or_version_gets_400_and_no_process(server):
    srv = server("cat")
    for extra_headers in ("Sec-WebSocket-Key: short\r\n", "Sec-WebSocket-Version: 8\r\n"):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        key = "" if "Key" in extra_headers else "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        version = "" if "Version" in extra_headers else "Sec-WebSocket-Version: 13\r\n"
        sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\n{key}{version}{extra_headers}\r\n").encode())
        response = read_until_eof(sock)
        sock.close()
        assert response.startswith(b"HTTP/1.1 400"), response
    assert children_of(srv.proc.pid) == []


@pytest.mark.slow
def test_plain_http_to_the_endpoint_is_websocketds_404_saying_a_websocket_client_is_needed(
        server):
    import urllib.error
    import urllib.request
    srv = server("cat")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(srv.url("/", "http"), timeout=10)
    assert error.value.code == 404
    body = error.value.read()
    assert body.startswith(b"404 page not found\n") and b"WebSocket client" in body


def test_maxforks_refuses_with_429_before_any_process(server):
    srv = server("--maxforks=1", "cat")
    with connect(srv.url()) as first:
        first.send("one")
        assert first.recv(timeout=10) == "one"
        with pytest.raises(Exception) as refused:
            connect(srv.url(), open_timeout=10)
        assert "429" in str(refused.value)
        assert len(children_of(srv.proc.pid)) == 1
    # the slot comes back once the first session is over (DISCONNECT is logged after that)
    srv.wait_log(r"DISCONNECT")
    with connect(srv.url()) as second:
        second.send("two")
        assert second.recv(timeout=10) == "two"


def test_stderr_is_logged_not_sent(server):
    messages, _, _ = run_program(server, "sh", "-c", "echo out; echo 'oops: bad' >&2")
    assert messages == ["out"]


@pytest.mark.slow
def test_stderr_lines_reach_the_log(server):
    srv = server("sh", "-c", "echo 'oops: bad' >&2; echo done")
    with connect(srv.url()) as ws:
        receive_all(ws)
    srv.wait_log(r"\| ERROR  \| stderr     \| .* pid:'\d+' \| oops: bad$")


def test_passstderr_tags_every_line_as_json(server):
    import json
    messages, code, _ = run_program(
        server, "sh", "-c", "echo out; echo err >&2", flags=("--passstderr",))
    decoded = sorted(map(json.loads, messages), key=lambda m: m["stream"])
    assert decoded == [{"stream": "stderr", "data": "err"}, {"stream": "stdout", "data": "out"}]
    assert code == 1000


@pytest.mark.slow
def test_backpressure_slow_client_blocks_the_process(server):
    """A client that stops reading: `yes` ends up blocked on a full pipe, server memory stays small."""
    srv = server("yes")
    with connect(srv.url(), max_queue=1, close_timeout=1) as ws:
        ws.recv(timeout=10)
        child = wait_for(lambda: children_of(srv.proc.pid), message="yes started")[0]

        def blocked_on_pipe():
            with open(f"/proc/{child}/wchan") as f:
                return "pipe_write" in f.read()
        wait_for(blocked_on_pipe, timeout=20, message="yes blocked writing its pipe")
        rss_kib = int(open(f"/proc/{srv.proc.pid}/statm").read().split()[1]) * 4
        assert rss_kib < 200_000, f"server RSS grew to {rss_kib} KiB"


@pytest.mark.slow
def test_backpressure_slow_process_stops_reading_the_client(server):
    """A process that never reads stdin: the client's sends stall, server memory stays small."""
    srv = server("sleep", "1000")
    with connect(srv.url()) as ws:
        sent = [0]
        chunk = "z" * 65536

        def flood():
            try:
                while sent[0] < 10_000:
                    ws.send(chunk)
                    sent[0] += 1
            except Exception:
                pass
        threading.Thread(target=flood, daemon=True).start()

        def stalled():
            before = sent[0]
            time.sleep(0.3)
            return before > 0 and sent[0] == before
        wait_for(stalled, timeout=20, message="the client's sends to stall")
        assert sent[0] < 2000, "the server kept reading what the process never took"
        rss_kib = int(open(f"/proc/{srv.proc.pid}/statm").read().split()[1]) * 4
        assert rss_kib < 200_000, f"server RSS grew to {rss_kib} KiB"
        # the client vanishes (TCP reset) while the server waits for the process:
        # the session still ends and the process is stopped
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # shutdown wakes the flood thread blocked in send (a close alone would not, and the
        # socket, still in use, would never be released); the close then sends the RST
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
        srv.wait_log(r"DISCONNECT", timeout=10)
        assert children_of(srv.proc.pid) == []


def test_client_close_ends_the_process_group_with_sigint(server, tmp_path):
    """stdin closed, then SIGINT to the whole group: the background grandchild dies too."""
    marker = tmp_path / "got-int"
    script = f"trap 'echo int > {marker}; exit 0' INT; sleep 1000 & echo ready; wait"
    srv = server("sh", "-c", script)
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=10) == "ready"
        shell = children_of(srv.proc.pid)[0]
        grandchildren = descendants(shell)
        assert grandchildren
    wait_for(lambda: marker.exists(), message="the shell to get SIGINT")
    wait_for(lambda: all(process_state(p) in (None, "Z") for p in grandchildren),
             message="the grandchild to die with its group")
    srv.wait_log(r"DISCONNECT")


@pytest.mark.slow
def test_process_ignoring_sigint_and_sigterm_is_killed(server):
    srv = server("--closems=0", "sh", "-c", "trap '' INT TERM; echo ready; while :; do sleep 0.05; done")
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=10) == "ready"
    srv.wait_log(r"exit:'killed by signal 9'.*DISCONNECT")


@pytest.mark.slow
def test_client_close_is_answered_with_the_clients_code(server):
    srv = server("cat")
    with connect(srv.url()) as ws:
        ws.close(code=4321, reason="bye")
        assert ws.protocol.close_rcvd.code == 4321
    srv.wait_log(r"close:'4321' \| DISCONNECT")


def test_program_that_cannot_start_gets_1011(server, tmp_path):
    script = tmp_path / "vanishing.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    srv = server(str(script))
    script.chmod(0o644)  # no longer executable after the start-up check
    with connect(srv.url()) as ws:
        _, code, _ = receive_all(ws)
    assert code == 1011
    srv.wait_log(r"ERROR .* cannot start")


def test_pingms_closes_a_client_that_never_answers(server):
    srv = server("--pingms=100", "cat")
    sock, head, _ = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    started = time.monotonic()
    data = read_until_eof(sock)  # never answers the pings
    elapsed = time.monotonic() - started
    sock.close()
    assert b"\x89\x00" in data, "the server sent no ping"
    assert 0.15 < elapsed < 5
    srv.wait_log(r"DISCONNECT")


def test_pingms_closes_a_client_that_sends_but_never_reads(server):
    """Its data is no answer to the pings: only pongs are, and it never reads them."""
    srv = server("--pingms=100", "--status-path=/_status", "cat")
    sock, head, _ = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    frame = bytes([0x81, 0x84]) + b"\0\0\0\0" + b"data"  # masked with zeros
    sock.settimeout(0.02)
    closed = False
    deadline = time.monotonic() + 10
    while not closed and time.monotonic() < deadline:
        try:
            sock.sendall(frame)
            time.sleep(0.01)
        except (socket.timeout, OSError):
            closed = True  # its window is full, or the server cut it
        if srv.lines and any("no answer to pings" in line for line in srv.lines):
            closed = True
    sock.close()
    srv.wait_log(r"no answer to pings: closing")
    srv.wait_log(r"DISCONNECT")
    assert json.loads(request(srv.port, "GET", "/_status")[2])["session_count"] == 0


@pytest.mark.slow
def test_pingms_keeps_an_answering_client(server):
    srv = server("--pingms=50", "cat")
    with connect(srv.url()) as ws:  # websockets answers pings by itself
        srv.wait_log(r"Starting")
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"


@pytest.mark.slow
def test_sigterm_and_sigint_end_every_session_and_exit_0(server):
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        srv = server("sh", "-c", "trap '' INT; echo ready; sleep 1000")
        clients = [connect(srv.url()).__enter__() for _ in range(3)]
        for ws in clients:
            assert ws.recv(timeout=10) == "ready"
        assert len(children_of(srv.proc.pid)) == 3
        started = time.monotonic()
        assert srv.stop(sig) == 0
        assert time.monotonic() - started < 3.5
        for ws in clients:
            _, code, _ = receive_all(ws)
            assert code in (1001, 1006)
            ws.close()


#: The buffering hint after 0.2 s of silence instead of 3 s.
SHORT_HINT = {"hint_after": 0.2}


def test_a_silent_program_gets_one_buffering_hint_in_the_log(server):
    srv = server("sh", "-c", "sleep 30", timings=SHORT_HINT)
    with connect(srv.url()):
        srv.wait_log(r"\| INFO   \| session    \| .* \| no output from the program yet: .*flush")
        with pytest.raises(pytest.fail.Exception):  # five more hint delays: still one
            srv.wait_log(r"no output from the program yet", count=2, timeout=1)


def test_a_program_that_prints_gets_no_buffering_hint(server):
    srv = server("sh", "-c", "echo hello; sleep 30", timings=SHORT_HINT)
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=10) == "hello"
        with pytest.raises(pytest.fail.Exception):  # five hint delays
            srv.wait_log(r"no output from the program yet", timeout=1)


@pytest.mark.slow
def test_an_http_1_0_upgrade_is_refused_without_a_process(server):
    srv = server("cat")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        response = read_until_eof(sock)
    assert response.split(b"\r\n", 1)[0].endswith(b"400 BAD REQUEST")
    assert b"HTTP/1.1" in response
    assert children_of(srv.proc.pid) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TIOCOUTQ tells the progress")
def test_a_client_that_reads_slowly_gets_all_the_output_and_the_close(server):
    """Our close frame waits behind output the client has not read: the wait for its answer
    goes on while it reads, so no reset destroys the end of the output."""
    srv = server("seq", "1", "50000", timings={"close_reply": 0.1})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the rest waits at the server
    sock.connect(("127.0.0.1", srv.port))
    received = []
    with connect(srv.url(), sock=sock, max_queue=4) as ws:
        for message in ws:
            received.append(message)
            if len(received) % 1000 == 0 and len(received) < 50000:
                ws.ping()  # input the server must read, or its close() resets the connection
                time.sleep(0.02)  # reads about 1 s in all, ten times close_reply
        code = ws.close_code
    assert (len(received), received[-1], code) == (50000, "50000", 1000)
