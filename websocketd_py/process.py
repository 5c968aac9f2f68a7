"""The program's end of a session: start it, feed its stdin, frame its stdout, end it.

A `ProcessEndpoint` runs one program with pipes on stdin, stdout and stderr,
in a process group of its own (see `launching` and `proctree`), so ending a
session ends a shell pipeline's children too, unlike websocketd. The end is
always the same schedule, `terminate()`: close stdin; if the group still
runs after 100 ms + closems, SIGINT; after 250 ms + closems more, SIGTERM;
after 500 ms + closems more, SIGKILL. On Windows the steps are
CTRL_BREAK_EVENT (with a console only), then ending the program's Job
Object, whose whole tree is what must have exited (`proctree`, `winjob`).
Whoever ends the session first (client gone, stdout closed, server
shutdown) runs it; later callers wait for the same result. Every wait is
bounded, and a step that fails is logged and the next one runs.
"""

import collections
import os
import subprocess
import threading
import time

from . import framing, launching, proctree, protocol, tuning
from .readsize import ReadSize

READ_BYTES = 65536
#: (seconds to wait, then what to send) before adding closems to each wait.
STOP_SCHEDULE = ((0.100, proctree.interrupt), (0.250, proctree.terminate),
                 (0.500, proctree.kill))
_POLL = 0.005
#: After SIGKILL, how long to wait for the group; what still shows then is a zombie or unkillable.
_KILL_WAIT = 2.0


