"""Threads for connections and sessions, reused while connections churn; a small one-shot signal.

Each session needs two threads (the request handler and the writer), and
starting a `threading.Thread` makes the starter wait until the new thread
runs: under the GIL, a hand-off that shows when connections churn
(docs/performance.md, "Threads and one-shot signals"). In a `Pool` a
thread whose work is done waits up to IDLE_SECONDS for the next piece of
work before it ends, and `start` hands work to such a thread when there is
one. The threads are ordinary named `threading.Thread`s (each takes the name
of its current job), so tracebacks and `threading.enumerate()` show them; an
app's pool ends with the app (`Pool.close`).

`Latch` is the one-shot signal between a session's threads: a lock held
until set, a tenth of a `threading.Event`'s memory, which an idle session
would hold three times (the same section has the figures).
"""

import threading
import time

#: How long a thread whose work is done waits for more before it ends.
IDLE_SECONDS = 1.0
#: At most this many threads wait for work; others end at once.
MAX_IDLE = 32


class Pool:
    """Named threads that are reused while work keeps coming; `close()` ends them all."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = []           # waiting `_Worker`s, the latest last
        self._all = set()         # every worker alive
        self._closed = False

    def start(self, name, target, *args):
        """Run `target(*args)` in a thread called `name` (a waiting one, else a new one).

        Raises RuntimeError, as `threading.Thread.start` does, when no thread can be started.
        """
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.name = name
            worker.job = (target, args)
            worker.wake.release()
            return
        worker = _Worker(self, name, target, args)
        with self._lock:
            self._all.add(worker)
        try:
            worker.start()
        except BaseException:
            with self._lock:
                self._all.discard(worker)
            raise

    def close(self, timeout=2.0):
        """Let no thread wait for more work, and wait up to `timeout` seconds for every
        thread's work to end (its jobs should be ending: their sessions are over)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            workers = list(self._all)
        for worker in idle:
            worker.wake.release()  # with no job: it ends
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _wait_for_work(self, worker):
        """In `worker`'s thread, its job done: True once `start` handed it another; False
        when it should end."""
        with self._lock:
            if self._closed or len(self._idle) >= MAX_IDLE:
                self._all.discard(worker)
                return False
            worker.name = "idle"
            self._idle.append(worker)
        if worker.wake.acquire(timeout=IDLE_SECONDS):
            return worker.job is not None
        with self._lock:
            if worker in self._idle:  # nobody took it: end
                self._idle.remove(worker)
                self._all.discard(worker)
                return False
        worker.wake.acquire()  # `start` or `close` took it just as the wait ended
        return worker.job is not None


class _Worker(threading.Thread):
    """A pool's thread: runs jobs until the pool has none for it."""

    def __init__(self, pool, name, target, args):
        super().__init__(name=name, daemon=True)
        self.pool = pool
        self.job = (target, args)
        self.wake = threading.Lock()
        self.wake.acquire()

    def run(self):
        while True:
            target, args = self.job
            self.job = None
            try:
                target(*args)
            finally:
                target = args = None  # a waiting thread holds nothing of its last job
            if not self.pool._wait_for_work(self):
                return


class Latch:
    """Set once, then waited for by any thread: `threading.Event` in one lock."""

    __slots__ = ("_set", "_lock")

    def __init__(self):
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self):
        with _latch_guard:  # two threads may set it at once: release only once
            if self._set:
                return
            self._set = True
        self._lock.release()

    def is_set(self):
        return self._set

    def wait(self, timeout=None):
        """Wait until set, at most `timeout` seconds if given; whether it is set."""
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()  # for the next waiter
            return True
        return self._set


_latch_guard = threading.Lock()
