"""Shared fixtures: a real websocketd-py subprocess on 127.0.0.1, and proof nothing is left.

`server(*args)` starts `python -m websocketd_py --port=0 --address=127.0.0.1 ARGS`,
reads the chosen port from its startup log, and at teardown stops it with
SIGTERM, checks it exited 0, and checks that no process it started is still
running. On Linux the test process makes itself a child subreaper, so
anything the server's children leave behind is re-parented to us, where the
teardown check finds it. The helpers the fixtures and the tests use are in
helpers.py.
"""

import ctypes
import os
import signal
import threading
import time

import pytest

from helpers import IS_LINUX, Server, children_of, process_state, wait_for_no_leftovers

PR_SET_CHILD_SUBREAPER = 36
#: The checkout under test. Every Python process the tests start (servers started in another
#: directory, the console script, benchmark runs) imports websocketd_py from here, not from
#: wherever `pip install -e` last pointed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))


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


_become_subreaper()


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

