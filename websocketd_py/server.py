"""Listeners, the request handler, and the server's start and stop.

One werkzeug threaded server (`Listener`) per --address, on a socket bound
here (so a busy port is one clear line, and Windows refuses to share it);
with --redirport one more per address, and one on --unixsocket. The handler
subclass changes what werkzeug's development server does by default: no
banner, websocketd-format access lines, no tracebacks on stderr, one deadline
and one size limit for the request line and headers, and no HTTP response
after a WebSocket session (see `websocket.ConnectionTakenOver`). With --ssl
each connection's TLS handshake runs in its own thread (see `tls`). A
connection gets that thread only once it has sent something: until then it
sits in the listener's `WaitingRoom`.
"""

import collections
import ipaddress
import re
import selectors
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from . import __version__, auth, environment, listening, tls, unixsocket
from .decoding import as_wsgi
from .log import Log
from .redirect import RedirectApp
from .routing import WebsocketdApp
from .session import Timings
from .websocket import TAKEN_OVER_ENDS_CONNECTION

#: Seconds from accept a client has to send its request line and headers, a TLS handshake
#: included (websocketd's development line: 10 s); then the connection is closed.
HEAD_TIMEOUT = 10
#: Most bytes the request line and headers may take in all (websocketd: Go's 1 MiB); more: 431.
HEAD_BYTES = 1024 * 1024
#: How far past the deadline a read of the head may wait: the socket's timeout is set again
#: only when the time left has shrunk by more than this (setting it costs two system calls).
HEAD_SLACK = 0.05
#: Seconds a request body (a CGI POST) may pause between reads, and a response between writes.
BODY_TIMEOUT = 30
#: Most connections a waiting room watches with select() (Windows: 512 sockets per call);
#: past that, connections get their thread at once, as werkzeug would give it.
SELECT_CAPACITY = 500
#: TCP keep-alive, as websocketd has it (Go's default): probe a connection silent for this
#: many seconds, then again at this interval, so a client that vanished without a trace
#: (power cut, network gone) is noticed instead of holding its session for ever.
KEEPALIVE_SECONDS = 15
#: How often listeners look up from accept() for a shutdown request.
POLL_INTERVAL = 0.1
#: REMOTE_ADDR and REMOTE_PORT of a --unixsocket client (nginx also says "unix:").
UNIX_CLIENT_ADDRESS = ("unix:", "")
#: A header name is a token (RFC 9110 §5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: After a response, the most of the client's further bytes read and discarded
#: (websocketd's net/http: 256 KiB) before the connection is closed.
DRAIN_BYTES = 256 * 1024
#: WSGI environ key: the request's `RequestFile`.
REQUEST_FILE = "websocketd_py.request_file"
#: Control characters, which Go refuses in a request target.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: The start of an absolute-form request target (`http://host/path`).
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, quiet, with websocketd-format logs.

    The request line and headers must have arrived by `head_deadline` (a
    `time.monotonic()` value; the listener sets it HEAD_TIMEOUT after accept)
    and take HEAD_BYTES at most (`RequestFile`).
    """

    timeout = BODY_TIMEOUT
    # http.server's default, HTTP/0.9, answers an unparsable request line with a bare body;
    # as in websocketd, it gets a real "HTTP/1.1 400 Bad Request".
    default_request_version = "HTTP/1.1"

    def __init__(self, request, client_address, server, head_deadline):
        self.head_deadline = head_deadline
        super().__init__(request, client_address, server)  # which handles the request

    def version_string(self):
        return f"websocketd-py/{__version__}"

    def setup(self):
        super().setup()
        self.rfile = RequestFile(self.rfile, self.connection, self.head_deadline)

    def parse_request(self):
        """http.server's parsing, refusing what it lets through and Go's net/http (so
        websocketd) does not: with 431 a request line and headers over HEAD_BYTES;
        with 400 a control character in the request target, a target that is
        neither a path nor an absolute URL (or one werkzeug cannot split), a
        header line without a colon (http.server silently drops the headers
        after it) or without a name. (Header values are the app's business:
        folds are joined, control characters become spaces.)
        """
        try:
            parsed = super().parse_request()
        except RequestHeadTooLarge:
            self.rfile.head_read()
            self.send_error(431, "Request Header Fields Too Large: the request line and "
                                 f"headers take more than {HEAD_BYTES >> 20} MiB")
            return False
        self.rfile.head_read()
        if not parsed:
            return False
        self.target_as_sent = self.requestline.split()[1]  # http.server cuts "//" to "/"
        problem = _target_problem(self.path)
        if problem is not None:
            self.send_error(400, f"Bad Request: {problem}")
            return False
        problem = _header_problem(self.headers)
        if problem is not None:
            self.send_error(400, f"Bad Request: {problem}")
            return False
        if _malformed(self.headers):
            self.send_error(400, "Bad Request: malformed header line")
            return False
        return True

    def make_environ(self):
        environ = super().make_environ()
        if self.target_as_sent != self.path:  # a leading "//": `cleanpath` answers it
            environ["REQUEST_URI"] = environ["RAW_URI"] = as_wsgi(self.target_as_sent)
        if self.server.tls_context is not None:  # werkzeug only knows its own ssl_context
            environ["wsgi.url_scheme"] = "https"
        # The headers as received (order, repeats), for the process environment.
        environ["websocketd_py.headers"] = list(self.headers.items())
        environ[REQUEST_FILE] = self.rfile
        environ[TAKEN_OVER_ENDS_CONNECTION] = True  # see connection_dropped
        return environ

    def handle(self):
        try:
            super().handle()
        except Exception as error:  # a handler must never print a traceback and die
            self.server.server_log.write("error", "http",
                                         f"error while handling a request: {error!r}",
                                         (("remote", self.client_address[0]),))

    def run_wsgi(self):
        if self.request_version == "HTTP/1.0":
            # werkzeug would send a chunked body, which an HTTP/1.0 client cannot read
            # (RFC 9112 section 6.1); as Go does, answer in HTTP/1.0 and end with the close.
            self.protocol_version = "HTTP/1.0"
        super().run_wsgi()

    def connection_dropped(self, error, environ=None):
        self.close_connection = True  # also after a WebSocket session took the socket over

    def log_request(self, code="-", size="-"):
        code = int(code) if str(code).isdigit() else code
        phrase = self.responses.get(code, ("",))[0] if isinstance(code, int) else ""
        host = self.headers.get("Host", "") if getattr(self, "headers", None) else ""
        path = getattr(self, "path", "") or self.requestline
        scheme = "https" if self.server.tls_context is not None else "http"
        self.server.server_log.write("access", "http", f"{code} {phrase}".strip(), (
            ("url", auth.without_userinfo(f"{scheme}://{host}{path}")),
            ("remote", self.client_address[0])))

    def log_error(self, format, *args):
        self.server.server_log.write("debug", "http", format % args,
                              (("remote", self.client_address[0]),))

    def log_message(self, format, *args):
        self.log_error(format, *args)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, headers too long) get --header(-http) too."""
        extra = getattr(self.server.served_app, "http_headers", ())
        if not extra:
            return super().send_error(code, message, explain)
        plain_end_headers = self.end_headers

        def end_headers_with_extra():
            for name, value in extra:
                self.send_header(name, value)
            plain_end_headers()
        self.end_headers = end_headers_with_extra
        try:
            return super().send_error(code, message, explain)
        finally:
            del self.end_headers


