"""threads.start: work runs in another thread at once; threads are reused, and end when idle.

Threads are told apart by their native id, and a thread has ended when
/proc/self/task no longer lists it (Linux).
"""
import _thread
import os
import sys
import threading

import pytest

from helpers import wait_for
from websocketd_py import threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/task")


@pytest.fixture(autouse=True)
def own_pool(monkeypatch):
    """A pool of its own (threads idle from other tests' servers take no work from here),
    and at the end every thread started here has ended: none waits for work any more."""
    monkeypatch.setattr(threads, "_idle", [])
    monkeypatch.setattr(threads, "IDLE_SECONDS", 0.2)
    before = _thread._count()
    yield
    monkeypatch.setattr(threads, "MAX_IDLE", 0)

    def all_ended():
        while threads._idle:
            threads.start(lambda: None)  # its last job
        return _thread._count() <= before
    wait_for(all_ended, message="the threads started here to end")


def run(target=lambda: None):
    """threads.start a job; wait for it; the native id of the thread that ran it."""
    done, ran_in = threading.Event(), []

    def job(arg):
        assert arg == "arg"
        ran_in.append(threading.get_native_id())
        try:
            target()
        finally:
            done.set()
    threads.start(job, "arg")
    assert done.wait(10)
    return ran_in[0]


def alive(native_id):
    return os.path.exists(f"/proc/self/task/{native_id}")


def test_start_returns_while_the_work_runs_elsewhere():
    release, started = threading.Event(), threading.Event()

    def blocked():
        started.set()
        release.wait(10)
    threads.start(blocked)  # returns although the job blocks
    assert started.wait(10)
    release.set()


def test_a_thread_is_reused_then_ends_when_idle():
    first = run()
    wait_for(lambda: threads._idle, message="the thread to wait for work")
    assert run() == first != threading.get_native_id()
    wait_for(lambda: not alive(first), message="the idle thread to end")
    assert threads._idle == []


def test_at_most_max_idle_threads_wait(monkeypatch):
    monkeypatch.setattr(threads, "MAX_IDLE", 1)
    monkeypatch.setattr(threads, "IDLE_SECONDS", 30)  # none ends for being idle meanwhile
    release = threading.Event()
    ids = []
    for _ in range(3):  # three at once: three threads
        threads.start(lambda: (ids.append(threading.get_native_id()), release.wait(10)))
    wait_for(lambda: len(ids) == 3, message="three jobs to run")
    release.set()
    wait_for(lambda: sum(map(alive, ids)) == 1, message="two threads to end at once")
    assert len(threads._idle) == 1


def test_a_job_that_raises_leaves_its_thread_usable(capfd):
    def fails():
        raise RuntimeError("boom")
    first = run(fails)
    wait_for(lambda: threads._idle, message="the thread to wait for work")
    assert run() == first
    assert "RuntimeError: boom" in capfd.readouterr().err


# -- Latch ------------------------------------------------------------------------------


def test_a_latch_wakes_every_waiter_once_set():
    latch, woke = threads.Latch(), []
    waiters = [threading.Thread(target=lambda: woke.append(latch.wait(30))) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    assert not latch.is_set() and woke == []
    latch.set()
    for waiter in waiters:
        waiter.join(5)  # all at once, not one per wait timeout
    assert woke == [True] * 5 and latch.is_set() and latch.wait(0) and latch.wait()


def test_a_latch_wait_times_out_while_unset():
    latch = threads.Latch()
    assert latch.wait(0.05) is False and latch.wait(0) is False and not latch.is_set()


def test_setting_a_latch_again_is_harmless():
    latch, errors = threads.Latch(), []

    def set_it():
        try:
            latch.set()
        except Exception as error:
            errors.append(error)
    setters = [threading.Thread(target=set_it) for _ in range(20)]
    for setter in setters:
        setter.start()
    for setter in setters:
        setter.join(10)
    set_it()
    assert errors == [] and latch.wait(1) and latch.wait(1)


def test_reads_are_small_while_idle_and_big_while_data_flows():
    idle, busy = threads.IDLE_READ_BYTES, 65536
    size = threads.ReadSize(busy)
    assert size.now == idle
    assert size.after(idle - 1) == idle
    assert size.after(idle) == busy      # it filled the small read: more is waiting
    for _ in range(threads.SHORT_READS_BEFORE_IDLE):
        assert size.after(100) == busy   # a few short reads do not make it idle
    assert size.after(busy) == busy      # a full read starts the count again
    for _ in range(threads.SHORT_READS_BEFORE_IDLE):
        size.after(0)
    assert size.after(0) == idle
    assert idle + 33 <= 512  # its bytes object comes from Python's small-object pools
