"""Starting COMMAND, feeding it, and ending it on websocketd's schedule.

The child runs in its own process group (see `oslayer`), so ending a session
ends a shell pipeline's children too, unlike websocketd. The end is always the
same schedule: close stdin; if the group still runs after 100 ms + closems,
SIGINT; after 250 ms + closems more, SIGTERM; after 500 ms + closems more,
SIGKILL. Whoever ends the session first (client gone, stdout closed, server
shutdown) runs it; later callers wait for the same result.
"""

import os
import subprocess
import threading
import time

from . import oslayer

#: (seconds to wait, then what to send) before adding closems to each wait.
STOP_SCHEDULE = ((0.100, oslayer.interrupt), (0.250, oslayer.terminate), (0.500, oslayer.kill))
_POLL = 0.005
#: After SIGKILL, how long to wait for the group; what still shows then is a zombie or unkillable.
_KILL_WAIT = 2.0


class ChildProcess:
    """One running COMMAND with pipes on stdin, stdout and stderr."""

    def __init__(self, argv, env, cwd=None):
        with oslayer.every_cpu():  # the server's threads keep to one CPU; the child need not
            self.popen = subprocess.Popen(
                oslayer.launch_argv(argv),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=cwd, bufsize=0, close_fds=True, **oslayer.child_process_options())
        self.pid = self.popen.pid
        oslayer.prepare_stdin(self.popen.stdin.fileno())
        self.stdout_fd = self.popen.stdout.fileno()
        self.stderr_fd = self.popen.stderr.fileno()
        self._stdin = self.popen.stdin
        self._stdin_lock = threading.Lock()  # held by write_stdin while it writes
        self._close_requested = False
        self._stop_lock = threading.Lock()

    def write_stdin(self, data, wait_writable=None):
        """Write all of `data`; False once stdin is gone.

        Blocks while the pipe is full: a slow process slows the client. On a
        non-blocking stdin (see `oslayer.prepare_stdin`) the wait is
        `wait_writable(fd)`, which returns False to give up.
        """
        view = memoryview(data)
        with self._stdin_lock:
            if self._close_requested:
                return False
            try:
                fd = self._stdin.fileno()
                while view:
                    try:
                        view = view[os.write(fd, view):]
                    except BlockingIOError:
                        if not wait_writable(fd):
                            return False
                return True
            except (OSError, ValueError):
                return False
            finally:
                if self._close_requested:
                    self._close_stdin_file()

    def close_stdin(self):
        """Close stdin so the process reads EOF. Safe from any thread, and twice.

        While another thread is blocked writing to stdin (the process stopped
        reading), the fd is not closed under it, where its number could be
        reused: that writer closes it when its write ends, at the latest when
        the stop schedule's signals end the process.
        """
        self._close_requested = True
        if self._stdin_lock.acquire(blocking=False):
            try:
                self._close_stdin_file()
            finally:
                self._stdin_lock.release()

    def _close_stdin_file(self):
        try:
            self._stdin.close()
        except OSError:
            pass

    def wait(self):
        """Block until the process exits; its exit status (negative: killed by that signal)."""
        return self.popen.wait()

    @property
    def running(self):
        """False once the process was seen to exit (no system call: any thread may ask)."""
        return self.popen.returncode is None

    def alive(self):
        return oslayer.group_alive(self.popen)

    def stop(self, closems=0):
        """End the process (and its group) on the schedule; return its exit status.

        Thread-safe: the first caller runs the schedule, the others wait for it.
        """
        with self._stop_lock:
            self.close_stdin()
            extra = closems / 1000.0
            for delay, send in STOP_SCHEDULE:
                if self._wait_group(delay + extra):
                    break
                send(self.popen)
            else:
                self._wait_group(_KILL_WAIT)
            return self.popen.wait()

    def kill_group(self):
        """SIGKILL whatever is left in the group (stray grandchildren) once the session ends."""
        if self.alive():
            oslayer.kill(self.popen)

    def _wait_group(self, timeout):
        """Wait until the whole group has exited; False on timeout."""
        deadline = time.monotonic() + timeout
        if not oslayer.wait_exit(self.popen, timeout):
            return False
        while oslayer.group_alive(self.popen):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def close_pipes(self):
        for pipe in (self.popen.stdout, self.popen.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        self.close_stdin()


class ExitWatch:
    """One thread noticing, for every session, a process that exits while its session goes on.

    A session learns that its program ended from EOF on stdout; this is for
    when EOF does not come because a grandchild still holds stdout. Every
    `INTERVAL` it asks the OS whether any child awaits reaping (one system
    call, `oslayer.some_child_exited`), and only then looks at each watched
    process; `on_exit` runs in this thread and must not block.
    """

    INTERVAL = 0.1

    def __init__(self):
        self._watched = {}  # ChildProcess: on_exit
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="exit-watch", daemon=True).start()

    def add(self, process, on_exit):
        with self._lock:
            self._watched[process] = on_exit

    def discard(self, process):
        with self._lock:
            self._watched.pop(process, None)

    def _run(self):
        while True:
            time.sleep(self.INTERVAL)
            if not self._watched or not oslayer.some_child_exited():
                continue
            with self._lock:
                watched = list(self._watched.items())
            for process, on_exit in watched:
                if process.popen.poll() is not None:
                    self.discard(process)
                    on_exit()


_exit_watch = None
_exit_watch_lock = threading.Lock()


def exit_watch():
    """The process's one `ExitWatch`, started by the first call."""
    global _exit_watch
    with _exit_watch_lock:
        if _exit_watch is None:
            _exit_watch = ExitWatch()
        return _exit_watch