class RequestHeadTooLarge(Exception):
    """The request line and headers went past HEAD_BYTES."""


class RequestFile:
    """The connection's read stream: the request head read within its deadline and size,
    and what follows the response drained within a bound.

    http.server reads the request line and headers with `readline`, and each
    read from the socket may wait the socket's whole timeout: a client that
    sends a byte now and then would never run out of time, and 100 header
    lines of 64 KiB are 6.4 MB held per connection. Until `head_read()`, each
    read from the socket here waits only until `head_deadline` (then
    socket.timeout), and reading more than HEAD_BYTES in all raises
    RequestHeadTooLarge.

    After every response werkzeug reads what the client still sends, up to
    10 MB a read and for as long as it comes: a client that sends a large
    body and then trickles holds that memory. Once the response is sent
    (`BoundedDrain`), reads here discard at most DRAIN_BYTES in all and then
    say end of stream, so the connection closes, as websocketd does; a
    connection reset during that is end of stream too (werkzeug would leave
    its selector open until garbage collection).
    """

    def __init__(self, stream, sock, head_deadline):
        self._stream = stream  # a BufferedReader: peek() reads the socket once at most
        self._sock = sock
        self._timeout = sock.gettimeout()  # the socket's own, again after the head
        self._head_deadline = head_deadline
        self._waits_at_most = None  # the socket timeout set for the head, as last set
        self._head_bytes = 0
        self.response_sent = False
        self._drained = 0

    def readline(self, limit=-1):
        """One line (at most `limit` bytes); while the head is read, within its deadline."""
        if self._head_deadline is None:
            return self._stream.readline(limit)
        line = bytearray()
        while not line.endswith(b"\n") and (limit < 0 or len(line) < limit):
            remaining = self._head_deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("the request line and headers took too long")
            if self._waits_at_most is None or self._waits_at_most - remaining > HEAD_SLACK:
                self._sock.settimeout(remaining)  # two system calls: not for every line
                self._waits_at_most = remaining
            buffered = self._stream.peek(1)
            if not buffered:
                break  # end of stream
            if limit >= 0:
                buffered = buffered[:limit - len(line)]
            end = buffered.find(b"\n")
            taken = self._stream.read(end + 1 if end >= 0 else len(buffered))
            line += taken
            self._head_bytes += len(taken)
            if self._head_bytes > HEAD_BYTES:
                raise RequestHeadTooLarge()
        return bytes(line)

    def head_read(self):
        """The request head is read: reads wait the socket's own timeout again."""
        if self._head_deadline is not None:
            self._head_deadline = None
            self._sock.settimeout(self._timeout)

    def read(self, size=-1):
        if not self.response_sent:
            return self._stream.read(size)
        if self._drained >= DRAIN_BYTES:
            return b""
        try:
            data = self._stream.read1(DRAIN_BYTES - self._drained)
        except OSError:
            return b""
        self._drained += len(data)
        return data

    def __getattr__(self, name):  # readline, read1, peek, close, ... as the stream has them
        return getattr(self._stream, name)


