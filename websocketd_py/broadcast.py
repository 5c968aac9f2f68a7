"""--broadcast: one shared process per endpoint, every line to every client.

A `Hub` per endpoint (COMMAND, or one script of --dir) owns the shared
process. Its supervisor thread starts the process (at the first client, or
at startup with --broadcast=eager), reads stdout, frames each read ONCE and
appends the bytes to every client's queue; it never sends, so a slow client
cannot stall the others. When the process exits while clients are connected
(or always, in eager mode) it starts a new one, at most one start per
RESTART_DELAY; the clients stay connected and get the new process's lines.
When the last client leaves (lazy mode) the process is stopped on the
--closems schedule; a later client starts a fresh one. A client joins just
after its handshake and gets the lines printed from then on, none before.
The process's environment is its endpoint's, with no client's facts (see
`app.WebsocketdApp._shared_environment`); it holds no fork slot: each client
does, so --maxforks caps the connections.

Each `Client` is one connection: its handler thread sends what its queue
holds, its reader thread writes its messages to the shared stdin, each
message whole in one write (`ChildProcess.write_stdin` serialises writes), so
messages of two clients never interleave. A client whose queue would grow
past --broadcast-backlog bytes is dropped from the hub and closed with 1008.
"""

import collections
import os
import threading
import time

from . import framing, oslayer, stderr
from .process import ChildProcess
from .websocket import CloseReason

READ_BYTES = 65536
#: Least time between two starts of a program that exits on its own: a crashing one must not spin.
RESTART_DELAY = 1.0
#: How long the client gets to answer our close frame before the TCP connection is cut.
CLOSE_REPLY_TIMEOUT = 2.0
#: How long a 1008 or 1011 close frame may wait behind a send under way before the
#: connection is cut instead.
CLOSE_SEND_TIMEOUT = 1.0
#: After the process ended, how long its stderr's last lines are waited for.
STDERR_GRACE = 0.5


