"""Threads for sessions: started without waiting, and reused while connections churn.

`threading.Thread.start()` blocks until the new thread runs: the starter
sleeps, the new thread wakes it, and under the GIL it only runs again when
the new thread blocks. Creating an OS thread (and its Python thread state)
holds the GIL too. A session needs two threads (werkzeug's handler and its
writer), so on connection churn both costs showed in the profiles. Here a
thread whose work is done waits up to IDLE_SECONDS for the next piece of
work before it ends, and `start` hands work to such a thread when there is
one. These threads are daemons that nobody joins (a session waits for a
Latch instead), so they need none of `threading.Thread`'s bookkeeping.
Code running in them must not call `threading.current_thread()` (on Python
3.11 each such thread would leave a `_DummyThread` behind); neither the
session code nor werkzeug's handler does.

`Latch` is the one-shot signal between a session's threads, and
`ReadSize` sizes the reads that session threads block in.
"""

import _thread
import traceback

#: How long a thread whose work is done waits for more before it ends.
IDLE_SECONDS = 1.0
#: At most this many threads wait for work; others end at once.
MAX_IDLE = 32
#: The read an idle session's threads block in (see `ReadSize`): its result, 33
#: bytes more, still fits in Python's own allocator (objects up to 512 bytes).
IDLE_READ_BYTES = 512 - 33
#: After this many short reads in a row, a session's reads are small again.
SHORT_READS_BEFORE_IDLE = 32

_idle = []                        # _Worker of each waiting thread, the latest last
_idle_lock = _thread.allocate_lock()


class _Worker:
    """A waiting thread: `work` is set, then `wake` released, to give it its next job."""

    __slots__ = ("work", "wake")

    def __init__(self):
        self.work = None
        self.wake = _thread.allocate_lock()
        self.wake.acquire()


def start(target, *args):
    """Run `target(*args)` in another thread (a waiting one, else a new one) and return at once."""
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        _thread.start_new_thread(_run, (target, args))
    else:
        worker.work = (target, args)
        worker.wake.release()


def _run(target, args):
    worker = _Worker()
    while True:
        try:
            target(*args)
        except Exception:  # the targets catch their own errors; this is a last resort
            traceback.print_exc()
        target = args = None  # a waiting thread holds nothing of its last job
        if not _wait_for_work(worker):
            return
        target, args = worker.work
        worker.work = None


def _wait_for_work(worker):
    """Wait for `start` to hand this thread work: True; or False when it should end."""
    with _idle_lock:
        if len(_idle) >= MAX_IDLE:
            return False
        _idle.append(worker)
    if worker.wake.acquire(timeout=IDLE_SECONDS):
        return True
    with _idle_lock:
        if worker in _idle:  # nobody took it: end
            _idle.remove(worker)
            return False
    worker.wake.acquire()  # `start` took it just as the wait ended: its work is coming
    return True


class Latch:
    """Set once, then waited for by any thread: `threading.Event` in one lock.

    An Event is a Condition, a lock and a deque, about 1.1 KiB, and setting
    it runs Python code under the GIL; a session has four of them. A Latch
    is a lock held until `set`, and about 0.1 KiB.
    """

    __slots__ = ("_set", "_lock")

    def __init__(self):
        self._set = False
        self._lock = _thread.allocate_lock()
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


_latch_guard = _thread.allocate_lock()


class ReadSize:
    """How much a session thread's next blocking read asks for: small while idle.

    `os.read(fd, n)` and `sock.recv(n)` allocate their n-byte result before
    they block, and a thread of an idle session blocks there for as long as
    the session lasts. Two reads of 64 KiB kept 8-15 KiB resident per idle
    session (malloc hands out reused, touched memory), two of 4 KiB 7 KiB;
    two of IDLE_READ_BYTES come from Python's small-object pools. A read that
    fills IDLE_READ_BYTES means data is flowing: the reads ask for `busy`
    until SHORT_READS_BEFORE_IDLE reads in a row return less (shrinking at the
    first short read cost echo with 8 messages in flight a quarter of its
    throughput: one read became two).
    """

    __slots__ = ("now", "_busy", "_short_reads_left")

    def __init__(self, busy):
        self.now = IDLE_READ_BYTES
        self._busy = busy
        self._short_reads_left = 0

    def after(self, got):
        """Note a read that returned `got` bytes; the size of the next one."""
        if got >= IDLE_READ_BYTES:
            self.now = self._busy
            self._short_reads_left = SHORT_READS_BEFORE_IDLE
        elif self._short_reads_left:
            self._short_reads_left -= 1
        else:
            self.now = IDLE_READ_BYTES
        return self.now
