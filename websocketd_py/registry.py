"""What runs now: the --maxforks slots, and sets of running sessions and CGI scripts.

A fork slot is held from the upgrade (or the CGI request) until the program
is reaped, so --maxforks counts processes, and a full server answers 429
before any 101.
"""

import threading


class ForkSlots:
    """--maxforks: `try_acquire()` gives a `ForkSlot`, or None when all are held."""

    def __init__(self, limit):
        self._semaphore = threading.BoundedSemaphore(limit) if limit > 0 else None
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self):
        if self._semaphore is not None and not self._semaphore.acquire(blocking=False):
            return None
        with self._lock:
            self.in_use += 1
        return ForkSlot(self)

    def _release(self):
        with self._lock:
            self.in_use -= 1
        if self._semaphore is not None:
            self._semaphore.release()


class ForkSlot:
    """One held slot; `release()` may be called more than once."""

    def __init__(self, slots):
        self._slots = slots

    def release(self):
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release()


class Running:
    """A set of things running now; `snapshot()` takes no lock (the set is replaced,
    never changed in place), so a signal handler may call it."""

    def __init__(self):
        self._items = frozenset()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def add(self, item):
        with self._lock:
            self._items = self._items | {item}

    def remove(self, item):
        with self._lock:
            self._items = self._items - {item}
            if not self._items:
                self._idle.notify_all()

    def snapshot(self):
        return self._items

    def wait_empty(self, timeout):
        with self._lock:
            return self._idle.wait_for(lambda: not self._items, timeout)