class ProcessEndpoint:
    """One running program. Raises `launching.LaunchError` when it cannot start, saying why.

    `framer` turns its stdout into frames for `output()` (see
    `framing.stdout_framer`); a CGI script's stdout is read as it is. With
    `partial_after` (seconds, text mode), the start of a line that has waited that long
    for its newline is given as a message of its own (`LineFramer.flush_partial`): a
    prompt such as `Guess: ` shows before the answer it asks for. `log` takes a failed
    stop step.
    """

    whole_messages = False  # client messages may reach stdin piece by piece
    message_prefix = b""

    def __init__(self, argv, env, closems=0, cwd=None, framer=None, partial_after=None,
                 log=None):
        with tuning.every_cpu():  # the server's threads may keep to one CPU; the child need not
            try:
                self.popen, self._job = proctree.start(
                    launching.launch_argv(argv),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env, cwd=cwd, bufsize=0, close_fds=True)
            except OSError as error:
                raise launching.start_failure(argv[0], error) from error
        self.log = log
        self.program_path = argv[0]
        self.pid = self.popen.pid
        self.argv = tuple(argv)  # as asked for (the buffering hint names the fix for it)
        self.closems = closems
        proctree.prepare_stdin(self.popen.stdin.fileno())
        self.stdout_fd = self.popen.stdout.fileno()
        self.stderr_fd = self.popen.stderr.fileno()
        self.framer = framer
        self.partial_after = partial_after
        self.printed = False                 # stdout gave something (for the buffering hint)
        self.inside_message = False          # `output()` is in the middle of a long line
        self._started = time.monotonic()
        self._hinted = False
        self._stdin = self.popen.stdin
        self._stdin_lock = threading.Lock()  # held by write_stdin while it writes
        self._close_requested = False
        self._stop_lock = threading.Lock()
        self._told_job_failure = False

    # -- stdout ----------------------------------------------------------------------

    def output(self):
        """Frames of stdout as it comes, through the framer, until EOF.

        In text mode the reads are small while the program is quiet (`ReadSize`);
        in binary mode each read is a message, so every read asks for READ_BYTES.
        A piece that ends a line sent in fragments is given on its own, so that
        `inside_message` tells a consumer where whole messages start.
        """
        framer = self.framer
        read_size = ReadSize(READ_BYTES)
        binary = isinstance(framer, framing.BinaryFramer)
        size = READ_BYTES if binary else read_size.now
        partial_after = None if binary else self.partial_after
        while True:
            if (partial_after and framer.pending
                    and not proctree.readable_within(self.stdout_fd, partial_after)):
                frames = framer.flush_partial()
                if frames:
                    yield frames
            try:
                chunk = os.read(self.stdout_fd, size)
            except OSError:
                chunk = b""
            if not chunk:
                break
            if not binary:
                size = read_size.after(len(chunk))
            self.printed = True
            if framer.started:
                end = chunk.find(b"\n") + 1 or len(chunk)
                yield from self._framed(framer, chunk[:end])
                chunk = chunk[end:]
            if chunk:
                yield from self._framed(framer, chunk)
        last = framer.finish()
        self.inside_message = False
        if last:
            yield last

    def _framed(self, framer, chunk):
        frames = framer.feed(chunk)
        self.inside_message = framer.started
        if frames:
            yield frames

    def silent_since(self, moment):
        """True once, if the program started before `moment`, runs, and has printed nothing."""
        if not (self._hinted or self.printed) and self._started < moment and self.running:
            self._hinted = True
            return True
        return False

    def stdout_held_open(self):
        """Nothing to read on stdout and no EOF: a stray process still holds its write end."""
        return proctree.pipe_is_held_open(self.stdout_fd)

    def stderr_held_open(self):
        return proctree.pipe_is_held_open(self.stderr_fd)

    # -- stdin -----------------------------------------------------------------------

    def write_stdin(self, data, wait_writable=None):
        """Write all of `data`; False once stdin is gone.

        Blocks while the pipe is full: a slow process slows the client. On a
        non-blocking stdin (see `proctree.prepare_stdin`) the wait is
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

    # -- the end -----------------------------------------------------------------------

    @property
    def running(self):
        """False once the process was seen to exit (no system call: any thread may ask)."""
        return self.popen.returncode is None

    @property
    def exit_status(self):
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self.popen.returncode

    def terminate(self):
        """End the process (and its group) on the schedule; return its exit status.

        Thread-safe and idempotent: the first caller runs the schedule, the
        others wait for it. None if even SIGKILL did not end it in time.
        """
        with self._stop_lock:
            self.close_stdin()
            extra = self.closems / 1000.0
            for delay, send in STOP_SCHEDULE:
                if self._wait_group(delay + extra):
                    break
                self._stop_step(send)
            else:
                self._wait_group(_KILL_WAIT)
            proctree.wait_exit(self.popen, 0)
            if self._job is not None:
                self._job.close()
            return self.popen.returncode

    def close_frame(self):
        """The close frame for the client once stdout has closed: (code, reason) by the exit
        status, after the stop schedule has ended the program."""
        status = self.terminate()
        if status == 0:
            return protocol.NORMAL_CLOSURE, ""
        return protocol.INTERNAL_ERROR, self.describe_exit(status)

    def describe_exit(self, status):
        """`exit status 3`, `killed by signal 9`; but exit status 127 with nothing printed
        (`env` did not find the interpreter the #! line names) says what is wrong instead."""
        if status == 127 and not self.printed:
            problem = launching.script_problem(self.program_path)
            if problem is not None:
                return problem[0]
        return proctree.describe_exit(status)

    def kill_group(self):
        """SIGKILL whatever is left in the group (stray grandchildren) once the session ends."""
        if self._group_alive():
            self._stop_step(proctree.kill)

    def _wait_group(self, timeout):
        """Wait until the whole group has exited; False on timeout."""
        deadline = time.monotonic() + timeout
        if not proctree.wait_exit(self.popen, timeout):
            return False
        while self._group_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def _group_alive(self):
        try:
            return proctree.group_alive(self.popen, self._job)
        except OSError as error:  # Windows could not ask the job: the program alone counts
            if not self._told_job_failure:
                self._told_job_failure = True
                self._log_failure(error)
            return self.popen.poll() is None

    def _stop_step(self, send):
        try:
            send(self.popen, self._job)
        except OSError as error:
            self._log_failure(error)

    def _log_failure(self, error):
        if self.log is not None:
            self.log.error("process", f"while ending the program: {error}")

    def close_pipes(self):
        for pipe in (self.popen.stdout, self.popen.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        self.close_stdin()


class StdinFeeder:
    """Writes to a program's stdin from a thread of its own, so that the session's reader
    keeps reading the client, and sees it leave, while the program does not read.

    For where a blocked write cannot also watch the client's socket (Windows
    pipes cannot be polled: `proctree.CAN_WATCH_HANGUP`). It holds at most
    `limit` bytes (--maxframesize): past that, `put` blocks, and a client
    that leaves behind more unread data than that is noticed when the
    program reads or ends.
    """

    def __init__(self, program, limit):
        self._program = program
        self._limit = limit
        self._chunks = collections.deque()
        self._bytes = 0
        self._open = True         # until `close()`
        self._stdin_gone = False  # a write failed: the program's stdin is closed
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="session-stdin", daemon=True)
        self._thread.start()      # RuntimeError if it cannot start

    def put(self, data):
        """Queue `data` for stdin; False once stdin is gone."""
        with self._changed:
            self._changed.wait_for(lambda: self._bytes < self._limit or self._stdin_gone)
            if self._stdin_gone:
                return False
            self._chunks.append(data)
            self._bytes += len(data)
            self._changed.notify_all()
            return True

    def close(self):
        """No more data: the thread ends once the queue is written (or stdin is gone)."""
        with self._changed:
            self._open = False
            self._changed.notify_all()

    def _run(self):
        written = False
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._chunks or not self._open)
                    if not self._chunks:
                        return
                    data = self._chunks.popleft()
                written = self._program.write_stdin(data, _wait_writable)
                with self._changed:
                    self._bytes -= len(data)
                    self._changed.notify_all()
                if not written:
                    return
        finally:
            if not written:  # failed, or a bug: `put` must not wait for ever
                with self._changed:
                    self._stdin_gone = True
                    self._chunks.clear()
                    self._changed.notify_all()


def _wait_writable(fd):
    """A non-blocking stdin (where `proctree.prepare_stdin` made it one): wait for room."""
    return proctree.wait_pipe(fd, writable=True)


class ExitWatch:
    """One thread noticing, for every session, a process that exits while its session goes on.

    A session learns that its program ended from EOF on stdout; this is for
    when EOF does not come because a grandchild still holds stdout. Every
    `interval` it asks the OS whether any child awaits reaping (one system
    call, `proctree.some_child_exited`), and only then looks at each watched
    process; `on_exit` runs in this thread and must not block. The thread
    ends with `close()`.
    """

    def __init__(self, interval=0.1):
        self._interval = interval
        self._watched = {}  # ProcessEndpoint: on_exit
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
        self._thread.start()

    def add(self, process, on_exit):
        with self._lock:
            self._watched[process] = on_exit

    def discard(self, process):
        with self._lock:
            self._watched.pop(process, None)

    def close(self):
        """End the thread (server or app closing)."""
        self._closed.set()
        self._thread.join()

    def _run(self):
        while not self._closed.wait(self._interval):
            if not self._watched or not proctree.some_child_exited():
                continue
            with self._lock:
                watched = list(self._watched.items())
            for process, on_exit in watched:
                if process.popen.poll() is not None:
                    self.discard(process)
                    on_exit()