class BoundedDrain:
    """The app of a listener, telling the request's `RequestFile` when its response is sent."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        return _Response(self.app(environ, start_response), environ.get(REQUEST_FILE))


class _Response:
    """An app's response body; once all of it is handed to werkzeug, draining is bounded."""

    def __init__(self, body, request_file):
        self._body = body
        self._request_file = request_file

    def __iter__(self):
        yield from self._body
        if self._request_file is not None:
            self._request_file.response_sent = True

    def close(self):
        if hasattr(self._body, "close"):
            self._body.close()


def _target_problem(target):
    """What Go's net/http refuses in a request target that http.server lets through, or
    None: a control character, a target that is neither a path nor an absolute URL,
    one that cannot be split (werkzeug's `urlsplit` would fail with a traceback)."""
    if _CONTROL.search(target):
        return "control character in the request target"
    if not (target.startswith("/") or _ABSOLUTE_FORM.match(target)):
        return "the request target is neither a path nor an absolute URL"
    try:
        authority = urlsplit(target).netloc.rpartition("@")[2]
    except ValueError as error:
        return f"malformed request target ({error})"
    if authority.startswith("["):  # Python before 3.11.4 does not check the literal itself
        try:
            ipaddress.IPv6Address(authority[1:].partition("]")[0].partition("%")[0])
        except ValueError:
            return "malformed request target (not an IPv6 address in brackets)"
    return None


