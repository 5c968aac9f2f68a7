"""The one WSGI app: which request gets what, checked in the order a client is told.

Every request comes here from the `server` handler (or from a werkzeug
server the app is mounted in, see `api.WebSocketApp`):

0. a path with dot segments or "//": a 301 to the cleaned path (400 for an
   upgrade), and a ".." that %-decoding makes: 404 (`cleanpath`);
1. --basic-auth: valid credentials, or 401;
2. --status-path: a plain GET there gets the status report;
3. the endpoint of the path (`endpoints`): COMMAND, or a --dir script (403
   when it may not run);
4. a WebSocket upgrade to an endpoint: the handshake (`handshake.accept`:
   403 for the origin, 400 for a malformed upgrade), a fork slot (429), the
   101 (`websocket.upgrade`), then the session (`session.Sessions.run`), which
   owns the slot from there; with --broadcast the session's program is a
   subscription to the endpoint's shared process (`broadcast`);
5. plain HTTP: the dev console (with --dir, a directory's list of programs),
   a CGI script, a static file, or an error.
"""

import time

from werkzeug.wrappers import Response

from . import (auth, broadcast, cleanpath, dirindex, environment, framing, handshake, status,
               websocket)
from .decoding import request_target
from .endpoints import Endpoint, endpoint_for
from .process import ProcessEndpoint
from .refused import Refused
from .registry import ForkSlots
from .session import Sessions, Timings
from .threads import Pool
from .watchdog import Watchdog

#: websocketd's answer (Go's http.NotFound) where nothing serves a plain request.
NOT_FOUND = "404 page not found"
#: On the dev console's connection, how long the start of a line waits for its newline
#: before it is shown as a prompt.
DEVCONSOLE_PROMPT_AFTER = 0.2
#: How long ending every session may take at shutdown before the rest is killed.
SHUTDOWN_GRACE = 2.5
#: While the sessions end at shutdown, how often to look again (and for late ones).
LATE_SESSION_CHECK = 0.05


