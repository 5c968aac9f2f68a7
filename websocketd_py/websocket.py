"""One upgraded connection: simple-websocket's handshake, then frames both ways.

simple-websocket performs the upgrade. Its I/O model does not fit a bridge,
so this subclass changes four things, each in one place:

- compression is opt-in: the handshake ignores a client's permessage-deflate
  offer (it halves small-message throughput) and adds --header/--header-ws;
- sends are serialised: every write is one `sendall` under `_send_lock`, so the
  reader (pongs, close replies) and the writer (data) never interleave or cut
  frames — simple-websocket uses `sock.send` from two threads with no lock;
- no background thread and no unbounded queue: the session's reader thread
  calls `receive()`, which reads the socket only when the process has taken
  the previous data, so a slow process slows the client (backpressure);
- the message size limit (--maxframesize) is counted as fragments arrive.

`_send_lock` also guards the wsproto state machine (`self.ws`), which both
threads use.
"""

import socket
import threading
import time

import simple_websocket
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong,
                            Request, TextMessage)
from wsproto.frame_protocol import CloseReason

RECEIVE_BYTES = 65536
_MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code


class _NoBackgroundThread:
    """Stands in for simple-websocket's reader thread: the session reads the socket itself."""

    name = "unused"

    def __init__(self, target):
        pass

    def start(self):
        pass


class WebSocket(simple_websocket.Server):
    """A server-side WebSocket on a socket werkzeug handed over."""

    def __init__(self, environ, extra_headers=(), max_message_size=0):
        self.extra_headers = [(name.encode("latin-1"), value.encode("latin-1"))
                              for name, value in extra_headers]
        self._send_lock = threading.Lock()
        self._message_size = 0
        self.close_code = None        # the first close code sent or received; 1006 if none
        self.last_heard = time.monotonic()
        super().__init__(environ, receive_bytes=RECEIVE_BYTES, max_message_size=max_message_size,
                         thread_class=_NoBackgroundThread)
        self.sock.settimeout(None)    # the request-header timeout does not apply any more
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handshake(self):
        """Answer the upgrade with 101, without compression, with the configured headers."""
        lines = ["GET / HTTP/1.1"]
        for key, value in self.environ.items():
            if key.startswith("HTTP_") and key != "HTTP_SEC_WEBSOCKET_EXTENSIONS":
                lines.append(f"{key[5:].replace('_', '-')}: {value}")
        self.ws.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
        request = next(self.ws.events(), None)
        if not isinstance(request, Request):
            return  # connected stays False: simple-websocket raises ConnectionError
        self.subprotocol = self.choose_subprotocol(request)
        self.sock.sendall(self.ws.send(AcceptConnection(
            subprotocol=self.subprotocol, extra_headers=self.extra_headers)))
        self.connected = True

    # -- reading (the session's reader thread only) --------------------------------

    def receive(self):
        """Read once; return (fragments, still_open).

        `fragments` lists the data that arrived as (is_text, payload bytes,
        ends_message). Pings are answered and a client's close frame is
        answered at once with its own code; `still_open` is False from then on,
        and also after a protocol error (answered with 1002/1007), a message
        over the size limit (1009), or a dropped connection (1006).
        """
        try:
            data = self.sock.recv(RECEIVE_BYTES)
        except OSError:
            data = b""
        with self._send_lock:
            if not data:
                if self.close_code is None:
                    self.close_code = CloseReason.ABNORMAL_CLOSURE
                return [], False
            self.last_heard = time.monotonic()
            try:
                self.ws.receive_data(data)
            except Exception:  # data after the close handshake: nothing more to read
                return [], False
            return self._handle_events()

    def _handle_events(self):
        fragments = []
        for event in self.ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                is_text = isinstance(event, TextMessage)
                payload = event.data.encode("utf-8") if is_text else bytes(event.data)
                self._message_size += len(payload)
                if self.max_message_size and self._message_size > self.max_message_size:
                    self._send_close(CloseReason.MESSAGE_TOO_BIG,
                                     f"message over {self.max_message_size} bytes")
                    return fragments, False
                if event.message_finished:
                    self._message_size = 0
                fragments.append((is_text, payload, event.message_finished))
            elif isinstance(event, Ping):
                if self.ws.state is ConnectionState.OPEN:  # no pongs after a close frame
                    self._sendall(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseConnection):
                # A client's close is answered at once with its code; so is a protocol
                # error wsproto found (1002/1007); our own close being answered needs nothing.
                self._send_close(event.code, event.reason)
                return fragments, False
        return fragments, True

    # -- writing (any thread) ------------------------------------------------------

    def send_frames(self, frames):
        """Send ready-made data frames; False (and nothing sent) once the connection is closing."""
        with self._send_lock:
            if self.ws.state is not ConnectionState.OPEN:
                return False
            return self._sendall(frames)

    def ping(self):
        """Send a ping, unless a send is under way (a slow client): then skip this one."""
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            if self.ws.state is ConnectionState.OPEN:
                self._sendall(self.ws.send(Ping()))
        finally:
            self._send_lock.release()

    def close(self, code=CloseReason.NORMAL_CLOSURE, reason="", timeout=None):
        """Send our close frame unless one was sent; False if the lock was not had in time."""
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._send_close(code, reason)
        finally:
            self._send_lock.release()
        return True

    @property
    def open(self):
        return self.ws.state is ConnectionState.OPEN

    def abort(self):
        """Shut the TCP connection down both ways: blocked recv/sendall calls return at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self):
        """Close the socket for good (the session is over)."""
        self.abort()
        try:
            self.sock.close()
        except OSError:
            pass

    def _send_close(self, code, reason):
        if self.ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        if self.close_code is None:
            self.close_code = code
        reason = (reason or "").encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        self._sendall(self.ws.send(CloseConnection(code=code, reason=reason)))

    def _sendall(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.abort()
            return False
        return True
