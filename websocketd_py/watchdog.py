"""One thread for all the sessions of an app: --pingms pings and timeouts, and the buffering hint.

Every session is looked at every half interval: a program that has printed
nothing `hint_after` seconds after it started gets the buffering hint
(`Session.tell_buffering`), once; with --pingms every client gets a ping
each interval, and one that has left a ping unanswered by a pong for two
intervals (or whose receive window stayed full that long) is closed with
1008. Data from the client does not count: a client that sends but never
reads would otherwise hold its session for good. Sending never blocks this thread (`WebSocketEndpoint.ping`, `close_or_abort`): one client
that does not read cannot delay the others' pings.
"""

import threading
import time

from . import protocol


class Watchdog:
    """Watches `running` (a `session.Running` of `Session`s) until `close()`."""

    def __init__(self, running, ping_interval, hint_after):
        self._running = running
        self._ping_interval = ping_interval
        self._hint_after = hint_after
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._thread.start()

    def close(self):
        self._closed.set()
        self._thread.join()

    def _watch(self):
        ping_interval = self._ping_interval
        interval = min(ping_interval or self._hint_after, self._hint_after) / 2
        next_ping = time.monotonic() + ping_interval
        while not self._closed.wait(interval):
            now = time.monotonic()
            sessions = self._running.snapshot()
            for session in sessions:
                if session.silent_since(now - self._hint_after):
                    session.tell_buffering()
            if ping_interval and now >= next_ping:
                next_ping = now + ping_interval
                for session in sessions:
                    _ping(session, now - 2 * ping_interval)


def _ping(session, deadline):
    client = session.client
    if session.waiting_for_program:  # not reading the client: not its fault
        client.unanswered_since = None
    elif client.unanswered_since is not None and client.unanswered_since < deadline:
        session.log.info("session", "no answer to pings: closing")
        client.close_or_abort(protocol.POLICY_VIOLATION, "ping timeout", timeout=0.1)
        client.abort()
    else:
        client.ping()
