"""The client's end of a session: the upgraded socket, read by one thread, written under one lock.

`upgrade()` answers the request with the 101 that `handshake.accept` built.
simple-websocket performs the upgrade: it finds the connection's socket in
the WSGI environ (werkzeug, gunicorn, eventlet, gevent) and calls
`handshake()`, the one method overridden here. Then the socket is handed to a
`WebSocketEndpoint` and the simple-websocket object is dropped, which is
where three of its traps end: it sends from two threads without a lock, it
accepts permessage-deflate whatever the settings, and its reader thread
queues messages without bound. Here:

- every send is one `sendall` under `_send_lock`, which also orders the
  compression context and guards the close state (`protocol.Connection`);
- the session's reader thread calls `receive()`, which reads the socket only
  when the program has taken the previous data, so a slow program slows the
  client (backpressure), and memory stays bounded;
- bytes the client sent right behind its request, already in the request's
  read buffer, are the first bytes `receive()` hands to the parser.

`ConnectionTakenOver` is how a WSGI app says "this connection was upgraded":
werkzeug would otherwise write a stray `HTTP/1.1 200` into the WebSocket
stream after the app returns.
"""

import select
import socket
import struct
import threading
import time

try:  # Linux: how much of what we sent the client has not yet taken (`unsent_bytes`)
    import fcntl
    from termios import TIOCOUTQ as _OUTQ
except ImportError:
    pass

import simple_websocket

from . import protocol
from .readsize import ReadSize

RECEIVE_BYTES = 65536
#: WSGI environ key set by websocketd-py's own request handler: once a session took the
#: connection over, the handler reads no further request from it.
TAKEN_OVER_ENDS_CONNECTION = "websocketd_py.taken_over_ends_connection"
#: At the end of a session, how long the client's last bytes are waited for (see `release`).
LINGER = 1.0


class ConnectionTakenOver(ConnectionError):
    """Raised to the WSGI server after a WebSocket session: the socket was used, write nothing.

    werkzeug treats a ConnectionError from the app as a dropped connection
    and writes no response.
    """


class _Upgrade(simple_websocket.Server):
    """simple-websocket's server side, answering with our 101 and starting no thread.

    What of simple-websocket this relies on (checked with 1.0.0 and 1.1.0;
    pyproject.toml caps it below 2): `Server.__init__` finds `self.sock` in
    the environ and calls `handshake()`, which must set `self.connected`;
    then it builds `thread_class(target=...)`, sets its `name` and calls
    `start()`.
    """

    def __init__(self, environ, response):
        self._response = response
        super().__init__(environ, thread_class=_NoReaderThread)

    def handshake(self):
        self.sock.sendall(self._response)
        self.connected = True


class _NoReaderThread:
    """What simple-websocket gets for its reader thread: the session reads the socket itself."""

    name = "websocket-reader"

    def __init__(self, *args, **kwargs):
        pass

    def start(self):
        pass


def upgrade(environ, accepted, max_message_size):
    """Send the 101 of `accepted` (a `handshake.Accepted`); the `WebSocketEndpoint`.

    OSError when the client left during the handshake.
    """
    sock = _Upgrade(environ, accepted.response).sock
    early = _read_ahead(environ.get("wsgi.input"), sock)
    if environ.get(TAKEN_OVER_ENDS_CONNECTION):
        environ["wsgi.input"].close()  # its read buffer: the socket is read directly now
    return WebSocketEndpoint(sock, protocol.Connection(max_message_size, accepted.compression),
                             early)


def _read_ahead(stream, sock):
    """What the request's read buffer holds past the headers: the client's first frames."""
    peek = getattr(stream, "peek", None)
    if peek is None:
        return b""
    sock.settimeout(0)  # peek reads the socket once if its buffer is empty: must not block
    try:
        return peek()
    except (OSError, ValueError):
        return b""
    finally:
        sock.settimeout(None)


