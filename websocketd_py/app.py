"""The one WSGI app: upgrade or plain HTTP, which endpoint, may it start a process.

Every request comes here from the `server` handler. With --basic-auth every
request first needs valid credentials (401), and a plain request to
--status-path gets the status report. A WebSocket upgrade is then
checked in this order, and refused before any process starts: endpoint found
(404/403), origin allowed (403), handshake well-formed (400), fork slot free
(429). Only after simple-websocket has sent the 101 does the process start;
with --broadcast the connection instead joins its endpoint's shared process
(`broadcast`), still holding a fork slot, so --maxforks caps the clients.
Plain HTTP requests go to the dev console, static files or a short error.
"""

import base64
import binascii
import contextlib
import dataclasses
import os
import re
import threading
import time
from typing import Tuple
from urllib.parse import unquote_to_bytes, urlsplit

from werkzeug.wrappers import Response

from . import auth, broadcast, environment, oslayer, status
from .process import ChildProcess
from .session import Session
from .websocket import CloseReason, WebSocket


#: Seconds of silence from a running program before the log suggests it may be buffering.
BUFFERING_HINT_AFTER = 3.0
BUFFERING_HINT = (
    "no output from the program yet: if it has printed something, it is probably waiting in "
    "a buffer (stdout is a pipe, not a terminal). Flush after each line: Python print(..., "
    "flush=True) or python -u, C fflush(stdout), Perl $| = 1, Ruby $stdout.sync = true, "
    "or run it under stdbuf -oL")


class ConnectionTakenOver(ConnectionError):
    """Raised to the handler after a WebSocket session: the socket was used, write no response.

    werkzeug treats a ConnectionError from the app as a dropped connection and
    writes nothing; without it, it would send a stray `HTTP/1.1 200` into the
    finished WebSocket stream.
    """


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """What a URL path runs: argv, and how the path splits into SCRIPT_NAME and PATH_INFO."""

    argv: Tuple[str, ...]
    script_name: str
    path_info: str


@dataclasses.dataclass(frozen=True)
class EndpointRequest:
    """The request facts the process environment is built from (see `environment.build`)."""

    method: str
    host: str
    https: bool
    remote_addr: str
    remote_port: int
    remote_host: str
    script_name: str
    path_info: str
    path: str
    query_string: str
    request_uri: str
    unique_id: str
    headers: Tuple[Tuple[str, str], ...]
    remote_user: str = ""   # REMOTE_USER and AUTH_TYPE: from --basic-auth (or a WSGI
    auth_type: str = ""     # middleware in front of an embedded app), else empty
    subprotocol: str = ""   # WEBSOCKET_PROTOCOL: the negotiated subprotocol, "" = none


class Refused(Exception):
    """A request answered with an HTTP error instead of what it asked for."""

    def __init__(self, status, text, headers=()):
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers


def resolve_in_directory(root, raw_path):
    """The script a --dir URL path names, walking its segments; Refused if none or outside.

    The raw (still %-encoded) path is split on "/" before decoding, so `%2f`
    never separates segments; a decoded segment that holds "/", "\\", NUL or
    ":" or is "." or ".." is refused, and the script's real path (symlinks
    resolved) must lie inside the real root. PATH_INFO is the rest of the
    path as sent, empty segments and a trailing "/" included.
    """
    real_root = os.path.realpath(root)
    current = real_root
    parts = raw_path.split("/")
    for index, raw_segment in enumerate(parts):
        if not raw_segment:
            continue
        segment = _percent_decoded(raw_segment)
        if (segment in (".", "..") or any(c in segment for c in "/\\\0:")
                or len(segment) > 255):
            raise Refused(404, "Not found")
        candidate = os.path.join(current, segment)
        if os.path.isdir(candidate):
            current = candidate
            continue
        if not os.path.isfile(candidate):
            break
        real = os.path.realpath(candidate)
        if os.path.commonpath([real, real_root]) != real_root:
            raise Refused(403, "Forbidden: the script is outside the directory")
        if not (oslayer.IS_WINDOWS or os.access(real, os.X_OK)):
            raise Refused(403, "Forbidden: the script is not executable")
        script_name = "/" + "/".join(_percent_decoded(p) for p in parts[:index + 1] if p)
        rest = parts[index + 1:]
        path_info = "/" + _percent_decoded("/".join(rest)) if rest else ""
        return Endpoint((candidate,), script_name, path_info)
    raise Refused(404, "Not found")