class Hubs:
    """The hubs of one server, one per endpoint argv, made at an endpoint's first client."""

    def __init__(self, config, log, environment_for):
        self._config = config
        self._log = log
        self._environment_for = environment_for  # Endpoint -> the shared process's environment
        self._hubs = {}                           # argv: Hub
        self._all = ()                            # the same hubs, replaced on each addition
        self._lock = threading.Lock()

    def hub_for(self, endpoint):
        with self._lock:
            hub = self._hubs.get(endpoint.argv)
            if hub is None:
                hub = Hub(endpoint, self._config, self._log, self._environment_for)
                self._hubs[endpoint.argv] = hub
                self._all = self._all + (hub,)
            return hub

    def snapshot(self):
        """The hubs now; takes no lock, so a signal handler may call it."""
        return self._all

    def close(self):
        """Server shutdown: no more starts, every shared process on its stop schedule."""
        for hub in self.snapshot():
            hub.close()

    def wait_stopped(self, timeout):
        """True once every hub's process has been reaped (within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        return all(hub.wait_stopped(deadline - time.monotonic()) for hub in self.snapshot())

    def kill_all(self):
        """SIGKILL every shared process group. Takes no lock (see `server.ShutdownRequest`)."""
        for hub in self.snapshot():
            process = hub.process
            if process is not None:
                process.kill_group()


class Hub:
    """One endpoint's shared process and the clients that receive its output.

    `_lock` guards the client set (replaced, never changed in place, so the
    supervisor reads it without the lock), the current process and the flags.
    """

    def __init__(self, endpoint, config, log, environment_for):
        self.endpoint = endpoint
        self.process = None             # the running ChildProcess, None between two
        self._process_log = None        # the log with its id and pid
        self._config = config
        self._log = log.context(command=endpoint.argv[0])
        self._environment_for = environment_for
        self._lock = threading.Condition()
        self._clients = frozenset()
        self._eager = False             # keep a process running even without clients
        self._closing = False           # server shutdown: start nothing any more
        self._stop_requested = False    # the current process is being stopped by us
        self._supervisor = None         # the thread running processes while they are wanted
        self._quiet = True              # the current process has printed nothing yet
        self._started = 0.0

    # -- clients (their own threads) -----------------------------------------------

    def keep_running(self):
        """--broadcast=eager: start the process now and restart it whenever it exits."""
        with self._lock:
            self._eager = True
            self._supervise_if_needed()

    def join(self, client):
        with self._lock:
            if self._closing:
                return False
            self._clients = self._clients | {client}
            self._supervise_if_needed()
            return True

    def leave(self, client):
        """Take `client` off; the last one to leave (lazy mode) stops the process."""
        with self._lock:
            self._clients = self._clients - {client}
            self._lock.notify_all()  # a write waiting for a process may give up now
            if self._clients or self._eager or self.process is None or self._stop_requested:
                return
            self._stop_requested = True
            process = self.process
        self._process_log.info("broadcast", "last client left: stopping the program")
        _in_thread(process.stop, self._config.closems)

    def write(self, data, client, wait_writable):
        """Write one client's whole messages to stdin; wait for a process if none runs yet."""
        with self._lock:
            self._lock.wait_for(lambda: self.process is not None or self._closing
                                or client not in self._clients)
            process = self.process
        if process is not None:
            process.write_stdin(data, wait_writable)

    def silent_since(self, moment):
        """True once per process, if it started before `moment`, runs, and printed nothing."""
        if self._quiet and self._started < moment and self.process is not None:
            self._quiet = False
            return True
        return False

    def send_frames(self, frames):
        """What --passstderr's stderr follower sends (whole messages): to every client."""
        _offer(self._clients, frames)
        return True

    # -- shutdown ----------------------------------------------------------------------

    def close(self):
        """Server shutdown: start nothing more, stop the process (its clients get 1001)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            process, self._stop_requested = self.process, True
        if process is not None:
            _in_thread(process.stop, self._config.closems)

    def wait_stopped(self, timeout):
        """After `close`: True once the last process was reaped (within `timeout` seconds)."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.join(max(0.0, timeout))
            return not supervisor.is_alive()
        return True

    # -- the supervisor thread ---------------------------------------------------------

    def _wanted(self):
        return not self._closing and (self._eager or bool(self._clients))

    def _supervise_if_needed(self):
        """With `_lock` held: start the supervisor unless it runs."""
        if self._supervisor is None and self._wanted():
            self._supervisor = threading.Thread(target=self._supervise, name="broadcast",
                                                daemon=True)
            self._supervisor.start()

    def _supervise(self):
        restart_at = 0.0
        while True:
            with self._lock:
                self._lock.wait_for(lambda: not self._wanted() or time.monotonic() >= restart_at,
                                    max(0.0, restart_at - time.monotonic()))
                if not self._wanted():
                    self._supervisor = None
                    return
                process = self._start()
            if process is None:
                restart_at = time.monotonic() + RESTART_DELAY
                continue
            try:
                self._run(process)
            except Exception as error:  # a bug must not end the hub for good
                self._process_log.error("broadcast", f"internal error: {error!r}")
                process.stop(self._config.closems)
            with self._lock:
                self.process = None
                planned = self._stop_requested
                clients = len(self._clients)
            if not planned and self._wanted():
                restart_at = self._started + RESTART_DELAY
                self._process_log.info("broadcast", f"the program ended with {clients} "
                                                    "client(s) connected: starting it again")

    def _start(self):
        """With `_lock` held: the new process, or None (its clients are closed with 1011)."""
        env = self._environment_for(self.endpoint)
        try:
            process = ChildProcess(self.endpoint.argv, env)
        except (OSError, ValueError) as error:
            self._log.error("broadcast", f"cannot start {self.endpoint.argv[0]}: {error}")
            failed, self._clients = self._clients, frozenset()
            self._lock.notify_all()  # their writes waiting for a process give up
            for client in failed:
                client.close_soon(CloseReason.INTERNAL_ERROR, "cannot start the program")
            return None
        self.process = process
        self._process_log = self._log.with_fields(id=env["UNIQUE_ID"], pid=process.pid)
        self._stop_requested = False
        self._quiet = True
        self._started = time.monotonic()
        self._lock.notify_all()  # writes waiting for a process
        self._process_log.info("broadcast", "program started")
        return process

    def _run(self, process):
        """Broadcast stdout until EOF, then end and reap the process."""
        log = self._process_log
        errors = stderr.follow(process.stderr_fd, log,
                               self if self._config.passstderr else None,
                               on_error=lambda: process.stop(self._config.closems))
        framer = framing.stdout_framer(self._config.binary, self._config.passstderr)
        receivers = frozenset()
        while True:
            try:
                chunk = os.read(process.stdout_fd, READ_BYTES)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self._quiet = False
            if framer.started:
                # The rest of a long line goes to the clients that got its start: a
                # client joins between two messages, never inside one.
                end = chunk.find(b"\n") + 1 or len(chunk)
                _offer(receivers, framer.feed(chunk[:end]))
                chunk = chunk[end:]
            if not framer.started:
                receivers = self._clients
            if chunk:
                _offer(receivers, framer.feed(chunk))
        _offer(receivers, framer.finish())
        status = process.stop(self._config.closems)
        stderr_done = errors.wait(STDERR_GRACE) or errors.abandon()
        process.kill_group()
        if stderr_done:
            process.close_pipes()
        log.info("broadcast", f"program ended: {oslayer.describe_exit(status)}")