class WebSocketEndpoint:
    """One upgraded connection: `receive()` in one thread, sends from any."""

    def __init__(self, sock, connection, early=b""):
        self.sock = sock
        self.connection = connection
        self.unanswered_since = None  # --pingms: when the oldest ping not yet ponged went out
        self._early = early
        self._send_lock = threading.Lock()
        self._receive_size = ReadSize(RECEIVE_BYTES)
        sock.settimeout(None)  # the request-header timeout does not apply any more
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def close_code(self):
        """The first close code sent or received; 1006 if the connection broke; None yet."""
        return self.connection.close_code

    # -- reading (the session's reader thread only) --------------------------------

    def receive(self):
        """Read once; return (fragments, still_open).

        `fragments` lists the data that arrived as (is_text, payload bytes,
        ends_message). Pings are answered and a client's close frame is
        answered at once with its own code; `still_open` is False from then on,
        and also after a protocol error (answered with 1002/1007), a message
        over the size limit (1009), or a dropped connection (1006).
        """
        data = b"" if self.connection.input_pending else self._read()
        if data is None:
            self.connection.receive_eof()
            return [], False
        fragments = []
        for event in self.connection.receive_data(data):
            kind = event[0]
            if kind is protocol.DATA:
                fragments.append(event[1:])
            elif kind is protocol.PING:
                self._send(self.connection.pong, event[1])
            elif kind is protocol.PONG:
                self.unanswered_since = None  # only a pong answers our pings
            elif kind is protocol.CLOSE or kind is protocol.FAIL:
                # A client's close is answered at once with its code, a protocol error
                # with the code it calls for; our own close being answered needs nothing.
                self._send(self.connection.close, event[1], event[2])
                return fragments, False
        return fragments, True

    def _read(self):
        """The next bytes from the client; None at the end of its stream."""
        if self._early:
            data, self._early = self._early, b""
            return data
        try:
            data = self.sock.recv(self._receive_size.now)
        except OSError:
            return None
        if not data:
            return None
        self._receive_size.after(len(data))
        return data

    # -- writing (any thread) ------------------------------------------------------

    def send_frames(self, frames):
        """Send ready-made data frames; False (and nothing sent) once the connection is closing."""
        with self._send_lock:
            data = self.connection.data(frames)
            return data is not None and self._sendall(data)

    def ping(self):
        """Send a ping if it goes out at once (the watchdog must never block).

        It waits for nothing: while another send is under way the ping is
        skipped, and while the client's receive window is full it cannot go
        out; that counts as a ping unanswered (`unanswered_since`), since a
        client that does not read will not read our pings either.
        """
        window_open = _writable_now(self.sock)
        if window_open and self._send_lock.acquire(blocking=False):
            try:
                self._sendall(self.connection.ping())
            finally:
                self._send_lock.release()
        elif window_open:
            return  # a send is under way and the client takes it: try again next time
        if self.unanswered_since is None:
            self.unanswered_since = time.monotonic()

    def close(self, code=protocol.NORMAL_CLOSURE, reason=""):
        """Send our close frame unless one was sent (waits for a send under way)."""
        self._send(self.connection.close, code, reason)

    def close_or_abort(self, code, reason, timeout):
        """From a thread that must not block: send our close frame if the send lock is had
        within `timeout` and the client's window takes it at once; otherwise cut the
        connection. True if the frame went out."""
        if not self._send_lock.acquire(timeout=timeout):
            self.abort()
            return False
        try:
            sent = _writable_now(self.sock) and self._sendall(self.connection.close(code, reason))
        finally:
            self._send_lock.release()
        if not sent:
            self.abort()
        return sent

    def unsent_bytes(self):
        """How much of what we sent the client has not yet taken (Linux), or None."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), _OUTQ, b"\0" * 4))[0]
        except (NameError, OSError):  # no fcntl or TIOCOUTQ here, or the socket is gone
            return None

    def abort(self):
        """Shut the TCP connection down both ways: blocked recv/sendall calls return at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stop_sending(self):
        """Half-close: FIN after our last frame; a send blocked on a slow client returns at once."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def release(self, linger=LINGER):
        """Close the socket for good (the session is over).

        What the client still sends is read and dropped for up to `linger`
        seconds first: closing with unread input resets the connection, and
        the reset can destroy our close frame before the client has read it.
        """
        self.stop_sending()
        deadline = time.monotonic() + linger
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.0, deadline - time.monotonic()))
                if not self.sock.recv(RECEIVE_BYTES):
                    break
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, make_bytes, *args):
        """Send what `make_bytes(*args)` gives (a control frame, or nothing), under the lock."""
        with self._send_lock:
            data = make_bytes(*args)
            if data:
                self._sendall(data)

    def _sendall(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.abort()
            return False
        return True


def _writable_now(sock):
    """Whether a small send to `sock` would not block (poll: descriptors past 1024 too)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            return bool(poller.poll(0))
        return bool(select.select([], [sock], [], 0)[1])
    except (OSError, ValueError):
        return False
