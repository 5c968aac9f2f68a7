"""One session: a client endpoint piped to a program endpoint, from the 101 to the last byte.

`Sessions.run()` owns a session's whole life in one try/finally: CONNECT,
starting the program, its place in the running set (for shutdown, pings and
--status-path), the two pumps, and whatever happens, the teardown: the
program ended, the fork slot released, the socket closed, DISCONNECT logged
once. A program that cannot start, or a thread that cannot start, leaves
nothing running.

Threads of a session, each blocking on exactly one thing, so the same code
runs on every OS and backpressure is free:

- reader (client → stdin), the request handler's own thread: one read of the
  socket (`WebSocketEndpoint.receive`), then a blocking write to stdin. A
  slow program stops the reads, so the client's TCP window closes.
- writer (stdout → client): the program's output, framed (`framing`), one
  `sendall` per read. A slow client blocks the send, the pipe fills, the
  program blocks.

The program endpoint is a `process.ProcessEndpoint` of the session's own, or
with --broadcast a `broadcast.Subscription` to a process shared by every
client of the endpoint; both give `output()`, `write_stdin()`, `terminate()`
and `close_frame()`, so the pumps are the same.

Ending: the client leaves → stdin closed → the stop schedule
(`ProcessEndpoint.terminate`). stdout closes → the last line is sent → the
program is stopped and reaped → close frame 1000 (exit status 0) or 1011
(`exit status 3`), unlike websocketd, whose clients see 1006.
"""

import contextlib
import dataclasses
import threading

from . import framing, hints, proctree, protocol
from .launching import client_reason
from .process import ExitWatch, StdinFeeder
from .registry import Running
from .stderr import StderrFollowers
from .threads import Latch

#: A binary message up to this size reaches stdin in one write (see `_pump_client_to_program`).
WHOLE_MESSAGE_BYTES = protocol.WHOLE_FRAME_LIMIT


@dataclasses.dataclass(frozen=True)
class Timings:
    """How long the server waits for things; parameters so tests need not wait them out."""

    close_reply: float = 2.0      # for the client to answer our close frame, then cut
    orphan_pipe_grace: float = 0.5  # after the program exits, for strays to let go of its pipes
    linger: float = 1.0           # at the very end, for the client's last bytes
    hint_after: float = 3.0       # of silence from a new program before the buffering hint
    restart_delay: float = 1.0    # --broadcast: least time between two starts of the program


class Sessions:
    """Every session of one app: its settings, what runs, and the threads they share."""

    def __init__(self, config, threads, timings=Timings()):
        self.config = config
        self.threads = threads      # a `threads.Pool`, for the writers
        self.timings = timings
        self.running = Running()    # `Session`s, for shutdown and the watchdog
        self.records = Running()    # their `status` records, for --status-path
        self.exit_watch = ExitWatch()
        # with --passstderr every session reads its own stderr (lines go to its client)
        self.stderr = StderrFollowers(shared=not config.passstderr)

    def run(self, client, command, start_program, slot, record, log, devconsole=False):
        """Serve one upgraded connection to its end; see the module docstring.

        `start_program()` returns the program endpoint (OSError or ValueError
        when `command` cannot start); `slot` is the fork slot the upgrade
        took; `record(program)` gives the session's status record;
        `devconsole`: the client is the dev console page (`handshake.DEVCONSOLE`),
        which also gets stderr, the exit and the buffering hint.
        """
        log.access("session", "CONNECT")
        session = None
        try:
            try:
                program = start_program()
            except (OSError, ValueError) as error:
                log.error("process", f"cannot start {command}: {error}")
                client.close(protocol.INTERNAL_ERROR, client_reason(error))
                return
            if program.pid is not None:
                log = log.with_fields(pid=program.pid)
            session = Session(client, program, self, log, devconsole)
            with self._listed(session, record(program)):
                session.run()
        except RuntimeError as error:  # no thread could be started: out of threads or memory
            log.error("session", f"cannot run the session: {error}")
            client.close_or_abort(protocol.INTERNAL_ERROR, "server out of resources", timeout=0.1)
        except Exception as error:  # a bug: it ends this session, and writes no HTTP into it
            log.error("session", f"internal error: {error!r}")
            client.close_or_abort(protocol.INTERNAL_ERROR, "internal error", timeout=0.1)
        finally:
            if session is not None:
                session.release()
            slot.release()
            client.release(self.timings.linger)
            if session is not None:
                fields = {"exit": session.exit_words} if session.exit_words else {}
                log = log.with_fields(**fields, close=client.close_code or "")
            log.access("session", "DISCONNECT")

    @contextlib.contextmanager
    def _listed(self, session, record):
        self.running.add(session)
        self.records.add(record)
        try:
            yield
        finally:
            self.running.remove(session)
            self.records.remove(record)

    def close(self):
        """End the shared threads (the app is closing; its sessions have ended)."""
        self.exit_watch.close()
        self.stderr.close()


