"""Listeners, the request handler, and the server's start and stop.

One werkzeug threaded server (`make_server`) per --address, on a socket bound
here (so a busy port is one clear line, and Windows refuses to share it). The
handler subclass changes what werkzeug's development server does by default:
no banner, websocketd-format access lines, no tracebacks on stderr, a time
limit for reading the request, and no HTTP response after a WebSocket session
(see `app.ConnectionTakenOver`).
"""

import sys
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from . import __version__, oslayer
from .app import WebsocketdApp
from .log import Log

#: Seconds a client has to send its request line and headers.
REQUEST_TIMEOUT = 30
#: How often listeners look up from accept() for a shutdown request.
POLL_INTERVAL = 0.1
#: How long ending every session may take at shutdown before the rest is killed.
SHUTDOWN_GRACE = 2.5


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, quiet, with websocketd-format logs."""

    timeout = REQUEST_TIMEOUT

    def version_string(self):
        return f"websocketd-py/{__version__}"

    def make_environ(self):
        environ = super().make_environ()
        # The headers as received (order, repeats), for the process environment.
        environ["websocketd_py.headers"] = list(self.headers.items())
        return environ

    def handle(self):
        try:
            super().handle()
        except Exception as error:  # a handler must never print a traceback and die
            self.server.log.error("http", f"error while handling a request: {error!r}")

    def connection_dropped(self, error, environ=None):
        self.close_connection = True  # also after a WebSocket session took the socket over

    def log_request(self, code="-", size="-"):
        code = int(code) if str(code).isdigit() else code
        phrase = self.responses.get(code, ("",))[0] if isinstance(code, int) else ""
        host = self.headers.get("Host", "") if getattr(self, "headers", None) else ""
        path = getattr(self, "path", "") or self.requestline
        scheme = "https" if self.server.ssl_context else "http"
        self.server.log.write("access", "http", f"{code} {phrase}".strip(), (
            ("url", f"{scheme}://{host}{path}"), ("remote", self.client_address[0])))

    def log_error(self, format, *args):
        self.server.log.write("debug", "http", format % args,
                              (("remote", self.client_address[0]),))

    def log_message(self, format, *args):
        self.log_error(format, *args)


class ListenError(Exception):
    """A listener could not be opened: one line for the user."""


def open_listener(host, port, app, log):
    """A werkzeug threaded server on `host` (None = every interface) and `port`."""
    shown = "*" if host is None else (f"[{host}]" if ":" in host else host)
    try:
        sock = oslayer.listening_socket(host, port)
    except OSError as error:
        raise ListenError(f"cannot listen on {shown}:{port}: {error.strerror or error}"
                          f"{_listen_hint(error, port)}") from None
    try:
        bound_host = sock.getsockname()[0]
        server = make_server(bound_host, port, app, threaded=True,
                             request_handler=RequestHandler, fd=sock.fileno())
    finally:
        sock.close()  # werkzeug works on its own duplicate of the socket
    server.log = log
    return server


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
    for host, server in listeners:
        base = f"{_display_host(host)}:{server.port}"
        if config.command or config.dir:
            lines.append(("Starting WebSocket server   ", f"ws://{base}/"))
        if config.staticdir or config.devconsole:
            what = "Developer console           " if config.devconsole else "Serving HTTP at             "
            lines.append((what, f"http://{base}/"))
    return [f"{label}: {value}" for label, value in lines]


def build_app(config, log):
    static_app = devconsole_page = None
    if config.staticdir:
        from .static import StaticFiles
        static_app = StaticFiles(config.staticdir)
    if config.devconsole:
        from .devconsole import page
        devconsole_page = page()
    return WebsocketdApp(config, log, static_app, devconsole_page)


def run(config):
    """Serve until Ctrl-C or SIGTERM, then end every session; the exit status."""
    log = Log(config.loglevel)
    oslayer.raise_open_file_limit()
    app = build_app(config, log)
    hosts = config.addresses or (None,)
    listeners = []
    try:
        for host in hosts:
            listeners.append((host, open_listener(host, config.listen_port, app, log)))
    except ListenError as error:
        for _, server in listeners:
            server.server_close()
        sys.stderr.write(f"websocketd-py: {error}\n")
        return 1
    for line in startup_lines(config, listeners):
        log.write("info", "server", line)

    stop = threading.Event()

    def on_signal(name):
        if stop.is_set():  # a second Ctrl-C: no more waiting
            _kill_all(app)
            log.write("info", "server", f"{name} again: exiting now")
            sys.stdout.flush()
            import os
            os._exit(1)
        log.write("info", "server", f"{name} received: shutting down")
        stop.set()

    oslayer.install_shutdown_handlers(on_signal)
    for _, server in listeners:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                         name="listener", daemon=True).start()
    while not stop.wait(1.0):  # a timed wait, so Ctrl-C is seen on Windows too
        pass
    shutdown(app, [server for _, server in listeners], log)
    return 0


def shutdown(app, servers, log):
    """Stop accepting, end every session in parallel, and leave no child behind."""
    app.closing = True
    stoppers = [threading.Thread(target=server.shutdown) for server in servers]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()
    for server in servers:
        server.server_close()
    for session in app.sessions.snapshot():
        session.shutdown()
    if not app.sessions.wait_empty(SHUTDOWN_GRACE):
        _kill_all(app)
        app.sessions.wait_empty(0.5)
    log.write("info", "server", "stopped")


def _kill_all(app):
    for session in app.sessions.snapshot():
        session.process.kill_group()
        session.websocket.abort()