def _header_problem(headers):
    """What Go's net/http refuses in headers that http.server lets through, or None: a
    Host that is not host[:port], more than one Host, Content-Length headers that
    disagree or are not a number."""
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1:
        return "more than one Host header"
    if hosts and not environment.valid_host_header(hosts[0]):
        return "malformed Host header (host[:port] only)"
    lengths = {value.strip() for value in headers.get_all("Content-Length") or []}
    if len(lengths) > 1:
        return "conflicting Content-Length headers"
    if lengths and not all(length.isascii() and length.isdigit() for length in lengths):
        return "Content-Length is not a number"
    return None


def _malformed(headers):
    """True when a header line has no colon or no name, or a name that is not a token."""
    return bool(headers.defects) or not all(map(_TOKEN.match, headers.keys()))


class WaitingRoom:
    """Accepted connections that have not sent anything yet, all watched by one thread.

    werkzeug gives each accepted connection a thread that waits for the
    request: 10,000 clients that connect and say nothing would hold 10,000
    threads. In the waiting room such a connection costs one file descriptor.
    Each comes with the deadline of its request head. When its first bytes
    arrive (a request line, or a TLS ClientHello: the handshake still runs in
    the connection's thread), `hand_over(sock, address, deadline)` gives it its
    thread; a connection its client closed before saying anything is closed
    here, without one; a connection still silent at its deadline is closed.
    `close()` (shutdown) closes every connection still waiting.
    """

    def __init__(self, hand_over):
        self._hand_over = hand_over
        self._selector = selectors.DefaultSelector()
        self._waker, self._wake_up = socket.socketpair()  # admit() and close() write one byte
        for end in (self._waker, self._wake_up):
            end.setblocking(False)
        self._selector.register(self._wake_up, selectors.EVENT_READ)
        self._lock = threading.Lock()             # admit() against the end of close()
        self._arrivals = collections.deque()      # (sock, address, deadline), for the room
        self._waiting = {}                        # sock -> (address, deadline)
        self._deadlines = collections.deque()     # (deadline, sock), in the order admitted
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="waiting-room", daemon=True)
        self._thread.start()

    def admit(self, sock, address, deadline):
        """Take a freshly accepted connection (from the listener's thread), whose request
        head must have arrived by `deadline` (`time.monotonic()`; later than the
        deadlines of the connections admitted before).

        One that has spoken already (a client sends its request right after
        connecting; by the time it is accepted, the request is often in) gets
        its thread at once, and one its client closed already is closed here:
        going through the room's thread first cost 5% of the sessions started
        per second with 16 clients connecting and leaving in a loop.
        """
        if self._closed:
            sock.close()
            return
        try:
            sock.setblocking(False)
        except OSError:  # unusable: a blocking peek here would stall every accept
            sock.close()
            return
        first = _peek_now(sock)
        if first:
            self._leave(sock, address, deadline)
            return
        if first == b"":
            sock.close()
            return
        with self._lock:
            if not self._closed:
                self._arrivals.append((sock, address, deadline))
                self._wake()
                return
        sock.close()

    def close(self):
        """Close every waiting connection and end the room's thread; safe to call twice."""
        with self._lock:
            self._closed = True
            self._wake()
        self._thread.join()

    def _wake(self):
        try:
            self._waker.send(b"\0")
        except OSError:  # the buffer is full of wake-ups already, or the room is closed
            pass

    def _watch(self):
        try:
            while not self._closed:
                for key, _ in self._selector.select(self._seconds_to_next_deadline()):
                    if key.fileobj is self._wake_up:
                        self._drain_wake_ups()
                    else:
                        self._on_readable(key.fileobj)
                self._seat_arrivals()
                self._close_expired()
        finally:
            self._close_everything()

    def _seconds_to_next_deadline(self):
        if not self._deadlines:
            return None
        return max(0.0, self._deadlines[0][0] - time.monotonic())

    def _drain_wake_ups(self):
        try:
            while self._wake_up.recv(4096):
                pass
        except OSError:
            pass

    def _seat_arrivals(self):
        while self._arrivals:
            sock, address, deadline = self._arrivals.popleft()
            if self._full():
                self._leave(sock, address, deadline)
                continue
            try:
                self._selector.register(sock, selectors.EVENT_READ)  # non-blocking: `admit`
            except (OSError, ValueError):  # closed meanwhile, or not selectable here
                sock.close()
                continue
            self._waiting[sock] = (address, deadline)
            self._deadlines.append((deadline, sock))

    def _full(self):
        return (isinstance(self._selector, selectors.SelectSelector)
                and len(self._waiting) >= SELECT_CAPACITY)

    def _on_readable(self, sock):
        """Bytes arrived: hand the connection over, unread; end of stream: close it here."""
        first = _peek_now(sock)
        if first is None:
            return  # not readable after all: keep waiting
        address, deadline = self._waiting.pop(sock)
        self._selector.unregister(sock)
        if first:
            self._leave(sock, address, deadline)
        else:
            sock.close()

    def _leave(self, sock, address, deadline):
        """Give the connection its thread; it is read in the usual blocking way from now on."""
        try:
            sock.setblocking(True)
            self._hand_over(sock, address, deadline)
        except Exception:  # e.g. no thread can be started: drop this one connection
            sock.close()

    def _close_expired(self):
        """Close connections silent past their deadline; forget those that left the room."""
        now = time.monotonic()
        while self._deadlines:
            deadline, sock = self._deadlines[0]
            if sock in self._waiting:
                if deadline > now:
                    break
                del self._waiting[sock]
                self._selector.unregister(sock)
                sock.close()
            self._deadlines.popleft()

    def _close_everything(self):
        with self._lock:
            self._closed = True
            arrivals, self._arrivals = self._arrivals, collections.deque()
        for sock, _, _ in arrivals:
            sock.close()
        for sock in self._waiting:
            sock.close()
        self._waiting.clear()
        self._deadlines.clear()
        self._selector.close()
        self._waker.close()
        self._wake_up.close()


