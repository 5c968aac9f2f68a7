"""--broadcast: one shared process per endpoint, every line to every client.

A `Hub` per endpoint (COMMAND, or one script of --dir) is a fan-out in front
of one `process.ProcessEndpoint`. Its supervisor thread starts the process
(at the first client, or at startup with --broadcast=eager), takes its
`output()`, framed ONCE, and appends the bytes to every client's queue; it
never sends, so a slow client cannot stall the others. When the process
exits while clients are connected (or always, in eager mode) it starts a new
one, at most one start per `restart_delay` (a second); the clients stay connected and get
the new process's lines. When the last client leaves (lazy mode) the process
is stopped on the --closems schedule; a later client starts a fresh one. A
client joins between two messages and gets the lines printed from then on,
none before. The process's environment is its endpoint's, with no client's
facts (see `routing.WebsocketdApp.shared_environment`); it holds no fork
slot: each client does, so --maxforks caps the connections.

Each client's session (`session.Session`, the same pumps as a session of its
own) talks to a `Subscription`, its program endpoint here: `output()` is the
client's queue, `write_stdin()` writes each message whole to the shared
stdin (`whole_messages`), so messages of two clients never interleave. A
client whose queue would grow past --broadcast-backlog bytes is dropped
from the hub and closed with 1008.
"""

import collections
import threading
import time

from . import framing, proctree, protocol
from .launching import client_reason
from .process import ProcessEndpoint

#: How long a 1008 close frame may wait behind a send under way before the connection is cut.
CLOSE_SEND_TIMEOUT = 1.0
#: After the process ended, how long its stderr's last lines are waited for.
STDERR_GRACE = 0.5


class Hubs:
    """The hubs of one app, one per endpoint argv, made at an endpoint's first client."""

    def __init__(self, config, log, environment_for, stderr_followers, restart_delay):
        self._config = config
        self._log = log
        self._environment_for = environment_for  # Endpoint -> the shared process's environment
        self._stderr = stderr_followers
        self._restart_delay = restart_delay      # a crashing program must not spin
        self._hubs = {}                           # argv: Hub
        self._all = ()                            # the same hubs, replaced on each addition
        self._lock = threading.Lock()

    def hub_for(self, endpoint):
        with self._lock:
            hub = self._hubs.get(endpoint.argv)
            if hub is None:
                hub = Hub(endpoint, self._config, self._log, self._environment_for,
                          self._stderr, self._restart_delay)
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
        """SIGKILL every shared process group. Takes no lock (see `server`'s shutdown)."""
        for hub in self.snapshot():
            process = hub.process
            if process is not None:
                process.kill_group()


class Hub:
    """One endpoint's shared process and the subscriptions that receive its output.

    `_lock` guards the subscription set (replaced, never changed in place, so
    the supervisor reads it without the lock), the current process and the flags.
    """

    def __init__(self, endpoint, config, log, environment_for, stderr_followers, restart_delay):
        self.endpoint = endpoint
        self.process = None             # the running ProcessEndpoint, None between two
        self._process_log = None        # the log with its id and pid
        self._config = config
        self._log = log.context(command=endpoint.argv[0])
        self._environment_for = environment_for
        self._stderr = stderr_followers
        self._restart_delay = restart_delay
        self._lock = threading.Condition()
        self._subscribers = frozenset()
        self._eager = False             # keep a process running even without clients
        self._closing = False           # server shutdown: start nothing any more
        self._stop_requested = False    # the current process is being stopped by us
        self._supervisor = None         # the thread running processes while they are wanted

    def subscribe(self, client, client_id, log):
        """A `Subscription` for one client's session (already ended if the hub is closing)."""
        subscription = Subscription(self, client, client_id, self._config, log)
        with self._lock:
            if self._closing:
                subscription.end(protocol.GOING_AWAY, "server shutting down")
            else:
                self._subscribers = self._subscribers | {subscription}
                self._supervise_if_needed()
        return subscription

    def keep_running(self):
        """--broadcast=eager: start the process now and restart it whenever it exits."""
        with self._lock:
            self._eager = True
            self._supervise_if_needed()

    def leave(self, subscription):
        """Take a subscription off; the last one to leave (lazy mode) stops the process."""
        with self._lock:
            if subscription not in self._subscribers:
                return
            self._subscribers = self._subscribers - {subscription}
            self._lock.notify_all()  # a write waiting for a process may give up now
            if (self._subscribers or self._eager or self.process is None
                    or self._stop_requested):
                return
            self._stop_requested = True
            process = self.process
        self._process_log.info("broadcast", "last client left: stopping the program")
        _in_thread(process.terminate)

    def write(self, data, subscription, wait_writable):
        """Write one client's whole messages to stdin; wait for a process if none runs yet."""
        with self._lock:
            self._lock.wait_for(lambda: self.process is not None or self._closing
                                or subscription not in self._subscribers)
            process = self.process
        if process is not None:
            process.write_stdin(data, wait_writable)

    def silent_since(self, moment):
        """True once per process, if it started before `moment`, runs, and printed nothing."""
        process = self.process
        return process is not None and process.silent_since(moment)

    def send_frames(self, frames):
        """What --passstderr's stderr follower sends (whole messages): to every client."""
        _offer(self._subscribers, frames)
        return True

    # -- shutdown ----------------------------------------------------------------------

    def close(self):
        """Server shutdown: start nothing more, stop the process (its clients get 1001)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            process, self._stop_requested = self.process, True
        if process is not None:
            _in_thread(process.terminate)

    def wait_stopped(self, timeout):
        """After `close`: True once the last process was reaped (within `timeout` seconds)."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.join(max(0.0, timeout))
            return not supervisor.is_alive()
        return True

    # -- the supervisor thread ---------------------------------------------------------

    def _wanted(self):
        return not self._closing and (self._eager or bool(self._subscribers))

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
                restart_at = time.monotonic() + self._restart_delay
                continue
            started = time.monotonic()
            try:
                self._run(process)
            except Exception as error:  # a bug must not end the hub for good
                self._process_log.error("broadcast", f"internal error: {error!r}")
                process.terminate()
            with self._lock:
                self.process = None
                planned = self._stop_requested
                clients = len(self._subscribers)
            if not planned and self._wanted():
                restart_at = started + self._restart_delay
                self._process_log.info("broadcast", f"the program ended with {clients} "
                                                    "client(s) connected: starting it again")

    def _start(self):
        """With `_lock` held: the new process, or None (its clients are closed with 1011)."""
        env = self._environment_for(self.endpoint)
        config = self._config
        try:
            process = ProcessEndpoint(self.endpoint.argv, env, config.closems,
                                      framer=framing.stdout_framer(config.binary,
                                                                   config.passstderr),
                                      partial_after=config.partial_lines / 1000 or None,
                                      log=self._log)
        except (OSError, ValueError) as error:
            self._log.error("broadcast", f"cannot start {self.endpoint.argv[0]}: {error}")
            failed, self._subscribers = self._subscribers, frozenset()
            self._lock.notify_all()  # their writes waiting for a process give up
            for subscription in failed:
                subscription.end(protocol.INTERNAL_ERROR, client_reason(error))
            return None
        self.process = process
        self._process_log = self._log.with_fields(id=env["UNIQUE_ID"], pid=process.pid)
        self._stop_requested = False
        self._lock.notify_all()  # writes waiting for a process
        self._process_log.info("broadcast", "program started")
        return process

    def _run(self, process):
        """Broadcast stdout until EOF, then end and reap the process."""
        log = self._process_log
        errors = self._stderr.follow(process.stderr_fd, log,
                                     self if self._config.passstderr else None,
                                     on_error=process.terminate)
        receivers, continuing_a_line = frozenset(), False
        for frames in process.output():
            if not continuing_a_line:
                receivers = self._subscribers
            _offer(receivers, frames)
            continuing_a_line = process.inside_message
        status = process.terminate()
        stderr_done = errors.wait(STDERR_GRACE) or errors.abandon()
        process.kill_group()
        if stderr_done:
            process.close_pipes()
        log.info("broadcast", f"program ended: {proctree.describe_exit(status)}")