class WebsocketdApp:
    """The WSGI application behind every listener; `close()` ends the threads it started."""

    def __init__(self, config, log, static_app=None, devconsole_page=None, cgi_scripts=None,
                 basic_auth=None, timings=Timings()):
        self.config = config
        self.log = log
        self.forks = ForkSlots(config.maxforks)
        self.threads = Pool()  # the sessions' writers, and the request threads of our server
        self.sessions = Sessions(config, self.threads, timings)
        self.hubs = broadcast.Hubs(config, log, self.shared_environment,
                                   self.sessions.stderr, timings.restart_delay)  # --broadcast
        self.started = time.monotonic()
        self.basic_auth = basic_auth  # an `auth.BasicAuth` with --basic-auth(-file)
        self.static_app = static_app
        self.devconsole_page = devconsole_page
        self.cgi_scripts = cgi_scripts  # a `cgi.CgiScripts` with --cgidir
        #: --header and --header-http: on every response but the 101.
        self.http_headers = list(config.headers + config.headers_http)
        self.closing = False  # set at shutdown: no new sessions
        self.watchdog = Watchdog(self.sessions.running, config.pingms / 1000.0,
                                 timings.hint_after)

    def __call__(self, environ, start_response):
        """WSGI entry: `wsgi_app`, which middleware may replace (see `server.build_app`)."""
        return self.wsgi_app(environ, start_response)

    def wsgi_app(self, environ, start_response):
        start_response = self._with_headers(start_response)
        upgrade = handshake.is_upgrade(environ)
        try:
            target = request_target(environ)
            cleanpath.require_clean(target, upgrade)
            if self.basic_auth is not None:
                self.authenticate(environ)
            if self.is_status_request(upgrade, target):
                return self.status(environ, start_response)
            endpoint = endpoint_for(self.config, target)
            if upgrade:
                if endpoint is None:
                    raise Refused(404, NOT_FOUND + "\nno WebSocket endpoint at this path")
                return self.upgrade(environ, endpoint)
            return self.plain_http(environ, start_response, endpoint)
        except Refused as refusal:
            if refusal.status >= 403 and upgrade:
                self._request_log(environ).error("http", f"upgrade refused: {refusal.text}")
            return refusal.response()(environ, start_response)

    def authenticate(self, environ):
        """--basic-auth: Refused (401) unless the request names a listed user and password."""
        problem = self.basic_auth.authenticate(environ)
        if problem is not None:
            self._request_log(environ).error("auth", f"401 Unauthorized: {problem}")
            raise Refused(401, "Unauthorized: this server needs a user name and password",
                          (("WWW-Authenticate", auth.CHALLENGE),))

    def is_status_request(self, upgrade, target):
        """--status-path: a plain HTTP request to exactly that path (upgrades go to endpoints)."""
        return (self.config.status_path is not None and not upgrade
                and target.path == self.config.status_path)

    def status(self, environ, start_response):
        """The --status-path JSON report, before any endpoint or static file."""
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            raise Refused(405, "Method Not Allowed: the status page answers GET and HEAD",
                          (("Allow", "GET, HEAD"),))
        report = status.report(self.sessions.records.snapshot(), self.forks.in_use,
                               self.config.maxforks, time.monotonic() - self.started)
        return status.response(report)(environ, start_response)

    def plain_http(self, environ, start_response, endpoint):
        """Dev console (or with --dir a directory's page), else a CGI script, else a static
        file, else a short error."""
        if self.devconsole_page is not None:
            page = self.devconsole_page if endpoint is not None else self.directory_page(environ)
            if page is not None:
                response = Response(page, mimetype="text/html",
                                    headers=[("Cache-Control", "no-store")])
                return response(environ, start_response)
        if self.cgi_scripts is not None:
            script = self.cgi_scripts.script_for(environ)
            if script is not None:
                return self.cgi_scripts.run(environ, start_response, script, self.forks)
        if self.static_app is not None:
            return self.static_app(environ, start_response)
        if endpoint is not None:
            raise Refused(404, NOT_FOUND + "\nthis URL is a WebSocket endpoint: connect to it "
                               "with a WebSocket client (ws:// URL), or start websocketd-py "
                               "with --devconsole to get a test page here")
        raise Refused(404, NOT_FOUND)

    def directory_page(self, environ):
        """--dir with --devconsole: a GET of a directory lists its programs (`dirindex`)."""
        if not self.config.dir or environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return None
        return dirindex.page(self.config.dir, request_target(environ))

    # -- the WebSocket path --------------------------------------------------------

    def upgrade(self, environ, endpoint):
        """Refuse, or answer 101 and run the session; then tell the server the connection
        was taken over (`websocket.ConnectionTakenOver`)."""
        if self.closing:
            raise Refused(503, "Service Unavailable: the server is shutting down")
        accepted = handshake.accept(environ, self.config)
        slot = self.forks.try_acquire()
        if slot is None:
            raise Refused(429, "Too Many Requests: --maxforks processes are running already; "
                               "try again later")
        try:
            unique_id = environment.unique_id()
            log = self.log.context(url=auth.logged_url(environ), id=unique_id,
                                   remote=environ.get("REMOTE_ADDR", ""), command=endpoint.argv[0],
                                   origin=environ.get("HTTP_ORIGIN", ""))
            try:
                client = websocket.upgrade(environ, accepted, self.config.maxframesize)
            except OSError as error:  # the client left during the handshake: nothing started
                log.error("session", f"handshake not completed: {error}")
                raise websocket.ConnectionTakenOver() from None
            except Exception as error:  # e.g. a WSGI server that does not hand its socket over
                raise Refused(500, f"Internal Server Error: cannot take the connection over "
                                   f"({error})") from None
        except BaseException:
            slot.release()
            raise
        self._access(environ, 101)
        start, record = self._program_for(environ, endpoint, accepted, unique_id, client, log)
        self.sessions.run(client, endpoint.argv[0], start, slot, record, log,
                          devconsole=accepted.devconsole)
        raise websocket.ConnectionTakenOver()

    def _program_for(self, environ, endpoint, accepted, unique_id, client, log):
        """How to start the session's program endpoint, and how to make its status record.

        What only the start needs (the request's facts, the environment: about
        2 KiB) is not kept once the program runs.
        """
        config = self.config
        remote = environ.get("REMOTE_ADDR", "")
        command = endpoint.argv[0]
        if config.broadcast:
            hub = self.hubs.hub_for(endpoint)
            return (lambda: hub.subscribe(client, unique_id, log),
                    lambda program: status.SharedSessionRecord(unique_id, remote, command,
                                                               time.time(), hub))
        subprotocol = "" if accepted.devconsole else accepted.subprotocol or ""
        request = environment.request_facts(environ, endpoint, config.reverselookup,
                                            unique_id=unique_id, subprotocol=subprotocol)
        env = environment.build(request, config.passenv)
        if log.enabled("debug"):
            for key in sorted(env):
                log.debug("env", f"{key}={env[key]}")
        framer = framing.stdout_framer(config.binary, config.passstderr or accepted.devconsole)
        partial_after = (DEVCONSOLE_PROMPT_AFTER if accepted.devconsole
                         else config.partial_lines / 1000 or None)
        unused_env = [env]
        return (lambda: ProcessEndpoint(endpoint.argv, unused_env.pop(), config.closems,
                                        framer=framer, partial_after=partial_after, log=log),
                lambda program: status.SessionRecord(unique_id, remote, command, program.pid,
                                                     time.time()))

    def start_eager_broadcast(self):
        """--broadcast=eager: the shared process starts now, before any client connects."""
        if self.config.broadcast == "eager":
            self.hubs.hub_for(Endpoint(self.config.command, "/", "")).keep_running()

    def shared_environment(self, endpoint):
        """A --broadcast process's environment: its endpoint's, and no client's.

        SCRIPT_NAME names the endpoint; PATH_INFO, the query, the headers and
        every client or Host fact (REMOTE_*, SERVER_NAME, SERVER_PORT) are
        empty; UNIQUE_ID is the process's own; HTTPS=on with --ssl.
        """
        request = environment.EndpointRequest(
            method="GET", host="", https=self.config.ssl, remote_addr="", remote_port="",
            remote_host="", script_name=endpoint.script_name, path_info="",
            path=endpoint.script_name, query_string="", request_uri=endpoint.script_name,
            unique_id=environment.unique_id(), headers=())
        env = environment.build(request, self.config.passenv)
        env.update(SERVER_NAME="", SERVER_PORT="")
        return env

    def shutdown(self, grace=SHUTDOWN_GRACE):
        """End every session, --broadcast process and CGI script in parallel (1001, the
        stop schedule), kill what is left after `grace` seconds, and end the app's threads."""
        self.closing = True
        told = self._tell_sessions_to_end(frozenset())
        self.hubs.close()  # the shared processes stop in threads of their own
        if self.cgi_scripts is not None:
            self.cgi_scripts.stop_all()  # meanwhile the sessions end in their own threads
        if not (self._wait_for_sessions(told, grace) and self.hubs.wait_stopped(grace)):
            self.kill_all()
            self.sessions.running.wait_empty(0.5)
        self.close()

    def _tell_sessions_to_end(self, told):
        """Shut down every session not told yet; return all the sessions told so far."""
        running = self.sessions.running.snapshot()
        for session in running - told:
            session.shutdown()
        return told | running

    def _wait_for_sessions(self, told, grace):
        """Wait up to `grace` seconds until no fork slot is held; False if some still are.

        A slot is held from the upgrade until the process is reaped, so this also
        waits for an upgrade that passed just before `closing` was set and whose
        session starts only now: it is told to end on the way.
        """
        deadline = time.monotonic() + grace
        while self.forks.in_use:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LATE_SESSION_CHECK)
            told = self._tell_sessions_to_end(told)
        return True

    def kill_all(self):
        """SIGKILL every process group the app started; takes no lock, so a signal handler
        may call it (a second Ctrl-C)."""
        for session in self.sessions.running.snapshot():
            session.program.kill_group()  # a --broadcast subscription: nothing, its hub's below
            session.client.abort()
        self.hubs.kill_all()
        if self.cgi_scripts is not None:
            for process in self.cgi_scripts.running.snapshot():
                process.kill_group()

    def close(self):
        """End the threads this app started (after its sessions have ended), the request
        threads of websocketd-py's server among them."""
        self.watchdog.close()
        self.sessions.close()
        self.threads.close()

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
        return self.log.context(url=auth.logged_url(environ), remote=environ.get("REMOTE_ADDR", ""))


_REASONS = {101: "Switching Protocols"}