def origin_allowed(origin, host, https, allowed, same_origin):
    """SPEC §5: --origin entries and --sameorigin against the Origin header."""
    if not allowed and not same_origin:
        return True
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    try:
        origin_port = parts.port
    except ValueError:
        return False
    if origin_port is None:
        origin_port = 443 if parts.scheme in ("https", "wss") else 80
    origin_host = (parts.hostname or "").lower()
    if not origin_host:
        return False
    if same_origin:
        host_name, host_port = environment.split_host(host, https)
        if (origin_host, origin_port) != (host_name.strip("[]").lower(), int(host_port)):
            return False
    if allowed:
        return any(_origin_matches(entry, parts.scheme, origin_host, origin_port)
                   for entry in allowed)
    return True


def _origin_matches(entry, scheme, host, port):
    """One --origin entry, `[scheme://]host[:port]`: no scheme = http or https, no port = any."""
    entry_scheme, sep, rest = entry.strip().rstrip("/").partition("://")
    if not sep:
        entry_scheme, rest = "", entry_scheme
    if entry_scheme and entry_scheme.lower() != scheme:
        return False
    if not entry_scheme and scheme not in ("http", "https"):
        return False
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        name, _, after = rest[1:].partition("]")
        entry_port = after[1:] if after.startswith(":") else None
    elif rest.count(":") == 1:
        name, entry_port = rest.split(":")
    else:  # a name, or an IPv6 address without brackets (and so without port)
        name, entry_port = rest, None
    if entry_port is not None and not (entry_port.isascii() and entry_port.isdigit()):
        return False
    return name.lower() == host and (entry_port is None or int(entry_port) == port)


def is_upgrade(environ):
    connection = environ.get("HTTP_CONNECTION", "").lower()
    return (environ.get("HTTP_UPGRADE", "").lower() == "websocket"
            and "upgrade" in (token.strip() for token in connection.split(",")))


#: Not allowed in a Host header (as Go's net/http, so websocketd, refuses it).
_NOT_HOST_CHARACTER = re.compile("[^\x21-\x7e]")


def check_handshake(environ):
    """Refuse (400) what RFC 6455 §4.2.1 does not allow, before any 101 or process."""
    if environ["REQUEST_METHOD"] != "GET":
        raise Refused(400, "Bad Request: a WebSocket upgrade must be a GET")
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        raise Refused(400, "Bad Request: a WebSocket upgrade needs HTTP/1.1")
    if "HTTP_HOST" not in environ:
        raise Refused(400, "Bad Request: missing Host header (HTTP/1.1 requires one)")
    if _NOT_HOST_CHARACTER.search(environ["HTTP_HOST"].strip(" \t")):
        raise Refused(400, "Bad Request: malformed Host header (ASCII without spaces only)")
    if any(key.startswith("HTTP_") and "\0" in value for key, value in environ.items()):
        raise Refused(400, "Bad Request: NUL in a header value")  # other controls: spaces
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != "13":
        raise Refused(400, "Bad Request: unsupported Sec-WebSocket-Version (this server "
                           "speaks 13)", (("Sec-WebSocket-Version", "13"),))
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise Refused(400, "Bad Request: missing or malformed Sec-WebSocket-Key")


class ForkSlots:
    """--maxforks: a slot is held from the upgrade until the process is reaped."""

    def __init__(self, limit):
        self._semaphore = threading.BoundedSemaphore(limit) if limit > 0 else None
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self):
        """A `ForkSlot`, or None when --maxforks processes run already."""
        if self._semaphore is not None and not self._semaphore.acquire(blocking=False):
            return None
        with self._lock:
            self.in_use += 1
        return ForkSlot(self)

    def _release(self):
        with self._lock:
            self.in_use -= 1
        if self._semaphore is not None:
            self._semaphore.release()


class ForkSlot:
    """One held slot; `release()` may be called more than once."""

    def __init__(self, slots):
        self._slots = slots

    def release(self):
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release()


class ActiveSessions:
    """What is running now (sessions, or CGI processes), for shutdown and for --pingms.

    `snapshot()` takes no lock (the set is replaced, never changed in place),
    so a signal handler may call it.
    """

    def __init__(self):
        self._items = frozenset()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def add(self, item):
        with self._lock:
            self._items = self._items | {item}

    def remove(self, item):
        with self._lock:
            self._items = self._items - {item}
            if not self._items:
                self._idle.notify_all()

    def snapshot(self):
        return self._items

    def wait_empty(self, timeout):
        with self._lock:
            return self._idle.wait_for(lambda: not self._items, timeout)


