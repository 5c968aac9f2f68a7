"""--cgidir: CGI/1.1 scripts over plain HTTP (RFC 3875), one process per request.

The URL path picks the script as for --dir (`endpoints.script_in`: the
same walk and confinement); the rest of the path is PATH_INFO. The script runs
in its own directory with the environment of `environment.build` made CGI/1.1
(method, body length and type, SCRIPT_FILENAME), its stdin fed from the
request body as it arrives and closed at the body's end, its stderr logged
line by line (ERROR, category `stderr`).

Its stdout: header lines up to a blank line, then the body, streamed as it
comes. `Status:` sets the status; without it `Location:` means 302, and
otherwise `Content-Type:` is required (as in Go's net/http/cgi, which
websocketd uses). A script that cannot start, ends before a complete header
block (e.g. exits non-zero before any output) or writes malformed headers gets
a 500 and an ERROR line. The --maxforks slot is held until the process is
reaped; a client that goes away ends the process on the stop schedule.
"""

import os
import re
import socket
import threading

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

from . import auth, environment, proctree
from .decoding import request_target
from .endpoints import script_in
from .launching import client_reason
from .process import ProcessEndpoint
from .refused import Refused
from .registry import Running

READ_BYTES = 65536
#: The script's header block may not be longer than this.
MAX_HEADER_BYTES = 65536
#: After the script ended, how long the body feeder may take to notice before it is cut off.
FEEDER_GRACE = 0.1
#: After the script ended, how long stray grandchildren may keep its stderr open.
STDERR_GRACE = 0.5

