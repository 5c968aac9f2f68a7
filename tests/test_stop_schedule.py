"""The stop schedule: a step that fails is one log line and the next step runs; on Windows
every program runs in a Job Object that holds its whole tree (`winjob`)."""

import subprocess
import sys
import time

import pytest

from websocketd_py import process, proctree

#: Ignores stdin's end and SIGINT (Windows: Ctrl-Break), so only a firm step ends it.
STUBBORN = [sys.executable, "-c",
            "import signal, time\n"
            "signal.signal(getattr(signal, 'SIGBREAK', signal.SIGINT), signal.SIG_IGN)\n"
            "time.sleep(60)"]


class Lines:
    """A log that keeps its error lines."""

    def __init__(self):
        self.errors = []

    def error(self, category, text):
        self.errors.append((category, text))


def failing_step(popen, job):
    raise OSError(0, "GenerateConsoleCtrlEvent failed: the handle is invalid")


def test_a_stop_step_that_fails_is_logged_and_the_next_one_runs(monkeypatch):
    monkeypatch.setattr(process, "STOP_SCHEDULE", ((0.05, failing_step),
                                                   (0.05, proctree.terminate),
                                                   (0.5, proctree.kill)))
    log = Lines()
    program = process.ProcessEndpoint(STUBBORN, None, log=log)
    try:
        status = program.terminate()
    finally:
        program.close_pipes()
    assert status not in (0, None)  # ended by the firm step
    assert log.errors == [("process", "while ending the program: [Errno 0] "
                                      "GenerateConsoleCtrlEvent failed: the handle is invalid")]


@pytest.mark.skipif(sys.platform != "win32", reason="Job Objects are Windows'")
def test_the_job_holds_the_grandchild_and_ending_it_ends_both():
    parent = [sys.executable, "-c",
              "import subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('started', flush=True)\ntime.sleep(60)"]
    popen, job = proctree.start(parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert popen.stdout.readline().strip() == b"started"
        assert job.active_processes() == 2
        proctree.terminate(popen, job)
        deadline = time.monotonic() + 10
        while job.active_processes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.active_processes() == 0
        assert not proctree.group_alive(popen, job)
    finally:
        job.close()
        popen.stdin.close()
        popen.stdout.close()
        popen.wait(10)


@pytest.mark.skipif(sys.platform != "win32", reason="CTRL_BREAK_EVENT is Windows'")
def test_ctrl_break_goes_out_only_when_the_server_has_a_console(monkeypatch):
    """Without a console (pythonw, a service; Wine) it cannot be sent: that step does nothing
    and the job's end follows. With one, it goes to the program's process group."""
    from websocketd_py import winjob
    sent = []
    monkeypatch.setattr(winjob, "send_ctrl_break", sent.append)
    for console in (False, True):
        monkeypatch.setattr(winjob, "has_console", lambda: console)
        proctree.interrupt(_Process(4242), None)
    assert sent == [4242]


class _Process:
    def __init__(self, pid):
        self.pid = pid


def test_the_stdin_feeder_says_when_stdin_is_gone_and_its_thread_ends():
    """`StdinFeeder` (Windows sessions): once the program has gone, `put` says False."""
    program = process.ProcessEndpoint([sys.executable, "-c", "pass"], None)
    feeder = process.StdinFeeder(program, limit=65536)
    try:
        deadline = time.monotonic() + 10
        while feeder.put(b"x" * 65536):  # the pipe fills, then the write fails
            assert time.monotonic() < deadline, "stdin never reported gone"
        feeder.close()
        feeder._thread.join(10)
        assert not feeder._thread.is_alive()
    finally:
        program.terminate()
        program.close_pipes()