class WebsocketdApp:
    """The WSGI application behind every listener."""

    def __init__(self, config, log, static_app=None, devconsole_page=None, cgi_scripts=None,
                 basic_auth=None):
        self.config = config
        self.log = log
        self.forks = ForkSlots(config.maxforks)
        self.sessions = ActiveSessions()
        self.records = ActiveSessions()  # a `status.SessionRecord` per session, for --status-path
        self.hubs = broadcast.Hubs(config, log, self._shared_environment)  # --broadcast
        self.started = time.monotonic()
        self.basic_auth = basic_auth  # an `auth.BasicAuth` with --basic-auth(-file)
        self.static_app = static_app
        self.devconsole_page = devconsole_page
        self.cgi_scripts = cgi_scripts  # a `cgi.CgiScripts` with --cgidir
        #: --header and --header-http: on every response but the 101.
        self.http_headers = list(config.headers + config.headers_http)
        self.closing = False  # set at shutdown: no new sessions
        threading.Thread(target=self._watch_sessions, name="session-watcher", daemon=True).start()

    def __call__(self, environ, start_response):
        """WSGI entry: `wsgi_app`, which middleware may replace (see `server.build_app`)."""
        return self.wsgi_app(environ, start_response)

    def wsgi_app(self, environ, start_response):
        start_response = self._with_headers(start_response)
        try:
            if self.basic_auth is not None:
                self.authenticate(environ)
            if self.is_status_request(environ):
                return self.status(environ, start_response)
            endpoint = self.endpoint_for(environ)
            if is_upgrade(environ):
                if endpoint is None:
                    raise Refused(404, "Not found: no WebSocket endpoint at this path")
                return self.upgrade(environ, start_response, endpoint)
            return self.plain_http(environ, start_response, endpoint)
        except Refused as refusal:
            if refusal.status >= 403 and is_upgrade(environ):
                self._request_log(environ).error("http", f"upgrade refused: {refusal.text}")
            response = Response(refusal.text + "\n", refusal.status,
                                headers=list(refusal.headers), mimetype="text/plain")
            return response(environ, start_response)

    def authenticate(self, environ):
        """--basic-auth: Refused (401) unless the request names a listed user and password."""
        problem = self.basic_auth.authenticate(environ)
        if problem is not None:
            self._request_log(environ).error("auth", f"401 Unauthorized: {problem}")
            raise Refused(401, "Unauthorized: this server needs a user name and password",
                          (("WWW-Authenticate", auth.CHALLENGE),))

    def is_status_request(self, environ):
        """--status-path: a plain HTTP request to exactly that path (upgrades go to endpoints)."""
        return (self.config.status_path is not None and not is_upgrade(environ)
                and decoded_path(environ) == self.config.status_path)

    def status(self, environ, start_response):
        """The --status-path JSON report, before any endpoint or static file."""
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            raise Refused(405, "Method Not Allowed: the status page answers GET and HEAD",
                          (("Allow", "GET, HEAD"),))
        report = status.report(self.records.snapshot(), self.forks.in_use,
                               self.config.maxforks, time.monotonic() - self.started)
        return status.response(report)(environ, start_response)

    def endpoint_for(self, environ):
        """The Endpoint for this path, None when nothing runs here; Refused when forbidden."""
        if self.config.command:
            return Endpoint(self.config.command, "/", decoded_path(environ))
        if self.config.dir:
            try:
                return resolve_in_directory(self.config.dir, raw_path(environ))
            except Refused as refusal:
                if refusal.status == 404:
                    return None
                raise
        return None

    def plain_http(self, environ, start_response, endpoint):
        """Dev console, else a CGI script, else a static file, else a short error."""
        if endpoint is not None and self.devconsole_page is not None:
            response = Response(self.devconsole_page, mimetype="text/html",
                                headers=[("Cache-Control", "no-store")])
            return response(environ, start_response)
        if self.cgi_scripts is not None:
            script = self.cgi_scripts.script_for(environ)
            if script is not None:
                return self.cgi_scripts.run(environ, start_response, script, self.forks)
        if self.static_app is not None:
            return self.static_app(environ, start_response)
        if endpoint is not None:
            raise Refused(400, "Bad Request: this URL is a WebSocket endpoint; connect to it "
                               "with a WebSocket client (ws:// URL), or start websocketd-py "
                               "with --devconsole to get a test page here")
        raise Refused(404, "Not found")

    # -- the WebSocket path --------------------------------------------------------

    def upgrade(self, environ, start_response, endpoint):
        config = self.config
        if self.closing:
            raise Refused(503, "Service Unavailable: the server is shutting down")
        host = environ.get("HTTP_HOST", "")
        https = environ.get("wsgi.url_scheme") == "https"
        if not origin_allowed(environ.get("HTTP_ORIGIN"), host, https, config.origins,
                              config.sameorigin):
            raise Refused(403, "Forbidden: origin not allowed")
        check_handshake(environ)
        slot = self.forks.try_acquire()
        if slot is None:
            raise Refused(429, "Too Many Requests: --maxforks processes are running already; "
                               "try again later")
        try:
            self._run_session(environ, endpoint, host, https, slot)
        finally:
            slot.release()
        raise ConnectionTakenOver()

    def _run_session(self, environ, endpoint, host, https, slot):
        started = self._start_session(environ, endpoint, host, https, slot)
        if started is None:
            return
        session, record = started
        try:
            with self._listed(session, record):
                session.run()
        finally:
            slot.release()
        exit_words = oslayer.describe_exit(session.process.popen.returncode)
        session.log.with_fields(exit=exit_words, close=session.websocket.close_code or "").access(
            "session", "DISCONNECT")

    @contextlib.contextmanager
    def _listed(self, session, record):
        """While it runs, the session is told of shutdown and shown by --status-path."""
        self.sessions.add(session)
        self.records.add(record)
        try:
            yield
        finally:
            self.sessions.remove(session)
            self.records.remove(record)

    def _start_session(self, environ, endpoint, host, https, slot):
        """The handshake and the process: (Session, its status record), or None if it ended.

        A separate call so that what only the start needs (the request, the
        process's environment: ~2 KiB) is freed before the session runs.
        """
        request = self._endpoint_request(environ, endpoint, host, https)
        log = self.log.context(url=_url(environ), id=request.unique_id,
                               remote=request.remote_addr, command=endpoint.argv[0],
                               origin=environ.get("HTTP_ORIGIN", ""))
        try:
            websocket = WebSocket(environ, self.config.headers + self.config.headers_ws,
                                  self.config.maxframesize, self.config.subprotocols,
                                  compress=self.config.compress)
        except OSError as error:  # the client left during the handshake: nothing was started
            log.error("session", f"handshake not completed: {error}")
            return None
        except Exception as error:  # e.g. a WSGI server that does not hand its socket over
            raise Refused(500, f"Internal Server Error: cannot take the connection over "
                               f"({error})") from None
        self._access(environ, 101)
        log.access("session", "CONNECT")
        if self.config.broadcast:
            self._join_hub(websocket, endpoint, request, log)
            return None  # the hub's session has ended
        request = dataclasses.replace(request, subprotocol=websocket.subprotocol or "")
        env = environment.build(request, self.config.passenv)
        if log.enabled("debug"):
            for key in sorted(env):
                log.debug("env", f"{key}={env[key]}")
        try:
            process = ChildProcess(endpoint.argv, env)
        except (OSError, ValueError) as error:
            log.error("process", f"cannot start {endpoint.argv[0]}: {error}")
            websocket.close(CloseReason.INTERNAL_ERROR, "cannot start the program")
            websocket.release()
            slot.release()
            log.access("session", "DISCONNECT")
            return None
        session = Session(websocket, process, self.config, log.with_fields(pid=process.pid))
        return session, status.SessionRecord(request.unique_id, request.remote_addr,
                                             endpoint.argv[0], process.pid, time.time())

    def _join_hub(self, websocket, endpoint, request, log):
        """--broadcast: the connection becomes one more client of its endpoint's shared process."""
        hub = self.hubs.hub_for(endpoint)
        client = broadcast.Client(hub, websocket, request.unique_id, self.config, log)
        record = status.SharedSessionRecord(request.unique_id, request.remote_addr,
                                            endpoint.argv[0], time.time(), hub)
        with self._listed(client, record):
            client.run()
        log.with_fields(close=websocket.close_code or "").access("session", "DISCONNECT")

    def start_eager_broadcast(self):
        """--broadcast=eager: the shared process starts now, before any client connects."""
        if self.config.broadcast == "eager":
            self.hubs.hub_for(Endpoint(self.config.command, "/", "")).keep_running()

    def _shared_environment(self, endpoint):
        """A --broadcast process's environment: its endpoint's, and no client's.

        SCRIPT_NAME names the endpoint; PATH_INFO, the query, the headers and
        every client or Host fact (REMOTE_*, SERVER_NAME, SERVER_PORT) are
        empty; UNIQUE_ID is the process's own; HTTPS=on with --ssl.
        """
        request = EndpointRequest(
            method="GET", host="", https=self.config.ssl, remote_addr="", remote_port="",
            remote_host="", script_name=endpoint.script_name, path_info="",
            path=endpoint.script_name, query_string="", request_uri=endpoint.script_name,
            unique_id=environment.unique_id(), headers=())
        env = environment.build(request, self.config.passenv)
        env.update(SERVER_NAME="", SERVER_PORT="")
        return env

    def _endpoint_request(self, environ, endpoint, host, https):
        remote_addr = environ.get("REMOTE_ADDR", "")
        return EndpointRequest(
            method="GET", host=host, https=https, remote_addr=remote_addr,
            remote_port=environ.get("REMOTE_PORT", 0),
            remote_host=environment.remote_host(remote_addr, self.config.reverselookup),
            script_name=endpoint.script_name, path_info=endpoint.path_info,
            path=decoded_path(environ), query_string=raw_query(environ),
            request_uri=request_target(environ), unique_id=environment.unique_id(),
            headers=tuple(environ.get("websocketd_py.headers", ())),
            remote_user=environ.get("REMOTE_USER", ""), auth_type=environ.get("AUTH_TYPE", ""))

    def _watch_sessions(self):
        """One thread for all sessions: --pingms pings and timeouts, and the buffering hint."""
        ping_interval = self.config.pingms / 1000.0
        interval = min(ping_interval or BUFFERING_HINT_AFTER, BUFFERING_HINT_AFTER) / 2
        next_ping = time.monotonic() + ping_interval
        while True:
            time.sleep(interval)
            now = time.monotonic()
            sessions = self.sessions.snapshot()
            for session in sessions:
                if session.silent_since(now - BUFFERING_HINT_AFTER):
                    session.log.info("session", BUFFERING_HINT)
            if ping_interval and now >= next_ping:
                next_ping = now + ping_interval
                for session in sessions:
                    self._ping(session, now - 2 * ping_interval)

    @staticmethod
    def _ping(session, deadline):
        websocket = session.websocket
        if session.waiting_for_process:  # not reading the client: not its fault
            websocket.last_heard = time.monotonic()
        elif websocket.last_heard < deadline:
            session.log.info("session", "no answer to pings: closing")
            websocket.close(CloseReason.POLICY_VIOLATION, "ping timeout", timeout=0.1)
            websocket.abort()
        else:
            websocket.ping()

    # -- headers and logs ----------------------------------------------------------

    def _with_headers(self, start_response):
        extra = self.http_headers
        if not extra:
            return start_response

        def start_response_with_headers(status, headers, exc_info=None):
            return start_response(status, headers + extra, exc_info)
        return start_response_with_headers

    def _access(self, environ, status):
        self._request_log(environ).access("http", f"{status} {_REASONS.get(status, '')}")

    def _request_log(self, environ):
        return self.log.context(url=_url(environ), remote=environ.get("REMOTE_ADDR", ""))


_REASONS = {101: "Switching Protocols"}


def _percent_decoded(raw):
    """%-decoded text; bytes that are not UTF-8 are kept (surrogateescape), as the OS takes them."""
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _as_sent(wsgi_text):
    """werkzeug's environ text (bytes as latin-1) back to what was sent, any bytes kept."""
    return wsgi_text.encode("latin-1").decode("utf-8", "surrogateescape")


def request_target(environ):
    """The request target as sent, an absolute-form one (`http://host/p?q`) cut to `/p?q`."""
    target = _as_sent(environ.get("REQUEST_URI", "/"))
    if "://" in target.split("?", 1)[0]:
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target


def raw_path(environ):
    """The path of the request target, still %-encoded."""
    return request_target(environ).split("?", 1)[0]


def raw_query(environ):
    """The query of the request target as sent (QUERY_STRING stays %-encoded)."""
    return _as_sent(request_target(environ).partition("?")[2])


def decoded_path(environ):
    """The request path %-decoded, keeping bytes that are not UTF-8 (werkzeug's PATH_INFO does not)."""
    return _percent_decoded(raw_path(environ))


def _url(environ):
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return auth.without_userinfo(f"{scheme}://{host}{environ.get('REQUEST_URI', '')}")

