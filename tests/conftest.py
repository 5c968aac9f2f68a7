"""Shared fixtures: a real websocketd-py subprocess on 127.0.0.1, and proof nothing is left.

`server(*args)` starts `python -m websocketd_py --port=0 --address=127.0.0.1 ARGS`,
reads the chosen port from its startup log, and at teardown stops it with
SIGTERM, checks it exited 0, and checks that no process it started is still
running. On Linux the test process makes itself a child subreaper, so
anything the server's children leave behind is re-parented to us, where the
teardown check finds it.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

IS_LINUX = sys.platform.startswith("linux")
PR_SET_CHILD_SUBREAPER = 36


def _process_group(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _reap_orphans():
    """Do what init does for the orphans we adopt: reap them once they exit.

    Only processes outside our own process group are reaped (the sessions'
    children have groups of their own); the servers and other subprocesses a
    test starts stay in ours, for their own Popen to reap.
    """
    own_group = os.getpgrp()
    while True:
        for pid in children_of(os.getpid()):
            if process_state(pid) == "Z" and _process_group(pid) != own_group:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.01)


def _become_subreaper():
    if IS_LINUX:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        threading.Thread(target=_reap_orphans, name="orphan-reaper", daemon=True).start()


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


_become_subreaper()


class Server:
    """A running websocketd-py and everything it logs."""

    def __init__(self, args, cwd=None, env=None, port_flag=True, preexec_fn=None):
        command = [sys.executable, "-m", "websocketd_py"]
        if port_flag:
            command += ["--port=0", "--address=127.0.0.1"]
        self.proc = subprocess.Popen(
            command + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, cwd=cwd, env=env, preexec_fn=preexec_fn)
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


@pytest.fixture
def server():
    """`server(*args, **options)` starts websocketd-py; all are stopped and checked at teardown."""
    started = []

    def start(*args, wait=True, **options):
        instance = Server(args, **options)
        started.append(instance)
        return instance.wait_started() if wait else instance

    yield start
    problems = []
    for instance in started:
        status = instance.stop()
        if status not in (0, 2) and instance.port is not None:
            problems.append(f"server exited with {status}:\n{instance.log_text()}")
    if IS_LINUX:
        leftovers = wait_for_no_leftovers()
        if leftovers:
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
            problems.append(f"processes left behind: {leftovers}")
    if problems:
        pytest.fail("\n".join(problems))


def wait_for_no_leftovers(timeout=3.0):
    """Leftover processes after `timeout` (a just-killed process may still be exiting)."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = leftover_processes()
        if not leftovers or time.monotonic() > deadline:
            return leftovers
        time.sleep(0.02)
