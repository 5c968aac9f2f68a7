"""Faults on either side of a session: nothing is lost, and nothing is left behind.

Every test measures the server's footprint right after start (threads in
/proc/PID/task, open file descriptors in /proc/PID/fd, descendant processes),
breaks something, checks that every byte that should arrive did, and waits
for the footprint to come back to those idle values: a thread, a descriptor
or a process that stays is a leak that would, over days, take a server down.
"""

import asyncio
import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect

from helpers import (assert_back_to_idle, descendants, footprint, process_state, raw_handshake,
                     receive_all, rss_kib, start_measured, wait_for)

#: Every test here waits for the footprint to come back to idle: at least the second
#: (threads.IDLE_SECONDS) an idle session thread waits for work before it ends.
pytestmark = pytest.mark.slow

PY = sys.executable


def masked_frame(payload):
    """A client text frame by hand (all-zero mask: the payload goes as it is)."""
    return b"\x81\xff" + struct.pack("!Q", len(payload)) + b"\0" * 4 + payload


def reset(sock):
    """Vanish with a TCP reset: no close frame, no FIN (a raw socket: no reader thread on it)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def blocked_writing_a_pipe(pid):
    with open(f"/proc/{pid}/wchan") as f:
        return "pipe_write" in f.read()


# -- the program misbehaves ----------------------------------------------------------


def test_crash_mid_stream_delivers_every_line_then_1011_with_the_signal(server):
    srv = start_measured(server, "sh", "-c",
                         "ulimit -c 0; seq 1 100000; printf 'half a line'; kill -SEGV $$")
    with connect(srv.url(), open_timeout=10) as ws:
        messages, code, reason = receive_all(ws)
    assert messages == [str(n) for n in range(1, 100001)] + ["half a line"]
    assert (code, reason) == (1011, "killed by signal 11")
    srv.wait_log(r"exit:'killed by signal 11' close:'1011' \| DISCONNECT")
    assert_back_to_idle(srv)


@pytest.mark.parametrize("program, code, reason", [
    ("true", 1000, ""), ("false", 1011, "exit status 1")])
def test_program_that_exits_at_once(server, program, code, reason):
    srv = start_measured(server, program)
    for _ in range(3):
        with connect(srv.url(), open_timeout=10) as ws:
            assert receive_all(ws) == ([], code, reason)
    srv.wait_log(r"DISCONNECT", count=3)
    assert_back_to_idle(srv)


def test_program_that_never_reads_stdin_ends_when_the_client_leaves(server):
    """A few lines wait in the pipe; the client's close is answered at once, SIGINT ends it."""
    srv = start_measured(server, "sleep", "1000")
    with connect(srv.url(), open_timeout=10) as ws:
        for n in range(10):
            ws.send(f"unread {n}")
        ws.close(4001, "bye")
        assert ws.protocol.close_rcvd.code == 4001
    srv.wait_log(r"exit:'killed by signal 2' close:'4001' \| DISCONNECT")
    assert_back_to_idle(srv)


def test_program_that_never_reads_stdin_ends_when_the_client_vanishes(server):
    """The pipe is full, the server waits for the program, and the client resets."""
    srv = start_measured(server, "sleep", "1000")
    sock, head, _ = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    sock.sendall(masked_frame(b"x" * 200_000))  # more than the pipe holds
    reset(sock)
    srv.wait_log(r"exit:'killed by signal 2' close:'1006' \| DISCONNECT")
    assert_back_to_idle(srv)


def test_program_that_never_writes_gets_every_line_and_the_close_is_answered(server, tmp_path):
    """The shell keeps stdout open (and silent) while cat stores stdin."""
    received = tmp_path / "received"
    srv = start_measured(server, "sh", "-c", 'cat > "$0"', str(received))
    lines = [f"line {n}" for n in range(1000)]
    with connect(srv.url(), open_timeout=10) as ws:
        for line in lines:
            ws.send(line)
        ws.close(4000, "done")
        assert ws.protocol.close_rcvd.code == 4000
    srv.wait_log(r"exit:'exit status 0' close:'4000' \| DISCONNECT")
    assert received.read_text().splitlines() == lines
    assert_back_to_idle(srv)