_END_OF_HEAD = re.compile(rb"(?:^|\n)\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"([2-5]\d\d)(?:[ \t]+(.*))?\Z")
#: Hop-by-hop headers belong to the server's connection, never to a script (PEP 3333).
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"))
#: Request headers that CGI passes as CONTENT_LENGTH and CONTENT_TYPE, not as HTTP_*.
_BODY_HEADERS = ("content-length", "content-type")


class ScriptError(Exception):
    """The script's output is not a CGI response: the client gets 500, the log this text."""


class CgiScripts:
    """The scripts of one --cgidir; `run` answers one request with one of them."""

    def __init__(self, root, config, log, stderr_followers):
        self.root = root
        self.config = config
        self.log = log
        self.stderr = stderr_followers   # the app's `stderr.StderrFollowers`
        self.running = Running()  # the processes of the requests in progress

    def script_for(self, environ):
        """The `endpoints.Endpoint` of the script this path names; None if none, Refused if
        forbidden."""
        return script_in(self.root, request_target(environ).raw_path)

    def run(self, environ, start_response, script, forks):
        """The WSGI response of `script`; it holds one of `forks` (`app.ForkSlots`) until reaped."""
        body_length = request_body_length(environ)
        log = self.log.context(url=auth.logged_url(environ), remote=environ.get("REMOTE_ADDR", ""),
                               cgiscript=script.argv[0])
        slot = forks.try_acquire()
        if slot is None:
            log.error("cgi", "--maxforks processes are running already: CGI script not run")
            raise Refused(429, "Too Many Requests: --maxforks processes are running already; "
                               "try again later")
        env = self.cgi_environment(environ, script, body_length)
        try:
            process = ProcessEndpoint(script.argv, env, self.config.closems,
                                      cwd=os.path.dirname(script.argv[0]), log=log)
        except (OSError, ValueError) as error:
            slot.release()
            log.error("cgi", f"cannot start {script.argv[0]}: {error}")
            raise Refused(500, f"Internal Server Error: the CGI script could not be started: "
                               f"{client_reason(error)}")
        log = log.with_fields(pid=process.pid)
        log.access("http", "CGI")
        self.running.add(process)
        run = _Run(process, slot, log, environ.get("werkzeug.socket"), self.running)
        try:
            run.start(self.stderr, environ["wsgi.input"], body_length)
        except RuntimeError as error:  # no thread could start: out of threads or memory
            log.error("cgi", f"cannot run the CGI script: {error}")
            run.finish()
            raise Refused(500, "Internal Server Error: the CGI script could not be run")
        return run.response(environ, start_response)

    def stop_all(self):
        """At server shutdown: stop every running script on the schedule, in parallel, and wait."""
        stoppers = [_start(process.terminate, "cgi-stop") for process in self.running.snapshot()]
        for stopper in stoppers:
            stopper.join()

    def cgi_environment(self, environ, script, body_length):
        """The CGI/1.1 environment: websocketd's (section 4 of the spec) plus the request body's."""
        headers = environ.get("websocketd_py.headers", ())
        request = environment.request_facts(
            environ, script, self.config.reverselookup,
            headers=[(n, v) for n, v in headers if n.lower() not in _BODY_HEADERS])
        env = environment.build(request, self.config.passenv)
        env.update(SERVER_PROTOCOL=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                   CONTENT_LENGTH=str(body_length) if body_length else "",
                   CONTENT_TYPE=environ.get("CONTENT_TYPE", "").replace("\0", ""),
                   SCRIPT_FILENAME=script.argv[0])
        if script.path_info:
            env["PATH_TRANSLATED"] = os.path.join(os.path.realpath(self.root),
                                                  script.path_info.lstrip("/"))
        else:
            del env["PATH_TRANSLATED"]  # RFC 3875 §4.1.6: no PATH_INFO, no PATH_TRANSLATED
        return env


def request_body_length(environ):
    """Bytes of request body for the script: a number, or None for a chunked body (read to its end).

    Refused (400) when the framing is ambiguous, the stuff of request smuggling:
    Content-Length headers that disagree or are not a number, Content-Length
    together with Transfer-Encoding, or a transfer coding other than chunked.
    """
    headers = environ.get("websocketd_py.headers", ())
    lengths = {value.strip() for name, value in headers if name.lower() == "content-length"}
    codings = [value.strip().lower() for name, value in headers
               if name.lower() == "transfer-encoding"]
    if codings:
        if lengths or codings != ["chunked"]:
            raise Refused(400, "Bad Request: Transfer-Encoding must be chunked alone, "
                               "without Content-Length")
        return None
    if len(lengths) > 1:
        raise Refused(400, "Bad Request: conflicting Content-Length headers")
    length = lengths.pop() if lengths else "0"
    if not (length.isascii() and length.isdigit()):
        raise Refused(400, "Bad Request: Content-Length is not a number")
    return int(length)


def parse_head(block):
    """(status, headers) for start_response from the script's header lines; else ScriptError."""
    status, headers = None, []
    for raw in block.split(b"\n") if block else ():
        line = raw.decode("latin-1")
        line = line[:-1] if line.endswith("\r") else line
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.match(name) or _CONTROL.search(value):
            raise ScriptError(f"malformed header line from the script: {line!r}")
        if name.lower() == "status":
            match = _STATUS.match(value)
            if match is None:
                raise ScriptError(f"malformed Status header from the script: {value!r}")
            code = int(match.group(1))
            status = f"{code} {match.group(2) or HTTP_STATUS_CODES.get(code, 'Unknown')}"
        elif name.lower() not in _HOP_BY_HOP:
            headers.append((name, value))
    names = {name.lower() for name, _ in headers}
    if status is None:
        if "location" in names:
            status = "302 Found"
        elif "content-type" in names:
            status = "200 OK"
        else:
            raise ScriptError("the script's headers have no Content-Type (nor Status or Location)")
    length = next((value for name, value in headers if name.lower() == "content-length"), None)
    if length is not None and not (length.isascii() and length.isdigit()):
        raise ScriptError(f"malformed Content-Length from the script: {length!r}")
    return status, headers


class _Run:
    """One script run: feeds it the body, logs its stderr, turns its stdout into the response."""

    def __init__(self, process, slot, log, sock, running):
        self.process = process
        self.slot = slot
        self.running = running
        self.log = log
        self.sock = sock                  # the client's socket, watched for a hang-up
        self.stderr = None                # its `stderr.StderrFollowers` follower
        self.feeder = None

    def start(self, stderr_followers, stream, length):
        """Follow stderr, reap at exit, feed the request body: the threads (RuntimeError if
        one cannot start; `finish()` then undoes the rest)."""
        self.stderr = stderr_followers.follow(self.process.stderr_fd, self.log)
        _start(self.process.popen.wait, "cgi-wait")
        self._feed_body(stream, length)

    def _feed_body(self, stream, length):
        """Copy the request body to stdin in a thread, then close stdin (EOF for the script)."""
        if length == 0:
            self.process.close_stdin()
        else:
            self.feeder = _start(self._feed, "cgi-body", stream, length)

    def _feed(self, stream, remaining):
        read = getattr(stream, "read1", stream.read)  # what has arrived, not a full buffer
        try:
            while remaining is None or remaining > 0:
                chunk = read(READ_BYTES if remaining is None else min(READ_BYTES, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                if not self.process.write_stdin(chunk, _wait_writable):
                    break
        except (OSError, ValueError):
            pass  # the client left, timed out, or sent bad chunks: the script sees EOF
        finally:
            self.process.close_stdin()

    def response(self, environ, start_response):
        """The response body (a generator): headers first, then stdout as it comes."""
        try:
            try:
                status, headers, body = self._read_head()
            except ScriptError as error:
                self.log.error("cgi", str(error))
                yield from Response("Internal Server Error: the CGI script failed\n", 500,
                                    mimetype="text/plain")(environ, start_response)
                return
            start_response(status, headers)
            limit = next((int(v) for n, v in headers if n.lower() == "content-length"), None)
            if environ["REQUEST_METHOD"] == "HEAD" or status[:3] in ("204", "304"):
                limit = 0
            yield from self._body(body, limit)
            exit_status = self.process.terminate()
            if exit_status != 0:
                self.log.error("cgi", f"the script ended with {proctree.describe_exit(exit_status)}")
        finally:
            self.finish()

    def _read_head(self):
        """(status, headers, first body bytes) from stdout; ScriptError if it is no CGI response."""
        data = b""
        while True:
            chunk = self._read()
            if not chunk:
                break
            start = max(0, len(data) - 2)  # a blank line may begin in the previous piece
            data += chunk
            match = _END_OF_HEAD.search(data, start)
            if match:
                status, headers = parse_head(data[:match.start()])
                return status, headers, data[match.end():]
            if len(data) > MAX_HEADER_BYTES:
                raise ScriptError(f"the script's headers are longer than {MAX_HEADER_BYTES} bytes")
        if data:
            raise ScriptError("the script's output ended inside its headers")
        exit_status = self.process.terminate()
        if exit_status != 0:
            raise ScriptError(f"the script ended with {proctree.describe_exit(exit_status)} "
                              "before any output")
        raise ScriptError("the script wrote nothing (no CGI headers)")

    def _body(self, chunk, limit):
        """stdout from `chunk` to its end; what lies past `limit` (None: no limit) is not sent."""
        while True:
            if limit is not None:
                chunk = chunk[:limit]
                limit -= len(chunk)
            yield chunk  # b"" too: the headers go out at once
            chunk = self._read()
            if not chunk:
                return

    def _read(self):
        """The next piece of stdout, b"" at its end; ConnectionError when the client has left."""
        fd = self.process.stdout_fd
        watch = self.sock is not None and proctree.CAN_WATCH_HANGUP
        if watch and _client_left_first(fd, self.sock):
            self.log.info("cgi", "the client went away: stopping the script")
            raise ConnectionAbortedError("client went away")
        try:
            return os.read(fd, READ_BYTES)
        except OSError:
            return b""

    def finish(self):
        """Stop and reap the script, let the threads end, give the slot back."""
        self.process.terminate()
        if self.feeder is not None:
            self.feeder.join(FEEDER_GRACE)
            if self.feeder.is_alive():  # waiting for body bytes the script will never read
                try:  # the plain socket's shutdown: an SSLSocket's would drop TLS for the rest
                    socket.socket.shutdown(self.sock, socket.SHUT_RD)
                except OSError:
                    pass
                self.feeder.join()
        if self.stderr is None or self.stderr.wait(STDERR_GRACE) or self.stderr.abandon():
            self.process.close_pipes()  # else a thread still reads stderr: close stdout alone
        else:
            self.process.popen.stdout.close()
        self.slot.release()
        self.running.remove(self.process)


def _start(target, name, *args):
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _wait_writable(fd):
    """Block until the script takes more of its stdin (or is gone, which the next write shows)."""
    return proctree.wait_pipe(fd, writable=True)


def _client_left_first(fd, sock):
    """Block until stdout has data (False) or the client's connection was reset (True).

    A FIN is not leaving: a client may half-close after its request and still
    read the response (websocketd answers it). A client that closed for good
    is noticed at the first write that fails."""
    return not proctree.wait_pipe(fd, writable=False, sock=sock, fin_is_leaving=False)
