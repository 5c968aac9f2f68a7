"""One WebSocket connection bridged to one process.

Threads of a session, each blocking on exactly one thing, so the same code
runs on every OS and backpressure is free:

- reader (socket → stdin), the handler's own thread (`run`):
  `WebSocket.receive()`, then a blocking write to stdin. A slow process stops
  the reads, so the client's TCP window closes. When the client has gone, it
  waits for the rest and releases everything.
- writer (stdout → socket): one `os.read` of up to 64 KiB (less while the
  program is quiet, see `threads.ReadSize`), every line in it framed into
  one buffer, one `sendall`. A slow client blocks the sendall, the
  pipe fills, the process blocks.

Two threads shared by all sessions do the rest: stderr is logged by one
(`stderr`; with --passstderr the session has a thread of its own that sends
it), and one notices a process that exits while a grandchild keeps its
stdout open (`process.ExitWatch`). Two threads per session, not four: about
35 KiB less memory each (measured then: 98-115 KiB per idle session, was 132-146).

Ending: the client leaves → stdin closed → the stop schedule (`process`).
stdout closes → the last line is sent → the process is stopped and reaped →
close frame 1000 (exit status 0) or 1011 (`exit status 3`), unlike websocketd,
whose clients see 1006.
"""

import os
import threading
import time

from . import framing, oslayer, protocol, stderr, threads
from .process import exit_watch
from .websocket import CloseReason

READ_BYTES = 65536
#: A binary message up to this size reaches stdin in one write (see `_pump_socket_to_stdin`).
WHOLE_MESSAGE_BYTES = protocol.WHOLE_FRAME_LIMIT
#: How long the client gets to answer our close frame before the TCP connection is cut.
CLOSE_REPLY_TIMEOUT = 2.0
#: After the process exits, how long stray grandchildren may keep its pipes open.
ORPHAN_PIPE_GRACE = 0.5


