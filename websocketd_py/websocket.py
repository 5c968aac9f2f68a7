"""One upgraded connection: simple-websocket's handshake, then frames both ways.

simple-websocket performs the upgrade. Its I/O model does not fit a bridge,
so this subclass changes what follows, each in one place:

- the 101 is built here, from the request werkzeug parsed and the app
  checked (`app.check_handshake`), with wsproto's accept token: wsproto's
  handshake parsed the request a second time and built the answer through
  h11, 75 µs of the ~600 µs before a session's process starts (measured);
- compression is opt-in: the handshake ignores a client's permessage-deflate
  offer (it halves small-message throughput) unless --compress is given, then
  negotiates it (`compression`); it adds --header/--header-ws;
- sends are serialised: every write is one `sendall` under `_send_lock`, so the
  reader (pongs, close replies) and the writer (data) never interleave or cut
  frames — simple-websocket uses `sock.send` from two threads with no lock;
- no background thread and no unbounded queue: the session's reader thread
  calls `receive()`, which reads the socket only when the process has taken
  the previous data, so a slow process slows the client (backpressure);
- frames from the client go through `protocol.ClientFrameParser` (streaming,
  bounded memory, --maxframesize checked from the frame header) instead of
  wsproto's much slower parser; frames to the client are built by `framing`
  and, with compression, rewritten compressed by `send_frames`; so wsproto's
  state is dropped once the 101 is sent.

`_send_lock` also guards the close state, which both threads read.
"""

import socket
import struct
import threading
import time

import simple_websocket
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from . import compression, protocol, threads
from .framing import frame

RECEIVE_BYTES = 65536
#: WSGI environ key: the handler closes a connection once a session took it over.
TAKEN_OVER_ENDS_CONNECTION = "websocketd_py.taken_over_ends_connection"
#: At the end of a session, how long the client's last bytes are waited for (see `release`).
LINGER = 1.0
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

    def __init__(self, environ, extra_headers=(), max_message_size=0, subprotocols=(),
                 compress=False):
        self.extra_headers = [(name.encode("latin-1"), value.encode("latin-1"))
                              for name, value in extra_headers]
        self._send_lock = threading.Lock()
        self._close_sent = False
        self._compress = compress
        self._max_message_size = max_message_size
        self._deflater = None         # a compression.Deflater once permessage-deflate is agreed
        self._parser = None           # made by the handshake, with an inflater if agreed
        self.close_code = None        # the first close code sent or received; 1006 if none
        self.last_heard = time.monotonic()
        self._receive_size = threads.ReadSize(RECEIVE_BYTES)
        super().__init__(environ, subprotocols=list(subprotocols), receive_bytes=RECEIVE_BYTES,
                         thread_class=_NoBackgroundThread)
        self.sock.settimeout(None)    # the request-header timeout does not apply any more
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handshake(self):
        """Answer the upgrade with 101, with the configured headers and compression if agreed."""
        environ = self.environ
        offered = [name.strip() for name in
                   environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")]
        self.subprotocol = next((name for name in offered if name in self.subprotocols), None)
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip().encode("latin-1")
        lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
                 b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + generate_accept_token(key)]
        if self.subprotocol is not None:
            lines.append(b"Sec-WebSocket-Protocol: " + self.subprotocol.encode("latin-1"))
        lines += [name + b": " + value for name, value in self.extra_headers]
        inflater = None
        agreement = self._compress and compression.negotiate(
            environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
        if agreement:
            lines.append(b"Sec-WebSocket-Extensions: " + agreement.response.encode())
            self._deflater = compression.Deflater(agreement.server_window_bits,
                                                  agreement.server_no_context_takeover)
            inflater = compression.Inflater(agreement.client_window_bits,
                                            agreement.client_no_context_takeover)
        self._parser = protocol.ClientFrameParser(self._max_message_size, inflater)
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        self._drop_request_state()
        self.connected = True

    def _drop_request_state(self):
        """Free what only the handshake needed: ~12 KiB per idle session (measured).

        wsproto's connection state goes (frames are `protocol`'s and
        `framing`'s), and simple-websocket's event for its reader thread (there
        is none). Under websocketd-py's own server (`server.RequestHandler`),
        which reads no further request on a taken-over connection, so does the
        request's input stream with its 8 KiB read buffer: from now on the
        socket is read directly. (Another server, embedding `WebSocketApp`,
        may still read from it.)
        """
        self.ws = self.event = None
        if self.environ.get(TAKEN_OVER_ENDS_CONNECTION):
            self.environ["wsgi.input"].close()

    # -- reading (the session's reader thread only) --------------------------------

    def receive(self):
        """Read once; return (fragments, still_open).

        `fragments` lists the data that arrived as (is_text, payload bytes,
        ends_message). Pings are answered and a client's close frame is
        answered at once with its own code; `still_open` is False from then on,
        and also after a protocol error (answered with 1002/1007), a message
        over the size limit (1009), or a dropped connection (1006). While the
        parser has inflated data left (`stalled`), nothing is read: it goes on.
        """
        if self._parser.stalled:
            data = b""
        else:
            try:
                data = self.sock.recv(self._receive_size.now)
            except OSError:
                data = b""
            self._receive_size.after(len(data))
            if not data:
                with self._send_lock:
                    if self.close_code is None:
                        self.close_code = CloseReason.ABNORMAL_CLOSURE
                return [], False
            self.last_heard = time.monotonic()
        fragments = []
        for event in self._parser.feed(data):
            kind = event[0]
            if kind is protocol.DATA:
                fragments.append(event[1:])
            elif kind is protocol.PING:
                with self._send_lock:
                    if not self._close_sent:  # no pongs after our close frame
                        self._sendall(frame(protocol.OP_PONG, event[1]))
            elif kind is protocol.CLOSE or kind is protocol.FAIL:
                # A client's close is answered at once with its code, a protocol error
                # with the code it calls for; our own close being answered needs nothing.
                self.close(event[1], event[2])
                return fragments, False
        return fragments, True

    # -- writing (any thread) ------------------------------------------------------

    def send_frames(self, frames):
        """Send ready-made data frames; False (and nothing sent) once the connection is closing.

        With compression they are compressed here, under the lock, so that
        they reach the client in the order of the compression context.
        """
        with self._send_lock:
            if self._close_sent:
                return False
            if self._deflater is not None:
                frames = self._deflater.compress_frames(frames)
            return self._sendall(frames)

    def ping(self):
        """Send a ping, unless a send is under way (a slow client): then skip this one."""
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            if not self._close_sent:
                self._sendall(frame(protocol.OP_PING, b""))
        finally:
            self._send_lock.release()

    def close(self, code=CloseReason.NORMAL_CLOSURE, reason="", timeout=None):
        """Send our close frame unless one was sent; False if the lock was not had in time."""
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            if not self._close_sent:
                self._close_sent = True
                if self.close_code is None:
                    self.close_code = code
                self._sendall(frame(protocol.OP_CLOSE, _close_payload(code, reason)))
        finally:
            self._send_lock.release()
        return True

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

    def _sendall(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.abort()
            return False
        return True


def _close_payload(code, reason):
    """A close frame's payload: the code and at most 123 bytes of reason (1005: nothing)."""
    if code == protocol.NO_STATUS:
        return b""
    reason = (reason or "").encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
    return struct.pack("!H", code) + reason.encode("utf-8")
