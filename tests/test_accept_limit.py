"""At the open-file limit the accept loop pauses instead of spinning, and serves again after.

accept() failing with EMFILE leaves the connection in the listen queue, so
the listening socket stays readable: without a pause the loop would call
accept() again at once and burn a CPU. The end-to-end test runs the server
under RLIMIT_NOFILE 64 (soft and hard, so the command line cannot raise it)
and fills it with silent connections.
"""

import errno
import os
import resource
import socket
import sys
import time

import pytest
from websockets.sync.client import connect

from websocketd_py import listening

#: The most CPU the server may use in the 3 s it spends at the limit (a spinning loop: ~3 s).
CPU_BUDGET = 0.3
OPEN_FILE_LIMIT = 64


class RecordingLog:
    def __init__(self):
        self.lines = []

    def write(self, level, category, message, fields=()):
        self.lines.append((level, message))


def out_of_files():
    return OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def test_pauses_double_from_5_ms_to_1_s_and_end_after_an_accept():
    pause = listening.AcceptPause(RecordingLog())
    pause.stop()  # every pause returns at once: only their lengths are looked at
    lengths = []
    for _ in range(10):
        pause.after_failure(out_of_files())
        lengths.append(pause.pause)
    assert lengths == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]
    pause.after_success()
    pause.after_failure(out_of_files())
    assert pause.pause == 0.005


def test_other_accept_errors_cause_no_pause():
    log = RecordingLog()
    pause = listening.AcceptPause(log)
    pause.after_failure(OSError(errno.ECONNABORTED, "aborted"))
    assert (pause.pause, log.lines) == (0.0, [])


def test_running_out_is_logged_at_most_once_a_minute():
    log = RecordingLog()
    now = [100.0]
    pause = listening.AcceptPause(log, clock=lambda: now[0])
    pause.stop()
    for _ in range(5):
        pause.after_failure(out_of_files())
    pause.after_success()
    assert log.lines == [
        ("error", "cannot accept new connections: the open-file limit of the process "
                  "(ulimit -n) is reached; retrying with pauses of up to 1 s, serving the "
                  "connections already open")]
    now[0] += 30  # another run within the minute: not logged again
    pause.after_failure(out_of_files())
    pause.after_success()
    assert len(log.lines) == 1
    now[0] += 31
    pause.after_failure(out_of_files())
    assert len(log.lines) == 2


def cpu_seconds(pid):
    """User plus system CPU time of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_file_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILE_LIMIT, OPEN_FILE_LIMIT))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, RLIMIT_NOFILE")
@pytest.mark.slow
def test_at_the_open_file_limit_the_server_rests_keeps_its_sessions_and_serves_again(server):
    srv = server("cat", preexec_fn=_open_file_limit)
    silent = []
    with connect(srv.url(), open_timeout=10) as ws:
        try:
            # More silent connections than the limit: the kernel queues those not accepted.
            for _ in range(2 * OPEN_FILE_LIMIT):
                silent.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            srv.wait_log(r"ERROR  \| server .* \| cannot accept new connections: the open-file "
                         r"limit of the process \(ulimit -n\) is reached")
            before = cpu_seconds(srv.proc.pid)
            time.sleep(3)  # the measurement window
            used = cpu_seconds(srv.proc.pid) - before
            open_files = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
            assert open_files >= OPEN_FILE_LIMIT - 1, \
                f"the limit was no longer reached during the measurement ({open_files} open)"
            assert used < CPU_BUDGET, f"{used:.2f} CPU-seconds in 3 s at the open-file limit"
            ws.send("a session open before keeps working")
            assert ws.recv(timeout=10) == "a session open before keeps working"
        finally:
            for sock in silent:
                sock.close()
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send("served again")
        assert ws.recv(timeout=10) == "served again"
    assert sum("cannot accept new connections" in line for line in srv.lines) == 1