def test_program_ignoring_sigint_and_sigterm_is_killed_on_schedule(server):
    """SIGINT at 100 ms, SIGTERM at 350 ms, SIGKILL at 850 ms, to the whole group."""
    srv = start_measured(server, "sh", "-c",
                         "trap '' INT TERM; sleep 1000 & echo ready; while :; do sleep 0.05; done")
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "ready"
        group = descendants(srv.proc.pid)
        assert len(group) >= 2  # the shell and its background sleep (and maybe a loop sleep)
    left = time.monotonic()
    wait_for(lambda: all(process_state(p) in (None, "Z") for p in group), timeout=5,
             message="the group to be killed")
    elapsed = time.monotonic() - left
    assert 0.6 <= elapsed < 2.0, f"the group ended {elapsed:.2f} s after the client left"
    srv.wait_log(r"exit:'killed by signal 9'.*DISCONNECT")
    assert_back_to_idle(srv)


def test_grandchild_holding_the_pipes_is_killed_and_the_session_ends(server):
    """The program exits at once; its background child keeps stdout open, then is ended."""
    srv = start_measured(server, "sh", "-c", "sleep 1000 & echo $!")
    with connect(srv.url(), open_timeout=10) as ws:
        grandchild = int(ws.recv(timeout=10))
        printed = time.monotonic()
        messages, code, _ = receive_all(ws)
    assert time.monotonic() - printed < 1.5
    assert (messages, code) == ([], 1000)
    wait_for(lambda: process_state(grandchild) in (None, "Z"),
             message="the grandchild to be killed")
    assert_back_to_idle(srv)


def test_grandchild_in_a_new_session_holding_the_pipes_does_not_hang_the_session(server):
    """setsid takes the grandchild out of the group, beyond the signals; the session still ends."""
    srv = start_measured(server, "sh", "-c", "setsid sleep 1000 & echo $!")
    with connect(srv.url(), open_timeout=10) as ws:
        escaped = int(ws.recv(timeout=10))
        try:
            printed = time.monotonic()
            messages, code, _ = receive_all(ws, timeout=3)
            assert time.monotonic() - printed < 1.5
            assert (messages, code) == ([], 1000)
        finally:
            os.kill(escaped, signal.SIGKILL)  # re-parented to the test process, which reaps it
    assert_back_to_idle(srv)


def test_grandchild_in_a_new_session_holding_only_stderr_leaves_nothing_behind(server):
    """The shared stderr reader lets go of a pipe a stray process keeps open: fds come back."""
    srv = start_measured(server, "sh", "-c", "setsid sleep 1000 >/dev/null </dev/null & echo $!")
    with connect(srv.url(), open_timeout=10) as ws:
        escaped = int(ws.recv(timeout=10))
        try:
            messages, code, _ = receive_all(ws)
            assert (messages, code) == ([], 1000)
            assert process_state(escaped) not in (None, "Z")  # still holding stderr ...
            assert_back_to_idle(srv)                          # ... yet the server let it go
        finally:
            os.kill(escaped, signal.SIGKILL)  # re-parented to the test process, which reaps it


@pytest.mark.parametrize("flags, threads_per_session", [((), 2), (("--passstderr",), 3)])
def test_a_session_takes_two_threads_and_a_third_only_with_passstderr(server, flags,
                                                                      threads_per_session):
    """Reader and writer; logged stderr and exits are watched by threads all sessions share,
    but --passstderr sends stderr to the client, so it needs a thread of its own."""
    srv = start_measured(server, *flags, "sh", "-c", "echo oops >&2; echo ready; exec cat")
    sessions = [connect(srv.url(), open_timeout=10, legacy=True) for _ in range(10)]
    try:
        for ws in sessions:
            while "ready" not in ws.recv(timeout=10):  # with --passstderr, "oops" may come first
                pass
        if not flags:
            srv.wait_log(r"ERROR  \| stderr .* \| oops$", count=10)
        assert footprint(srv.proc.pid).threads == srv.idle.threads + 10 * threads_per_session
    finally:
        for ws in sessions:
            ws.close()
    assert_back_to_idle(srv)


# -- the client misbehaves -----------------------------------------------------------