def _peek_now(sock):
    """A non-blocking connection's first byte, left unread; b"" if its client closed
    it (or it broke); None if nothing has arrived yet."""
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Listener(ThreadedWSGIServer):
    """werkzeug's threaded server on a socket bound by websocketd-py.

    An accepted connection waits in the `WaitingRoom` until it sends its first
    bytes; only then does it get werkzeug's thread. Its request line and
    headers must have arrived `head_timeout` seconds after accept. When
    accept() fails for lack of file descriptors, the loop pauses
    (`listening.AcceptPause`).
    With `tls_context`, the TLS handshake runs in `finish_request`, in the
    connection's own thread, and not inside accept() as werkzeug's own
    `ssl_context` would run it (there one silent client stalls everyone).
    """

    unix_file = None  # (path, inode) of a --unixsocket file, removed at close
    waiting_room = None  # none yet while werkzeug's __init__ calls server_close()
    head_timeout = HEAD_TIMEOUT

    def __init__(self, sock, app, threads, log, shown_host, tls_context=None, unix_file=None):
        host = f"unix://{unix_file[0]}" if unix_file else sock.getsockname()[0]
        try:
            super().__init__(host, 0, BoundedDrain(app), RequestHandler, fd=sock.fileno())
        finally:
            sock.close()  # werkzeug works on its own duplicate of the socket
        self.served_app = app
        self.threads = threads  # a `threads.Pool`: the app's
        self.server_log = log  # not `log`: werkzeug calls `self.log(type, message)` itself
        self.shown_host = shown_host
        self.tls_context = tls_context
        self.unix_file = unix_file  # only now: werkzeug's __init__ calls server_close()
        self.waiting_room = WaitingRoom(self._start_handler)
        self.accept_pause = listening.AcceptPause(log)

    def log(self, type, message, *args):
        """werkzeug's own reports (an exception in the app, a 500) go to the websocketd log."""
        self.server_log.write("error" if type == "error" else "debug", "http",
                              message % args if args else message)

    def location(self, scheme):
        """Where the start lines say it listens: `ws://host:port/`, or for a Unix socket
        `unix socket at PATH` (websocketd's words)."""
        if self.unix_file:
            return f"unix socket at {self.shown_host}"
        return f"{scheme}://{self.shown_host}:{self.port}/"

    def get_request(self):
        """accept(), with a pause after a failure for lack of file descriptors (see
        `listening.AcceptPause`): socketserver would call it again at once, and spin."""
        try:
            accepted = super().get_request()
        except OSError as error:
            self.accept_pause.after_failure(error)
            raise
        self.accept_pause.after_success()
        return accepted

    def shutdown(self):
        """Stop serve_forever, without waiting out a pause of the accept loop."""
        self.accept_pause.stop()
        super().shutdown()

    def process_request(self, request, client_address):
        """A new connection waits in the waiting room; its thread starts when it speaks."""
        if request.family in (socket.AF_INET, socket.AF_INET6):
            _keep_alive(request)
        self.waiting_room.admit(request, client_address, time.monotonic() + self.head_timeout)

    def _start_handler(self, request, client_address, head_deadline):
        """werkzeug's thread for one connection (socketserver's `process_request`), from
        the app's pool: reused while connections churn, ended with the app."""
        self.threads.start("request", self.process_request_thread, request, client_address,
                           head_deadline)

    def process_request_thread(self, request, client_address, head_deadline):
        """socketserver's, passing on the deadline of the request head."""
        try:
            self.finish_request(request, client_address, head_deadline)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def finish_request(self, request, client_address, head_deadline):
        """Serve one connection; runs in its own thread, so the TLS handshake is done here."""
        if self.unix_file:
            client_address = UNIX_CLIENT_ADDRESS
        if self.tls_context is None:
            self.RequestHandlerClass(request, client_address, self, head_deadline)
            return
        secured = tls.handshake(request, self.tls_context, self.server_log, client_address[0],
                                head_deadline)
        if secured is not None:
            try:
                self.RequestHandlerClass(secured, client_address, self, head_deadline)
            finally:
                self.shutdown_request(secured)

    def server_close(self):
        """Close the listening socket and the connections still in the waiting room."""
        super().server_close()
        if self.waiting_room is not None:
            self.waiting_room.close()
        if self.unix_file:
            unixsocket.remove(*self.unix_file)