class Subscription:
    """One client's program endpoint in a hub: its queue of frames, and the shared stdin.

    `_changed` guards the queue and `_close_frame`; a set `_close_frame`
    means the subscription has ended: nothing more is queued.
    """

    whole_messages = True  # clients share one stdin: each message in one write
    popen = None           # the process is the hub's (its pid is in the status record,
    pid = None             # not in the client's log: restarts change it)
    stderr_fd = None
    exit_status = None

    def __init__(self, hub, client, client_id, config, log):
        self.message_prefix = f"{client_id} ".encode() if config.broadcast_ids else b""
        self._hub = hub
        self._client = client
        self._backlog = config.broadcast_backlog
        self._log = log
        self._changed = threading.Condition()
        self._queue = collections.deque()  # frames not yet taken by `output()`
        self._queued = 0                   # their bytes
        self._close_frame = None           # (code, reason) once ended

    def offer(self, frames):
        """Queue frames (the hub's threads: never blocks); too far behind: closed with 1008.

        What one read of the program gives is always taken by an empty
        queue, so a backlog smaller than that still lets a client keep up.
        """
        with self._changed:
            if self._close_frame is not None:
                return
            if self._queue and self._queued + len(frames) > self._backlog:
                too_slow = True
            else:
                self._queue.append(frames)
                self._queued += len(frames)
                too_slow = False
            self._changed.notify()
        if too_slow:
            self._log.info("broadcast", f"client too slow: more than {self._backlog} bytes "
                                        "behind, closing with 1008")
            self.end(protocol.POLICY_VIOLATION, "too slow")
            # a send under way to a client that does not read would block this thread
            _in_thread(self._client.close_or_abort, protocol.POLICY_VIOLATION, "too slow",
                       CLOSE_SEND_TIMEOUT)

    def end(self, code, reason):
        """Stop the subscription: the client gets this close frame once its output ends."""
        with self._changed:
            if self._close_frame is None:
                self._close_frame = (code, reason)
            self._queue.clear()
            self._queued = 0
            self._changed.notify()
        self._hub.leave(self)

    # -- the program endpoint of the client's session -----------------------------------

    def output(self):
        """The frames queued for this client, until the subscription ends."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._close_frame is not None)
                if self._close_frame is not None:
                    return
                frames = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
            yield frames

    def write_stdin(self, data, wait_writable):
        self._hub.write(data, self, wait_writable)
        return True  # the shared stdin outlives any one process

    def terminate(self):
        """The client's session ends (it left, or the server shuts down): leave the hub."""
        self.end(protocol.NORMAL_CLOSURE, "")

    def close_frame(self):
        with self._changed:
            return self._close_frame or (protocol.NORMAL_CLOSURE, "")

    def silent_since(self, moment):
        return self._hub.silent_since(moment)

    def stdout_held_open(self):
        return False

    def kill_group(self):
        """Nothing: the shared process is the hub's to end."""

    def close_pipes(self):
        """Nothing: the pipes are the hub's."""


def _offer(subscribers, frames):
    if frames:
        for subscription in subscribers:
            subscription.offer(frames)


def _in_thread(function, *args):
    threading.Thread(target=function, args=args, name="broadcast-stop", daemon=True).start()
