"""A program's stderr: each line logged (ERROR, category `stderr`), or sent as JSON.

Most sessions only log their stderr, and most programs write none, yet a
thread blocked on each stderr pipe costs about 29 KiB of memory per session.
So one shared thread (`_SharedReader`, epoll or kqueue) reads the stderr of
every session that only logs it. A thread per session (`_ThreadFollower`) is
kept where the shared thread cannot do the job: with --passstderr, where lines
go to the client and a send may block on a slow one, and where pipes cannot be
polled (Windows).

`follow()` returns an object with `wait(timeout)` (True once EOF was read and
the last line handled) and `abandon()` (stop reading: after it, the session
may close the pipe even while a stray process still holds its write end).
"""

import os
import selectors
import threading

from . import framing, threads

READ_BYTES = 65536

_POLLABLE_SELECTORS = ("EpollSelector", "KqueueSelector", "DevpollSelector")
#: True where one thread can wait on many pipes and take new ones while it waits.
CAN_SHARE = selectors.DefaultSelector.__name__ in _POLLABLE_SELECTORS


def follow(fd, log, websocket=None, on_error=None):
    """Start handling stderr `fd`: logged, or also framed to `websocket` (--passstderr).

    `on_error` is called if handling fails with a bug, so the session ends
    instead of hanging.
    """
    if websocket is None and CAN_SHARE:
        return _shared_reader().follow(fd, log, on_error)
    return _ThreadFollower(fd, log, websocket, on_error)


class _LineLogger:
    """stderr bytes → one log line per line; a line over 64 KiB is cut there."""

    def __init__(self, log):
        self.log = log
        self.pending = b""

    def feed(self, chunk):
        """Log the complete lines of `chunk`; an empty chunk is EOF (the rest is logged)."""
        lines, self.pending = framing.split_lines(self.pending, chunk)
        for line in lines:
            self.log.error("stderr", line.decode("utf-8", "replace"))


class _ThreadFollower:
    """One thread reading one stderr pipe with blocking reads."""

    def __init__(self, fd, log, websocket, on_error):
        self._fd = fd
        self._logger = _LineLogger(log)
        self._websocket = websocket
        self._framer = framing.LineFramer(stream="stderr") if websocket is not None else None
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="session-stderr", daemon=True)
        self._thread.start()

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon(self):
        """Nothing to do but report: a thread blocked in `read` cannot be taken off its pipe."""
        return not self._thread.is_alive()

    def _run(self):
        try:
            while True:
                try:
                    chunk = os.read(self._fd, READ_BYTES)
                except OSError:
                    chunk = b""
                if self._framer is not None:
                    out = self._framer.feed(chunk) if chunk else self._framer.finish()
                    if out:
                        self._websocket.send_frames(out)
                self._logger.feed(chunk)
                if not chunk:
                    return
        except Exception as error:  # a bug must end the session, not hang it
            self._logger.log.error("session", f"internal error in the stderr thread: {error!r}")
            if self._on_error is not None:
                self._on_error()
        finally:
            self._on_error = None  # it holds the session: no cycle, so the pipes close with it


class _SharedFollower:
    """One stderr pipe watched by the shared reader."""

    def __init__(self, reader, fd, log, on_error):
        self._reader = reader
        self.fd = fd
        self.logger = _LineLogger(log)
        self.on_error = on_error
        self.key = None               # its `selectors.SelectorKey` while watched
        self.done = threads.Latch()

    def wait(self, timeout=None):
        return self.done.wait(timeout)

    def finish(self):
        self.on_error = None  # it holds the session: no cycle, so the pipes close with it
        self.done.set()

    def abandon(self):
        """Stop watching the pipe (it may be closed after this); True: it can be closed."""
        self._reader.forget(self)
        return True


class _SharedReader:
    """One thread reading the stderr pipes of many sessions as data arrives."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()  # a pipe is never read and forgotten at the same time
        self._thread = threading.Thread(target=self._run, name="stderr-reader", daemon=True)
        self._thread.start()

    def follow(self, fd, log, on_error):
        os.set_blocking(fd, False)
        follower = _SharedFollower(self, fd, log, on_error)
        with self._lock:
            follower.key = self._selector.register(fd, selectors.EVENT_READ, follower)
        return follower

    def forget(self, follower):
        with self._lock:
            if self._selector.get_map().get(follower.fd) is follower.key:
                self._selector.unregister(follower.fd)
        follower.finish()

    def _run(self):
        while True:
            for key, _ in self._selector.select():
                follower = key.data
                with self._lock:
                    if self._selector.get_map().get(key.fd) is not key:
                        continue  # forgotten since select() returned
                    try:
                        chunk = os.read(key.fd, READ_BYTES)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        self._selector.unregister(key.fd)
                self._handle(follower, chunk)

    @staticmethod
    def _handle(follower, chunk):
        try:
            follower.logger.feed(chunk)
        except Exception as error:  # a bug must end that session, not this thread
            follower.logger.log.error("session", f"internal error reading stderr: {error!r}")
            if follower.on_error is not None:  # it stops the process: not in this thread
                threading.Thread(target=follower.on_error, daemon=True).start()
        if not chunk:
            follower.finish()


_shared = None
_shared_lock = threading.Lock()


def start_shared_reader():
    """Start the shared reader now rather than with the first session (where it can share)."""
    if CAN_SHARE:
        _shared_reader()


def _shared_reader():
    """The one `_SharedReader` of this process, started by the first call."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _SharedReader()
        return _shared