def test_client_vanishing_mid_message_leaves_nothing(server):
    srv = start_measured(server, "cat")
    sock, head, _ = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    sock.sendall(masked_frame(b"warm-up"))
    assert sock.recv(100) == b"\x81\x07warm-up"
    sock.sendall(masked_frame(b"m" * 1000)[:100])  # the header and only part of the payload
    reset(sock)
    srv.wait_log(r"close:'1006' \| DISCONNECT")
    assert_back_to_idle(srv)


def test_client_vanishing_while_the_program_streams_leaves_nothing(server):
    srv = start_measured(server, "yes")
    sock, head, _ = raw_handshake(srv.port)
    assert head.startswith("HTTP/1.1 101")
    assert sock.recv(65536)
    reset(sock)
    srv.wait_log(r"close:'1006' \| DISCONNECT")
    assert_back_to_idle(srv)


def keepalive_timer(local_port, remote_port):
    """Seconds until the keep-alive probe of TCP connection local→remote (/proc/net/tcp);
    None when no keep-alive timer is armed."""
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            ports = [int(address.split(":")[1], 16) for address in fields[1:3]]
            if ports == [local_port, remote_port]:
                timer, when = fields[5].split(":")
                return int(when, 16) / os.sysconf("SC_CLK_TCK") if timer == "02" else None
    raise LookupError(f"no TCP connection {local_port}->{remote_port}")


def test_a_client_that_vanishes_without_a_trace_is_probed_by_tcp_keepalive(server):
    """A power cut sends no close frame, no FIN, no RST: only keep-alive probes (after 15 s
    of silence, as websocketd has them) find the dead client of a silent program."""
    srv = start_measured(server, "cat")
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        # a retransmission timer shows instead while the echo is not yet acknowledged
        seconds = wait_for(lambda: keepalive_timer(srv.port, ws.socket.getsockname()[1]),
                           timeout=3, message="a keep-alive timer on the connection")
        assert 10 < seconds <= 15
    assert_back_to_idle(srv)


def test_client_that_never_reads_blocks_the_flooding_program(server):
    """`yes` ends up blocked on its full pipe; the server buffers next to nothing."""
    srv = start_measured(server, "yes", "flood")
    with connect(srv.url(), open_timeout=10, max_queue=1, close_timeout=1) as ws:
        assert ws.recv(timeout=10) == "flood"
        program = wait_for(lambda: descendants(srv.proc.pid), message="yes to run")[0]
        wait_for(lambda: blocked_writing_a_pipe(program), timeout=20,
                 message="yes to block on its pipe")
        grown = rss_kib(srv.proc.pid) - srv.idle_rss
        assert grown < 30_000, f"the server's memory grew by {grown} KiB"
    srv.wait_log(r"DISCONNECT")
    assert_back_to_idle(srv)


def gated_reader(fifo):
    """A program that reads nothing until the FIFO `fifo` opens, then hashes every stdin line."""
    return [PY, "-c", f"""
import hashlib, sys
open({str(fifo)!r}).close()
digest, count = hashlib.sha256(), 0
for line in sys.stdin.buffer:
    if line == b"END\\n":
        break
    digest.update(line)
    count += 1
print(count, digest.hexdigest(), flush=True)
"""]