def _keep_alive(sock):
    """Turn TCP keep-alive on with KEEPALIVE_SECONDS where the OS lets us set it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # macOS
        for option in (idle, getattr(socket, "TCP_KEEPINTVL", None)):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, KEEPALIVE_SECONDS)
    except OSError:
        pass  # the connection works without it


#: Exit status when the server cannot start (a listener cannot be opened), as websocketd's.
CANNOT_START = 3


class ListenError(Exception):
    """A listener could not be opened: one line for the user, and `reason`, the same in
    websocketd's words (Go's: `listen tcp 127.0.0.1:8080: bind: address already in use`)."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def open_listener(host, port, app, threads, log, tls_context=None):
    """A `Listener` on `host` (None = every interface) and `port`; its connections' threads
    come from `threads` (a `threads.Pool`)."""
    shown = "*" if host is None else (f"[{host}]" if ":" in host else host)
    try:
        sock = listening.listening_socket(host, port)
    except OSError as error:
        message = (f"cannot listen on {shown}:{port}: {error.strerror or error}"
                   f"{_listen_hint(error, port)}")
        raise ListenError(message, _go_listen_error(host, port, error)) from None
    return Listener(sock, app, threads, log, _display_host(host), tls_context)


def _go_listen_error(host, port, error):
    """What Go's net.Listen says for the same failure."""
    if isinstance(error, socket.gaierror):
        return f"listen tcp: lookup {host}: {listening.os_wording(error)}"
    address = "" if host is None else (f"[{host}]" if ":" in host else host)
    return f"listen tcp {address}:{port}: bind: {listening.os_wording(error)}"


