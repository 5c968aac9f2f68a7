"""A program's stderr: each line logged (ERROR, category `stderr`), and with --passstderr sent.

`StderrLines` is the one place where stderr bytes become log lines. An app's
`StderrFollowers` decides who reads each pipe: one shared thread (epoll or
kqueue) reads the stderr of every program whose lines are only logged, so an
idle session costs no thread for it; a thread of its own reads where the
shared one cannot do the job: with --passstderr, where lines also go to the
client and a send may block on a slow one, and where pipes cannot be polled
(Windows). The shared thread, where there is one, runs from the start
(`StderrFollowers(shared=True)`) to `StderrFollowers.close()`.

`follow()` returns an object with `wait(timeout)` (True once EOF was read and
the last line handled) and `abandon()` (stop reading: after it, the pipe may
be closed even while a stray process still holds its write end).
"""

import os
import selectors
import threading

from . import framing

READ_BYTES = 65536

_POLLABLE_SELECTORS = ("EpollSelector", "KqueueSelector", "DevpollSelector")
#: True where one thread can wait on many pipes and take new ones while it waits.
CAN_SHARE = selectors.DefaultSelector.__name__ in _POLLABLE_SELECTORS


class StderrLines:
    """stderr bytes → lines for the log (`log.StderrLog`); a line over 64 KiB is cut there."""

    def __init__(self, log):
        self.log = log
        self.pending = b""
        self._logged = log.stderr_log()  # a line each, or with --logformat=short summed up

    def feed(self, chunk):
        """Log the complete lines of `chunk`; an empty chunk is EOF (the rest is logged)."""
        lines, self.pending = framing.split_lines(self.pending, chunk)
        for line in lines:
            self._logged.line(line.decode("utf-8", "replace"))
        if not chunk:
            self._logged.end()


class StderrFollowers:
    """Who reads the stderr pipes of one app's programs (see the module docstring)."""

    def __init__(self, shared=True):
        self._shared = _SharedReader() if shared and CAN_SHARE else None
        self._lock = threading.Lock()

    def follow(self, fd, log, client=None, on_error=None):
        """Start handling stderr `fd`: logged, and with `client` (--passstderr) framed to it.

        `on_error` is called if handling fails with a bug, so the session ends
        instead of hanging.
        """
        with self._lock:
            shared = self._shared
        if client is None and shared is not None:
            return shared.follow(fd, log, on_error)
        return _ThreadFollower(fd, log, client, on_error)

    def close(self):
        """End the shared thread (the app is closing); safe to call twice."""
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            shared.close()


class _ThreadFollower:
    """One thread reading one stderr pipe with blocking reads."""

    def __init__(self, fd, log, client, on_error):
        self._fd = fd
        self._lines = StderrLines(log)
        self._client = client
        self._framer = framing.LineFramer(stream="stderr") if client is not None else None
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="stderr", daemon=True)
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
                        self._client.send_frames(out)
                self._lines.feed(chunk)
                if not chunk:
                    return
        except Exception as error:  # a bug must end the session, not hang it
            self._lines.log.error("session", f"internal error in the stderr thread: {error!r}")
            if self._on_error is not None:
                self._on_error()
        finally:
            self._on_error = None  # it holds the session: no cycle, so the pipes close with it


class _SharedFollower:
    """One stderr pipe watched by the shared reader."""

    def __init__(self, reader, fd, log, on_error):
        self._reader = reader
        self.fd = fd
        self.lines = StderrLines(log)
        self.on_error = on_error
        self.key = None               # its `selectors.SelectorKey` while watched
        self.done = threading.Event()

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
    """One thread reading the stderr pipes of many programs as data arrives."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()  # a pipe is never read and forgotten at the same time
        self._wake_read, self._wake_write = os.pipe()  # `close` writes one byte
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._closing = False
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

    def close(self):
        self._closing = True
        os.write(self._wake_write, b"\0")
        self._thread.join()
        with self._lock:
            followers = [key.data for key in self._selector.get_map().values() if key.data]
        for follower in followers:
            self.forget(follower)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _run(self):
        while not self._closing:
            for key, _ in self._selector.select():
                follower = key.data
                if follower is None:  # woken by `close`
                    continue
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
            follower.lines.feed(chunk)
        except Exception as error:  # a bug must end that session, not this thread
            follower.lines.log.error("session", f"internal error reading stderr: {error!r}")
            if follower.on_error is not None:  # it stops the process: not in this thread
                threading.Thread(target=follower.on_error, name="stderr-error",
                                 daemon=True).start()
        if not chunk:
            follower.finish()