class Session:
    """Runs one connection to its end; `run()` returns when everything is released."""

    def __init__(self, websocket, process, config, log):
        self.websocket = websocket
        self.process = process
        self.config = config
        self.log = log
        self.waiting_for_process = False  # the reader waits for the process to read stdin
        self.started = time.monotonic()
        self._quiet = True                # no stdout yet, and no buffering hint given
        self._reader_done = threads.Latch()
        self._stdout_closed = threads.Latch()
        self._give_up_lock = threading.Lock()
        self._gave_up_stdout = False
        self._stderr = None

    def run(self):
        self._stderr = stderr.follow(self.process.stderr_fd, self.log,
                                     self.websocket if self.config.passstderr else None,
                                     on_error=self._fail)
        writer = self._start_writer()
        exits = exit_watch()
        exits.add(self.process, self._on_exit)
        self._guarded(self._pump_socket_to_stdin, "reader")
        # The client has gone or answered our close, and the process group was stopped.
        if (not writer.wait(ORPHAN_PIPE_GRACE)
                and oslayer.pipe_is_held_open(self.process.stdout_fd)):
            self._give_up_stdout()
        else:
            writer.wait()  # it has EOF to read; it is only slow (a busy server)
        exits.discard(self.process)
        stderr_done = self._stderr.wait(ORPHAN_PIPE_GRACE)
        if not (stderr_done or oslayer.pipe_is_held_open(self.process.stderr_fd)):
            stderr_done = self._stderr.wait()  # it has its last bytes or EOF to read
        if not stderr_done:
            stderr_done = self._stderr.abandon()
        self.process.kill_group()
        if stderr_done and writer.is_set():
            # a thread still blocked on a pipe closes nothing under it: its fd could be reused
            self.process.close_pipes()
        self.websocket.release()

    def silent_since(self, moment):
        """True once, if the program started before `moment`, runs, and has printed nothing."""
        if self._quiet and self.started < moment and self.process.running:
            self._quiet = False
            return True
        return False

    def shutdown(self):
        """End the session as if the client had left, but with 1001 (server going away)."""
        if not self.websocket.close(CloseReason.GOING_AWAY, "server shutting down", timeout=0.2):
            self.websocket.abort()
        threading.Thread(target=self.process.stop, args=(self.config.closems,),
                         daemon=True).start()

    # -- the two pumps ---------------------------------------------------------------

    def _pump_socket_to_stdin(self):
        """Client messages to stdin; a binary message up to WHOLE_MESSAGE_BYTES in one write.

        A binary message sent in fragments arrives over several reads of
        the socket. Its pieces are held until it ends, so that `cat` reads
        it back whole and the client gets it back as one message (one read
        of stdout is one message); a larger one is passed on every
        WHOLE_MESSAGE_BYTES, so memory stays bounded.
        """
        binary = self.config.binary
        stdin_open = True
        held, held_bytes = [], 0  # the pieces of an unfinished binary message
        try:
            while True:
                fragments, still_open = self.websocket.receive()
                data = []
                for is_text, payload, ends_message in fragments:
                    if is_text:
                        data.append(payload)
                        if ends_message:
                            data.append(b"\n")
                    elif binary:
                        held.append(payload)
                        held_bytes += len(payload)
                        if ends_message or held_bytes >= WHOLE_MESSAGE_BYTES:
                            data += held
                            held, held_bytes = [], 0
                    elif ends_message:
                        self.log.error("session", "binary message dropped: text mode "
                                                  "(start with --binary to pass bytes)")
                if not still_open:
                    data += held  # what came of a message the client did not finish
                if data and stdin_open:
                    stdin_open = self.process.write_stdin(b"".join(data), self._wait_stdin)
                if not still_open:
                    break
        finally:
            self._reader_done.set()
        # The client left (or broke the protocol): the process ends on the stop schedule.
        self.websocket.stop_sending()
        self.process.stop(self.config.closems)

    def _wait_stdin(self, fd):
        """The process is not reading: wait for it, unless the client hangs up meanwhile."""
        self.waiting_for_process = True
        try:
            return oslayer.wait_pipe(fd, writable=True, sock=self.websocket.sock)
        finally:
            self.waiting_for_process = False

    def _pump_stdout_to_socket(self):
        """stdout to the client. In text mode the reads shrink while the program is
        quiet (`threads.ReadSize`); in binary mode each read is a message, so all
        of them ask for READ_BYTES."""
        fd = self.process.stdout_fd
        binary = self.config.binary
        framer = framing.stdout_framer(binary, self.config.passstderr)
        sending = True
        read_size = threads.ReadSize(READ_BYTES)
        size = READ_BYTES if binary else read_size.now
        while True:
            try:
                chunk = os.read(fd, size)
            except OSError:
                chunk = b""
            if not chunk:
                break
            if not binary:
                size = read_size.after(len(chunk))
            self._quiet = False
            out = framer.feed(chunk)
            if out and sending:
                sending = self.websocket.send_frames(out)
        self._stdout_closed.set()
        last = framer.finish()
        if last and sending:
            self.websocket.send_frames(last)
        self._end_after_stdout_closed()

    def _on_exit(self):
        """The process exited (from the exit watch's thread): does stdout close too?"""
        if not self._stdout_closed.is_set():
            threading.Thread(target=self._after_exit, name="session-exit", daemon=True).start()

    def _after_exit(self):
        if self._stdout_closed.wait(ORPHAN_PIPE_GRACE):
            return
        self.process.stop(self.config.closems)  # grandchildren in its group hold stdout open
        if self._stdout_closed.wait(ORPHAN_PIPE_GRACE):
            return
        if oslayer.pipe_is_held_open(self.process.stdout_fd):
            self._give_up_stdout()

    def _give_up_stdout(self):
        """A process outside the group (setsid), where no signal reaches, keeps stdout open."""
        with self._give_up_lock:
            if self._gave_up_stdout:
                return
            self._gave_up_stdout = True
        self.log.error("session", "a process outside the program's process group keeps "
                                  "its stdout open: ending the session without it")
        self._end_after_stdout_closed()

    def _end_after_stdout_closed(self):
        status = self.process.stop(self.config.closems)
        if self.config.passstderr:
            self._stderr.wait()  # its last lines go out before the close frame
        if status == 0:
            self.websocket.close(CloseReason.NORMAL_CLOSURE)
        else:
            self.websocket.close(CloseReason.INTERNAL_ERROR, oslayer.describe_exit(status))
        if not self._reader_done.wait(CLOSE_REPLY_TIMEOUT):
            self.websocket.abort()

    def _fail(self):
        self.websocket.abort()
        self.process.stop(self.config.closems)

    def _guarded(self, pump, role):
        try:
            pump()
        except Exception as error:  # a bug must end this session, not hang it
            self.log.error("session", f"internal error in the {role} thread: {error!r}")
            self._fail()

    def _start_writer(self):
        """Start the writer thread; the Latch it sets when it ends."""
        done = threads.Latch()

        def write():
            try:
                self._guarded(self._pump_stdout_to_socket, "writer")
            finally:
                done.set()
        threads.start(write)
        return done