def open_unix_listener(path, app, threads, log):
    """A `Listener` on the Unix socket `path`; a stale socket file there is replaced."""
    try:
        sock, inode = unixsocket.listening_socket(path)
    except unixsocket.UnixSocketError as error:
        raise ListenError(str(error), error.reason) from None
    return Listener(sock, app, threads, log, path, unix_file=(path, inode))


def open_listeners(config, app, log):
    """Every listener the flags ask for, in the order the startup lines name them.

    TCP: one per --address (TLS with --ssl), each followed by its --redirport
    listener; none when --unixsocket is given without --port or --address. Their
    connections' threads come from the app's pool, and end with the app.
    """
    tls_context = config.tls_context
    threads = app.threads
    listeners = []
    try:
        if config.listens_on_tcp:
            port = config.listen_port
            for host in config.addresses or (None,):
                main = open_listener(host, port, app, threads, log, tls_context)
                listeners.append(main)
                port = main.port  # with --port=0, every address gets the port the first one got
                if config.redirport:
                    redirect = RedirectApp(config.scheme, main.port)
                    listeners.append(open_listener(host, config.redirport, redirect, threads,
                                                   log))
        if config.unixsocket:
            listeners.append(open_unix_listener(config.unixsocket, app, threads, log))
    except ListenError:
        for listener in listeners:
            listener.server_close()
        raise
    return listeners


def _listen_hint(error, port):
    import errno
    if error.errno == errno.EADDRINUSE:
        return " (another program uses this port: stop it or choose another --port)"
    if error.errno == errno.EACCES and port < 1024:
        return " (ports below 1024 need administrator rights: try --port=8080)"
    return ""