class Session:
    """One running session: what the pumps, the watchdog and shutdown share."""

    def __init__(self, client, program, sessions, log, devconsole=False):
        self.client = client
        self.program = program
        self.log = log
        self.devconsole = devconsole
        self._stderr_to_client = sessions.config.passstderr or devconsole
        self.waiting_for_program = False  # the reader waits for the program to read stdin
        self.exit_words = ""              # `exit status 3`, once the program is reaped
        self._config = sessions.config
        self._timings = sessions.timings
        self._sessions = sessions
        self._reader_done = Latch()
        self._stdout_closed = Latch()
        self._writer_done = Latch()
        self._give_up_lock = threading.Lock()
        self._gave_up_stdout = False
        self._stderr = None
        self._feeder = None               # a `StdinFeeder` where stdin writes cannot watch

    def run(self):
        """The two pumps, until both ends are done (the handler's thread)."""
        program = self.program
        if program.stderr_fd is not None:
            self._stderr = self._sessions.stderr.follow(
                program.stderr_fd, self.log,
                self.client if self._stderr_to_client else None, on_error=self._fail)
        try:
            if not proctree.CAN_WATCH_HANGUP:  # Windows: see `StdinFeeder`
                self._feeder = StdinFeeder(program,
                                           self._config.maxframesize or WHOLE_MESSAGE_BYTES)
            self._sessions.threads.start("session-writer", self._run_writer)
        except RuntimeError:
            self._writer_done.set()  # there is none: `release` may close the pipes
            if self._feeder is not None:
                self._feeder.close()
            raise
        if program.popen is not None:
            self._sessions.exit_watch.add(program, self._on_exit)
        self._guarded(self._pump_client_to_program, "reader")
        # The client has gone or answered our close, and the program was told to end.
        if (not self._writer_done.wait(self._timings.orphan_pipe_grace)
                and program.stdout_held_open()):
            self._give_up_stdout()
        self._writer_done.wait()

    def release(self):
        """Whatever happened: the program ended and reaped, its pipes closed (idempotent)."""
        program = self.program
        if program.popen is not None:
            self._sessions.exit_watch.discard(program)
        status = program.terminate()
        if program.popen is not None:
            self.exit_words = program.describe_exit(status)
        stderr_done = True
        if self._stderr is not None:
            grace = self._timings.orphan_pipe_grace
            stderr_done = self._stderr.wait(grace)
            if not (stderr_done or program.stderr_held_open()):
                stderr_done = self._stderr.wait()  # it has its last bytes or EOF to read
            if not stderr_done:
                stderr_done = self._stderr.abandon()
        program.kill_group()
        if stderr_done and self._writer_done.is_set():
            # a thread still blocked on a pipe closes nothing under it: its fd could be reused
            program.close_pipes()

    def silent_since(self, moment):
        """True once, if the program started before `moment`, runs, and has printed nothing."""
        return self.program.silent_since(moment)

    def tell_buffering(self):
        """The program has printed nothing for a while: the hint in the log, and in the
        dev console (sent from a thread of its own: the watchdog must not block)."""
        hint = hints.buffering_hint(self.program.argv)
        self.log.info("session", hint)
        if self.devconsole:
            threading.Thread(target=self.client.send_frames, args=(framing.event("hint", hint),),
                             name="session-hint", daemon=True).start()

    def shutdown(self):
        """End the session as if the client had left, but with 1001 (server going away)."""
        self.client.close_or_abort(protocol.GOING_AWAY, "server shutting down", timeout=0.2)
        threading.Thread(target=self.program.terminate, name="session-stop", daemon=True).start()

    # -- the two pumps ---------------------------------------------------------------

    def _pump_client_to_program(self):
        """Client messages to stdin.

        Text arrives as it comes, a "\\n" after each message. A binary
        message sent in fragments arrives over several reads of the socket;
        its pieces are held until it ends, so that `cat` reads it back whole
        and the client gets it back as one message (one read of stdout is one
        message); a larger one is passed on every WHOLE_MESSAGE_BYTES, so
        memory stays bounded. A program endpoint with `whole_messages` (a
        --broadcast subscription: clients share one stdin) gets every
        message in one write, with its `message_prefix` before each line.
        """
        binary = self._config.binary
        whole = self.program.whole_messages
        prefix = self.program.message_prefix
        line_prefix = b"\n" + prefix
        stdin_open = True
        held, held_bytes = [], 0  # the pieces of an unfinished message
        in_message = False        # the next piece continues a message
        try:
            while True:
                fragments, still_open = self.client.receive()
                data = []
                for is_text, payload, ends_message in fragments:
                    if not (is_text or binary):
                        if ends_message:
                            self.log.error("session", "binary message dropped: text mode "
                                                      "(start with --binary to pass bytes)")
                        continue
                    if prefix:
                        if not in_message:
                            held.append(prefix)
                        if is_text:
                            payload = payload.replace(b"\n", line_prefix)
                    in_message = not ends_message
                    held.append(payload)
                    held_bytes += len(payload)
                    if ends_message and is_text:
                        held.append(b"\n")
                    if (ends_message or (is_text and not whole)
                            or (not whole and held_bytes >= WHOLE_MESSAGE_BYTES)):
                        data += held
                        held, held_bytes = [], 0
                if not still_open and not whole:
                    data += held  # what came of a message the client did not finish
                if data and stdin_open:
                    stdin_open = self._write(b"".join(data))
                if not still_open:
                    break
        finally:
            self._reader_done.set()
            if self._feeder is not None:
                self._feeder.close()
        # The client left (or broke the protocol): the program ends on the stop schedule.
        self.client.stop_sending()
        self.program.terminate()

    def _write(self, data):
        """Write to stdin; while the program does not read, the client is not read either
        (no pongs come back then: not its fault, so the watchdog does not count it)."""
        self.waiting_for_program = True
        try:
            if self._feeder is not None:
                return self._feeder.put(data)
            return self.program.write_stdin(data, self._wait_stdin)
        finally:
            self.waiting_for_program = False

    def _wait_stdin(self, fd):
        """The program is not reading: wait for it, unless the client hangs up meanwhile."""
        return proctree.wait_pipe(fd, writable=True, sock=self.client.sock)

    def _run_writer(self):
        try:
            self._guarded(self._pump_program_to_client, "writer")
        finally:
            self._writer_done.set()

    def _pump_program_to_client(self):
        """The program's output to the client, then the close frame."""
        sending = True
        for frames in self.program.output():
            if sending:
                sending = self.client.send_frames(frames)
        self._stdout_closed.set()
        self._end_after_output()

    def _on_exit(self):
        """The program exited (from the exit watch's thread): does stdout close too?"""
        if not self._stdout_closed.is_set():
            threading.Thread(target=self._after_exit, name="session-exit", daemon=True).start()

    def _after_exit(self):
        grace = self._timings.orphan_pipe_grace
        if self._stdout_closed.wait(grace):
            return
        self.program.terminate()  # grandchildren in its group hold stdout open
        if self._stdout_closed.wait(grace):
            return
        if self.program.stdout_held_open():
            self._give_up_stdout()

    def _give_up_stdout(self):
        """A process outside the group (setsid), where no signal reaches, keeps stdout open."""
        with self._give_up_lock:
            if self._gave_up_stdout:
                return
            self._gave_up_stdout = True
        self.log.error("session", "a process outside the program's process group keeps "
                                  "its stdout open: ending the session without it")
        self._end_after_output()

    def _end_after_output(self):
        code, reason = self.program.close_frame()
        if self._stderr_to_client and self._stderr is not None:
            self._stderr.wait()  # its last lines go out before the close frame
        if self.devconsole:
            exit_words = self.program.describe_exit(self.program.exit_status)
            self.client.send_frames(framing.event("exit", exit_words))
        self.client.close(code, reason)
        # The client answers once it has read all we sent; one that reads slowly is waited
        # for while it reads (Linux), since cutting it off would lose what it has not read.
        unsent = self.client.unsent_bytes()
        while not self._reader_done.wait(self._timings.close_reply):
            before, unsent = unsent, self.client.unsent_bytes()
            if before is None or unsent is None or unsent >= before:
                self.client.abort()
                break

    def _fail(self):
        self.client.abort()
        self.program.terminate()

    def _guarded(self, pump, role):
        try:
            pump()
        except Exception as error:  # a bug must end this session, not hang it
            self.log.error("session", f"internal error in the {role} thread: {error!r}")
            self._fail()