class Client:
    """One connection of a hub: its queue, its sender (the handler thread) and its reader.

    Duck-types `session.Session` for the app's watcher and the server's
    shutdown (`websocket`, `log`, `waiting_for_process`, `silent_since`,
    `shutdown`); `process` is None: the shared process belongs to the hub.
    `_changed` guards the queue and `_ending`.
    """

    process = None

    def __init__(self, hub, websocket, client_id, config, log):
        self.websocket = websocket
        self.log = log
        self.waiting_for_process = False  # the reader waits for a process, or for it to read
        self._hub = hub
        self._config = config
        self._prefix = f"{client_id} ".encode() if config.broadcast_ids else b""
        self._changed = threading.Condition()
        self._queue = collections.deque()  # frames not yet taken by the sender
        self._queued = 0                   # their bytes
        self._ending = False               # the sender stops: nothing more is queued
        self._reader_done = threading.Event()

    def run(self):
        """Serve the connection to its end (in the handler thread)."""
        if not self._hub.join(self):
            self.shutdown()
        reader = threading.Thread(target=self._guarded, args=(self._pump_socket_to_stdin,),
                                  name="broadcast-reader", daemon=True)
        reader.start()
        try:
            self._guarded(self._send_queued)
        finally:
            self._hub.leave(self)
        if not self._reader_done.wait(CLOSE_REPLY_TIMEOUT):
            self.websocket.abort()
        reader.join()
        self.websocket.release()

    def offer(self, frames):
        """Queue frames (the hub's threads: never blocks); too far behind: closed with 1008.

        What one read of the program gives is always taken by an empty
        queue, so a backlog smaller than that still lets a client keep up.
        """
        with self._changed:
            if self._ending:
                return
            if self._queue and self._queued + len(frames) > self._config.broadcast_backlog:
                self._ending = True
                self._queue.clear()
                self._queued = 0
                too_slow = True
            else:
                self._queue.append(frames)
                self._queued += len(frames)
                too_slow = False
            self._changed.notify()
        if too_slow:
            self.log.info("broadcast", "client too slow: more than "
                                       f"{self._config.broadcast_backlog} bytes behind, "
                                       "closing with 1008")
            self.close_soon(CloseReason.POLICY_VIOLATION, "too slow")

    def close_soon(self, code, reason):
        """End the connection with this close frame, from a thread of its own: a send
        under way to a client that does not read would block the caller."""
        self._end()
        _in_thread(self._close, code, reason)

    def silent_since(self, moment):
        return self._hub.silent_since(moment)

    def shutdown(self):
        """Server shutdown: 1001 to the client; the hub stops the process."""
        self._end()
        if not self.websocket.close(CloseReason.GOING_AWAY, "server shutting down", timeout=0.2):
            self.websocket.abort()

    def _end(self):
        with self._changed:
            self._ending = True
            self._queue.clear()
            self._queued = 0
            self._changed.notify()

    def _close(self, code, reason):
        if not self.websocket.close(code, reason, timeout=CLOSE_SEND_TIMEOUT):
            self.websocket.abort()

    def _send_queued(self):
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._ending)
                if self._ending:
                    return
                frames = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
            if not self.websocket.send_frames(frames):
                return

    def _pump_socket_to_stdin(self):
        """Client messages, each whole (fragments wait for the last), to the shared stdin."""
        binary, prefix = self._config.binary, self._prefix
        line_prefix = b"\n" + prefix
        message = []  # the parts of a message still arriving
        try:
            while True:
                fragments, still_open = self.websocket.receive()
                ready = []
                for is_text, payload, ends_message in fragments:
                    if not (is_text or binary):
                        if ends_message:
                            self.log.error("session", "binary message dropped: text mode "
                                                      "(start with --binary to pass bytes)")
                        continue
                    if not message:
                        message.append(prefix)
                    message.append(payload.replace(b"\n", line_prefix)
                                   if is_text and prefix else payload)
                    if ends_message:
                        if is_text:
                            message.append(b"\n")
                        ready += message
                        message = []
                if ready:
                    self._write(b"".join(ready))
                if not still_open:
                    break
        finally:
            self._reader_done.set()
            self.websocket.stop_sending()
            self._end()

    def _write(self, data):
        """Wait for a process and for it to read; meanwhile the client is not read (no pings
        are answered), not its fault."""
        self.waiting_for_process = True
        try:
            self._hub.write(data, self, self._wait_stdin)
        finally:
            self.waiting_for_process = False

    def _wait_stdin(self, fd):
        """The process is not reading: wait for it, unless this client hangs up meanwhile."""
        return oslayer.wait_pipe(fd, writable=True, sock=self.websocket.sock)

    def _guarded(self, pump):
        try:
            pump()
        except Exception as error:  # a bug must end this client, not hang it
            self.log.error("broadcast", f"internal error: {error!r}")
            self._end()
            self.websocket.abort()


def _offer(clients, frames):
    if frames:
        for client in clients:
            client.offer(frames)


def _in_thread(function, *args):
    threading.Thread(target=function, args=args, daemon=True).start()