def test_client_flooding_faster_than_the_program_reads_loses_nothing(server, tmp_path):
    """The server stops reading the client while the program does not read; then all arrives."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    srv = start_measured(server, *gated_reader(fifo))
    chunk_count, chunk = 512, os.urandom(32768).hex()  # 32 MiB of text, 64 KiB per message
    expected = hashlib.sha256()
    for n in range(chunk_count):
        expected.update(f"{n:05}{chunk}\n".encode())
    with connect(srv.url(), open_timeout=10) as ws:
        sent = [0]

        def flood():
            for n in range(chunk_count):
                ws.send(f"{n:05}{chunk}")
                sent[0] += 1
            ws.send("END")
        sender = threading.Thread(target=flood)
        sender.start()

        def stalled():
            before = sent[0]
            time.sleep(0.3)  # an observation window: no progress in it means stalled
            return before > 0 and sent[0] == before
        wait_for(stalled, timeout=20, message="the client's sends to stall")
        assert sent[0] < chunk_count // 2, "the server kept reading what the program did not take"
        grown = rss_kib(srv.proc.pid) - srv.idle_rss
        assert grown < 30_000, f"the server's memory grew by {grown} KiB"
        with open(fifo, "w"):  # let the program read
            pass
        sender.join(30)
        assert ws.recv(timeout=30) == f"{chunk_count} {expected.hexdigest()}"
        assert receive_all(ws)[1] == 1000
    assert_back_to_idle(srv)


# -- many sessions -------------------------------------------------------------------


def test_a_thousand_sessions_one_after_another_leave_nothing(server):
    srv = start_measured(server, "cat")
    for n in range(1000):
        with connect(srv.url(), open_timeout=10) as ws:
            ws.send(f"echo {n}")
            assert ws.recv(timeout=10) == f"echo {n}"
    srv.wait_log(r"DISCONNECT", count=1000, timeout=20)
    assert_back_to_idle(srv)


async def echo_sessions(url, total, at_once):
    """`total` connect/echo/close cycles, `at_once` of them running at any time."""
    numbers = iter(range(total))

    async def worker():
        for n in numbers:
            async with async_connect(url, open_timeout=20) as ws:
                await ws.send(f"echo {n}")
                assert await asyncio.wait_for(ws.recv(), 20) == f"echo {n}"
    await asyncio.gather(*(worker() for _ in range(at_once)))


def test_a_thousand_sessions_fifty_at_a_time_leave_nothing(server):
    srv = start_measured(server, "cat")
    asyncio.run(echo_sessions(srv.url(), total=1000, at_once=50))
    srv.wait_log(r"DISCONNECT", count=1000, timeout=20)
    assert_back_to_idle(srv)


# -- what the program prints ---------------------------------------------------------


def test_ten_megabyte_line_without_newline_arrives_whole_as_fragments(server):
    alphabet, size = b"abcdefghijklmnopqrstuvwxyz", 10 * 1024 * 1024
    repeats = size // len(alphabet) + 1
    expected = (alphabet * repeats)[:size]
    srv = start_measured(server, PY, "-c", f"""
import sys
data = ({alphabet!r} * {repeats})[:{size}]
for start in range(0, len(data), 100_000):
    sys.stdout.buffer.write(data[start:start + 100_000])
""")
    with connect(srv.url(), open_timeout=10, max_size=None) as ws:
        fragments = list(ws.recv_streaming())
        assert receive_all(ws)[:2] == ([], 1000)
    assert len(fragments) > 1
    assert "".join(fragments).encode() == expected
    assert_back_to_idle(srv)


def test_output_that_is_not_utf8_arrives_repaired(server):
    """Bad bytes become U+FFFD; a valid character cut in two by the pipe stays whole."""
    lines = [b"ok \xff\xfe end", b"overlong \xc0\xaf", b"surrogate \xed\xa0\x80",
             b"cut short \xe2\x82", b"split \xf0\x9f\x98\x80 emoji", b"\xc3\xa9t\xc3\xa9"]
    output = b"\n".join(lines) + b"\n"
    cut = output.index("\U0001F600".encode()) + 2
    srv = start_measured(server, "sh", "-c",
                         f"printf '{octal(output[:cut])}'; read go; printf '{octal(output[cut:])}'")
    with connect(srv.url(), open_timeout=10) as ws:
        first = [ws.recv(timeout=10) for _ in range(4)]  # the server has read the first half
        ws.send("go")
        messages, code, _ = receive_all(ws)
    assert first + messages == [line.decode("utf-8", "replace") for line in lines]
    assert code == 1000
    assert_back_to_idle(srv)


def octal(data):
    """`data` as printf escapes, so the shell passes every byte as it is."""
    return "".join(f"\\{byte:03o}" for byte in data)


def test_nul_bytes_pass_through_in_text_mode(server):
    srv = start_measured(server, "sh", "-c", "printf 'nul:\\000:end\\n'; exec cat")
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "nul:\0:end"
        ws.send("\0in\0the\0middle\0")
        assert ws.recv(timeout=10) == "\0in\0the\0middle\0"
    assert_back_to_idle(srv)


def test_nul_bytes_pass_through_in_binary_mode(server):
    srv = start_measured(server, "--binary", "cat")
    payload = b"\0" * 100 + bytes(range(256)) + b"\0"
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send(payload)
        received = b""
        while len(received) < len(payload):
            received += ws.recv(timeout=10)
        assert received == payload
    assert_back_to_idle(srv)