def _display_host(host):
    if host is None or host in ("0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def startup_lines(config, listeners):
    """What is served and the URLs to open, as INFO lines."""
    lines = []
    if config.command:
        lines.append(("Serving using application   ", " ".join(config.command)))
    if config.dir:
        lines.append(("Serving from directory      ", config.dir))
    if config.staticdir:
        lines.append(("Serving static content from ", config.staticdir))
    if config.cgidir:
        lines.append(("Serving CGI scripts from    ", config.cgidir))
    for listener in listeners:
        if isinstance(listener.served_app, RedirectApp):  # the label as websocketd words it
            lines.append(("Starting redirect server   ", listener.location("http")))
            continue
        secure = "s" if listener.tls_context is not None else ""
        if config.command or config.dir:
            lines.append(("Starting WebSocket server   ", listener.location("ws" + secure)))
        if config.staticdir or config.cgidir or config.devconsole:
            what = "Developer console           " if config.devconsole else "Serving HTTP at             "
            lines.append((what, listener.location("http" + secure)))
    return [f"{label}: {value}" for label, value in lines]


def build_app(config, log, timings=Timings()):
    """The WSGI app, with the plain-HTTP parts, authentication and proxy trust the flags ask for.

    --trusted-proxy wraps `wsgi_app` only (Flask's idiom), so the object
    returned stays the `WebsocketdApp` that `shutdown` works on.
    """
    static_app = devconsole_page = None
    if config.staticdir:
        from .static import StaticFiles
        static_app = StaticFiles(config.staticdir)
    if config.devconsole:
        from .devconsole import page
        devconsole_page = page()
    app = WebsocketdApp(config, log, static_app, devconsole_page,
                        basic_auth=config.users, timings=timings)
    if config.cgidir:
        from .cgi import CgiScripts
        app.cgi_scripts = CgiScripts(config.cgidir, config, log, app.sessions.stderr)
    if config.trusted_proxies:
        from .proxy import TrustedProxies
        app.wsgi_app = TrustedProxies(app.wsgi_app, config.trusted_proxies, log)
    return app


class WebsocketdServer:
    """The app and its listeners, as werkzeug's `make_server` gives a server.

    `serve_forever()` serves until `shutdown()` (from another thread), a
    stop requested by a signal handler (`request_stop`), or Ctrl-C arriving
    as KeyboardInterrupt; then it ends every session and returns. It changes
    nothing process-wide: the command line does that (`tuning`).
    """

    def __init__(self, config, app, listeners, log):
        self.config = config
        self.app = app
        self.listeners = listeners
        self.log = log
        self.stop_reason = None       # set (without a lock: a signal handler may) to stop
        self._serving = False
        self._stopped = threading.Event()

    def startup_lines(self):
        return startup_lines(self.config, self.listeners)

    def request_stop(self, reason):
        """Ask `serve_forever` to shut down; safe in a signal handler (takes no lock)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def serve_forever(self):
        self._serving = True
        self.app.start_eager_broadcast()
        for listener in self.listeners:
            threading.Thread(target=listener.serve_forever, name="listener",
                             kwargs={"poll_interval": POLL_INTERVAL}, daemon=True).start()
        for line in self.startup_lines():
            self.log.write("info", "server", line)
        try:
            while self.stop_reason is None:  # short sleeps: Windows delivers Ctrl-C between them
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            self.request_stop("SIGINT received")
        self.log.write("info", "server", f"{self.stop_reason}: shutting down")
        self._close()

    def shutdown(self):
        """Stop serving and end every session; returns once `serve_forever` has returned."""
        self.request_stop("shutdown() called")
        if self._serving:
            self._stopped.wait()
        else:
            self._close()

    def _close(self):
        """Stop accepting, end every session, and leave no child behind."""
        serving = self.listeners if self._serving else []  # socketserver's shutdown() would
        stoppers = [threading.Thread(target=listener.shutdown, name="listener-stop")  # wait
                    for listener in serving]                # for a serve_forever never run
        self.app.closing = True
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        for listener in self.listeners:
            listener.server_close()
        self.app.shutdown()  # it ends the connections' threads too (its pool)
        self.log.write("info", "server", "stopped")
        self._stopped.set()


def make_log(config):
    """The server's log, at --loglevel, in the --logformat."""
    if config.logformat == "short":
        from .shortlog import ShortFormat
        return Log(config.loglevel, line_format=ShortFormat(config.dir or config.cgidir))
    return Log(config.loglevel)


def make_server(config, log=None, timings=Timings()):
    """A `WebsocketdServer` for a validated `Config`, its listeners open; ListenError if one
    cannot be. `timings` (`session.Timings`) are for tests that need shorter waits."""
    log = log or make_log(config)
    app = build_app(config, log, timings)
    try:
        listeners = open_listeners(config, app, log)
    except ListenError:
        app.close()
        raise
    return WebsocketdServer(config, app, listeners, log)


def serve(config):
    """Serve until `shutdown()` or Ctrl-C; the exit status (CANNOT_START: a listener could
    not be opened, see `report_start_failure`)."""
    try:
        server = make_server(config)
    except ListenError as error:
        return report_start_failure(config, error)
    server.serve_forever()
    return 0


def report_start_failure(config, error):
    """Say why the server cannot start as websocketd does (its FATAL log line, on stdout)
    and in one line on stderr; the exit status, CANNOT_START."""
    Log(config.loglevel).write("fatal", "server", f"Can't start server: {error.reason}")
    sys.stderr.write(f"websocketd-py: {error}\n")
    return CANNOT_START
