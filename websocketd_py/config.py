"""The server's settings: the flag schema, `Config`, and the checks that run before anything starts.

`FLAGS` names every flag with its kind and help; `build_config` makes a
`Config` from flag values (parsed from argv by `cli`, or given as Python
values by `api`); `Config.validate()` then checks it against the machine
(directories exist, COMMAND is on PATH, flags go together), raising
`UsageError` with one line that says what is wrong and what to do, and
builds what the flags describe once: the TLS context and the users.
"""

import dataclasses
import os
import re
from typing import Optional, Tuple

from . import auth, launching, proxy, tls, unixsocket
from .log import LEVELS


#: An HTTP token (RFC 9110 §5.6.2), what a WebSocket subprotocol name must be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class UsageError(Exception):
    """A bad setting: printed as one line, nothing started.

    `exit_status` is websocketd's for the same mistake: 1, or 2 for a command
    line Go's flag package cannot parse (`cli.FlagSyntaxError`), 4 for
    `DevconsoleConflict`. `fatal`, when websocketd also logs the mistake, is
    the text of its FATAL log line.
    """

    exit_status = 1

    def __init__(self, message, fatal=None):
        super().__init__(message)
        self.fatal = fatal


class DevconsoleConflict(UsageError):
    """--devconsole with --staticdir or --cgidir (websocketd's exit status 4)."""

    exit_status = 4


# name: (kind, help). kind is "bool", "int", "str", "list" (repeatable) or "optional"
# (a value only after "=": `--broadcast` alone means "true").
FLAGS = {
    "port": ("int", "HTTP port to listen on (default 80, or 443 with --ssl; 0 = any free port)"),
    "address": ("list", "Interface to bind to, e.g. 127.0.0.1 or [::1] (repeatable; default: all)"),
    "unixsocket": ("str", "Also listen on this Unix socket path"),
    "ssl": ("bool", "Use TLS on the listening sockets (needs --sslcert and --sslkey)"),
    "sslcert": ("str", "Certificate PEM file for --ssl"),
    "sslkey": ("str", "Private key PEM file for --ssl"),
    "sslca": ("str", "Require client certificates signed by this CA (PEM file)"),
    "redirport": ("int", "Also listen on this port and redirect plain HTTP to the --ssl port"),
    "maxforks": ("int", "Most processes running at once; over it upgrades get 429 "
                        "(default 1024; 0 or negative = unlimited)"),
    "maxframesize": ("int", "Largest message accepted from a client, in bytes; larger ones "
                            "close the connection with 1009 (default 1048576; 0 = no limit)"),
    "closems": ("int", "Extra time in ms a process gets to exit after its client left, "
                       "before SIGINT (then SIGTERM, SIGKILL) (default 0)"),
    "pingms": ("int", "Ping clients every N ms; close those that do not answer for 2N ms "
                      "(default 0 = off)"),
    "binary": ("bool", "Binary mode: pass raw bytes both ways instead of lines"),
    "passstderr": ("bool", "Send stderr lines to the client too, every line as JSON "
                           '{"stream":"stdout"|"stderr","data":"..."}'),
    "partial-lines": ("int", "Send the start of a line that has waited MS ms for its newline "
                             "as a message of its own, e.g. a prompt (default 0 = off: one "
                             "message per line)"),
    "passenv": ("str", "Comma-separated environment variables passed to the process "
                       f"(default {','.join(launching.DEFAULT_PASSENV)})"),
    "reverselookup": ("bool", "Look up REMOTE_HOST with reverse DNS"),
    "dir": ("str", "Serve every executable in this directory as an endpoint named by its path"),
    "staticdir": ("str", "Serve static files from this directory over plain HTTP"),
    "cgidir": ("str", "Serve CGI scripts from this directory over plain HTTP"),
    "devconsole": ("bool", "Answer plain HTTP requests to an endpoint with an interactive "
                           "test page (not with --staticdir or --cgidir)"),
    "header": ("list", "Header added to every response, \"Name: value\" (repeatable)"),
    "header-ws": ("list", "Header added to WebSocket upgrade (101) responses only (repeatable)"),
    "header-http": ("list", "Header added to all other HTTP responses (repeatable)"),
    "sameorigin": ("bool", "Refuse (403) upgrades whose Origin is not the requested host"),
    "origin": ("str", "Refuse (403) upgrades unless Origin matches one of "
                      "[scheme://]host[:port],..."),
    "loglevel": ("str", f"Log level: {', '.join(LEVELS)} or none (default access)"),
    "logformat": ("str", "Log line format: websocketd (the default, for log tools) or short "
                         "(time, program, session and message: one short line per event, a "
                         "Python traceback as one line, for a person watching a class)"),
    "subprotocol": ("list", "WebSocket subprotocol the server speaks (repeatable): the first one "
                            "a client asks for that is listed is chosen and passed to the "
                            "process as WEBSOCKET_PROTOCOL"),
    "basic-auth": ("list", "Require HTTP Basic authentication for everything, with this "
                           "user:password or user:sha256:HEX (repeatable)"),
    "basic-auth-file": ("str", "Require HTTP Basic authentication, with the users of this file "
                               "(one user:password or user:sha256:HEX per line)"),
    "status-path": ("str", "Answer GET on this URL path (e.g. /_status) with JSON about the "
                           "running sessions"),
    "compress": ("bool", "Offer permessage-deflate compression to clients that ask for it "
                         "(off by default: it costs CPU and about 40 KiB per connection)"),
    "broadcast": ("optional", "One shared process per endpoint for all its clients: every line "
                              "goes to every client, every message to its stdin; =eager starts "
                              "it with the server instead of at the first client"),
    "broadcast-ids": ("bool", "With --broadcast: each line a client sends reaches the process "
                              "as \"ID line\" (the client's id, as in the log; with --binary "
                              "each binary message gets \"ID \" before it)"),
    "broadcast-backlog": ("int", "With --broadcast: bytes a slow client may fall behind before "
                                 "it is closed with 1008 (default 1048576)"),
    "trusted-proxy": ("str", "Comma-separated addresses or networks (CIDR) of reverse proxies: "
                             "requests from them get REMOTE_ADDR from X-Forwarded-For, HTTPS "
                             "from X-Forwarded-Proto, SERVER_NAME from X-Forwarded-Host"),
    "help": ("bool", "Print this help and exit"),
    "version": ("bool", "Print the version and exit"),
    "license": ("bool", "Print the license and exit"),
}

#: --logformat's values.
LOG_FORMATS = ("websocketd", "short")

#: How Go's flag package spells true and false.
TRUE = {"1", "t", "T", "true", "TRUE", "True"}
FALSE = {"0", "f", "F", "false", "FALSE", "False"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the server needs to know, with websocketd's defaults."""

    command: Tuple[str, ...] = ()          # COMMAND and its argv, untouched; empty with --dir
    addresses: Tuple[str, ...] = ()        # interfaces to bind; empty = all (IPv4 and IPv6)
    port: Optional[int] = None             # None = 80, or 443 with --ssl; 0 = any free port
    unixsocket: Optional[str] = None
    ssl: bool = False
    sslcert: Optional[str] = None
    sslkey: Optional[str] = None
    sslca: Optional[str] = None
    redirport: int = 0
    maxforks: int = 1024                   # 0 or negative = unlimited
    maxframesize: int = 1024 * 1024        # bytes; 0 = no limit
    closems: int = 0
    pingms: int = 0
    binary: bool = False
    passstderr: bool = False
    partial_lines: int = 0                 # --partial-lines: ms a line waits to go out unended
    passenv: Tuple[str, ...] = launching.DEFAULT_PASSENV
    reverselookup: bool = False
    dir: Optional[str] = None
    staticdir: Optional[str] = None
    cgidir: Optional[str] = None
    devconsole: bool = False
    headers: Tuple[Tuple[str, str], ...] = ()       # --header: every response
    headers_ws: Tuple[Tuple[str, str], ...] = ()    # --header-ws: 101 responses only
    headers_http: Tuple[Tuple[str, str], ...] = ()  # --header-http: all other responses
    sameorigin: bool = False
    origins: Tuple[str, ...] = ()
    loglevel: str = "access"
    logformat: str = "websocketd"          # --logformat: "websocketd" or "short"
    explicit: frozenset = frozenset()      # flag names given on the command line
    subprotocols: Tuple[str, ...] = ()     # --subprotocol: what the server speaks, in its order
    basic_auth: Tuple[str, ...] = dataclasses.field(default=(), repr=False)  # user:password
    basic_auth_file: Optional[str] = None
    status_path: Optional[str] = None      # --status-path: the JSON status report's URL path
    trusted_proxies: Tuple[str, ...] = ()  # --trusted-proxy: addresses and networks (see proxy)
    compress: bool = False                 # --compress: permessage-deflate when a client offers it
    broadcast: str = ""                    # --broadcast: "" off, "lazy" or "eager"
    broadcast_ids: bool = False            # --broadcast-ids: prefix client messages with their id
    broadcast_backlog: int = 1024 * 1024   # --broadcast-backlog: bytes before a laggard gets 1008
    # Built once by `validate()` from the flags above:
    tls_context: object = dataclasses.field(default=None, repr=False, compare=False)  # --ssl
    users: object = dataclasses.field(default=None, repr=False, compare=False)  # --basic-auth

    @property
    def listen_port(self):
        if self.port is not None:
            return self.port
        return 443 if self.ssl else 80

    @property
    def scheme(self):
        return "https" if self.ssl else "http"

    @property
    def listens_on_tcp(self):
        """False when --unixsocket is the only listener (no --port or --address given)."""
        return not self.unixsocket or bool({"port", "address"} & self.explicit)

    def validate(self):
        """Raise `UsageError` for the first problem found; return the Config with COMMAND
        resolved and its resources built: the TLS context and the --basic-auth users."""
        if not self.command and not (self.dir or self.staticdir or self.cgidir):
            raise UsageError(
                "no COMMAND given: name the program to run (websocketd-py --port=8080 ./count.sh) "
                "or serve a directory with --dir, --staticdir or --cgidir")
        if self.command and self.dir:
            raise UsageError("give either COMMAND or --dir, not both "
                             f"(COMMAND was {self.command[0]!r})")
        for flag in ("dir", "staticdir", "cgidir"):
            path = getattr(self, flag)
            if path is not None and not os.path.isdir(path):
                raise UsageError(f"--{flag}={path} is not a directory")
        if self.ssl and not (self.sslcert and self.sslkey):
            raise UsageError("--ssl needs both --sslcert=FILE and --sslkey=FILE")
        if (self.sslcert or self.sslkey or self.sslca) and not self.ssl:
            raise UsageError("--sslcert, --sslkey and --sslca only make sense with --ssl")
        self._check_listeners()
        tls_context = None
        if self.ssl:
            try:
                tls_context = tls.server_context(self.sslcert, self.sslkey, self.sslca)
            except tls.TLSFileError as error:
                raise UsageError(str(error)) from None
        if self.devconsole and (self.staticdir or self.cgidir):
            other = "--staticdir" if self.staticdir else "--cgidir"
            raise DevconsoleConflict(
                f"--devconsole cannot be used with {other} "
                "(both want to answer plain HTTP requests)",
                fatal=f"Invalid parameters: --devconsole cannot be used with {other}. Pick one.")
        if self.passstderr and self.binary:
            raise UsageError("--passstderr cannot be used with --binary "
                             "(stderr lines are sent as JSON text messages)")
        users = self._check_subprotocols_auth_status()
        self._check_broadcast()
        try:
            proxy.parse_networks(self.trusted_proxies)
        except ValueError as error:
            raise UsageError(str(error)) from None
        return dataclasses.replace(self, command=self._resolved_command(),
                                   tls_context=tls_context, users=users)

    def _resolved_command(self):
        """COMMAND with its program found (on PATH, or as Windows finds it), and startable
        (a script's #! line names an interpreter that is there)."""
        if not self.command:
            return self.command
        resolved = launching.resolve_command(self.command[0])
        if resolved is None:
            raise UsageError(launching.explain_missing_command(self.command[0]))
        command = (resolved,) + self.command[1:]
        problem = launching.script_problem(resolved)
        if problem is not None:
            raise UsageError(f"COMMAND {self.command[0]} cannot start: {problem[0]}; {problem[1]}")
        try:
            launching.launch_argv(command, launching.current_platform())  # Windows: can it start?
        except launching.LaunchError as error:
            raise UsageError(str(error)) from None
        return command

    def _check_subprotocols_auth_status(self):
        """--subprotocol names, --status-path, the --basic-auth entries and the file's lines;
        the users (`auth.BasicAuth`), or None without --basic-auth."""
        for name in self.subprotocols:
            if not _TOKEN.match(name):
                raise UsageError(f"invalid --subprotocol={name!r}: a subprotocol is a token "
                                 "(letters, digits and !#$%&'*+-.^_`|~, no spaces or commas)")
        if self.status_path is not None and not self.status_path.startswith("/"):
            raise UsageError(f"invalid --status-path={self.status_path!r}: "
                             "a URL path starting with /, e.g. /_status")
        try:
            return auth.from_config(self)
        except auth.CredentialsError as error:
            raise UsageError(str(error)) from None

    def _check_broadcast(self):
        if not self.broadcast:
            for flag in ("broadcast-ids", "broadcast-backlog"):
                if flag in self.explicit:
                    raise UsageError(f"--{flag} only makes sense with --broadcast")
        elif self.broadcast == "eager" and not self.command:
            raise UsageError("--broadcast=eager needs COMMAND: with --dir, each endpoint's "
                             "process starts at its first client (use --broadcast)")

    def _check_listeners(self):
        if self.unixsocket and not unixsocket.SUPPORTED:
            raise UsageError("--unixsocket is not available on this platform")
        if not self.listens_on_tcp and (self.ssl or self.redirport):
            flag = "--ssl" if self.ssl else "--redirport"
            raise UsageError(f"{flag} needs a TCP listener: with --unixsocket, also give "
                             "--port or --address")
        if self.redirport and self.redirport == self.listen_port:
            raise UsageError(f"--redirport={self.redirport} is the port the server itself "
                             "listens on: choose another")


def _header(flag, text):
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c in name for c in " \t\r\n"):
        raise UsageError(f"invalid --{flag}={text!r}: expected \"Name: value\"")
    if "\r" in value or "\n" in value:
        raise UsageError(f"invalid --{flag}={text!r}: a header value cannot hold a line break")
    return (name.strip(), value.strip())


def _address(text):
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise UsageError("--address cannot be empty")
    return text


def _broadcast(value):
    """--broadcast's value: "" (off), "lazy" (at the first client) or "eager" (at startup)."""
    if value in FALSE:
        return ""
    if value in TRUE:
        return "lazy"
    if value == "eager":
        return "eager"
    raise UsageError(f"invalid value {value!r} for -broadcast: use --broadcast, "
                     "--broadcast=eager or --broadcast=false")


def build_config(values, command):
    """A `Config` from parsed flags, with every value checked for range and form."""
    for name in ("port", "redirport"):
        if name in values and not 0 <= values[name] <= 65535:
            raise UsageError(f"invalid -{name}={values[name]}: a port is 0 to 65535")
    for name in ("closems", "pingms", "maxframesize", "broadcast-backlog", "partial-lines"):
        if values.get(name, 0) < 0:
            raise UsageError(f"invalid -{name}={values[name]}: cannot be negative")
    loglevel = values.get("loglevel", "access").lower()
    if loglevel not in LEVELS + ("none",):
        raise UsageError(f"invalid -loglevel={values['loglevel']}: use one of "
                         f"{', '.join(LEVELS)}, none")
    if values.get("logformat", "websocketd") not in LOG_FORMATS:
        raise UsageError(f"invalid -logformat={values['logformat']}: use websocketd or short")
    for name in ("dir", "staticdir", "cgidir", "unixsocket", "sslcert", "sslkey", "sslca"):
        if values.get(name) == "":
            raise UsageError(f"-{name} needs a path")
    simple = {name: values[name] for name in (
        "port", "unixsocket", "ssl", "sslcert", "sslkey", "sslca", "redirport", "maxforks",
        "maxframesize", "closems", "pingms", "binary", "passstderr", "reverselookup", "dir",
        "staticdir", "cgidir", "devconsole", "sameorigin", "compress", "logformat")
        if name in values}
    if "passenv" in values:
        simple["passenv"] = tuple(v.strip() for v in values["passenv"].split(",") if v.strip())
    if "origin" in values:
        simple["origins"] = tuple(o.strip() for o in values["origin"].split(",") if o.strip())
    if "trusted-proxy" in values:
        simple["trusted_proxies"] = tuple(
            a.strip() for a in values["trusted-proxy"].split(",") if a.strip())
    return Config(
        command=tuple(command),
        addresses=tuple(_address(a) for a in values.get("address", [])),
        headers=tuple(_header("header", h) for h in values.get("header", [])),
        headers_ws=tuple(_header("header-ws", h) for h in values.get("header-ws", [])),
        headers_http=tuple(_header("header-http", h) for h in values.get("header-http", [])),
        loglevel=loglevel,
        explicit=frozenset(values),
        subprotocols=tuple(values.get("subprotocol", ())),
        basic_auth=tuple(values.get("basic-auth", ())),
        basic_auth_file=values.get("basic-auth-file"),
        status_path=values.get("status-path"),
        broadcast=_broadcast(values.get("broadcast", "false")),
        broadcast_ids=values.get("broadcast-ids", False),
        broadcast_backlog=values.get("broadcast-backlog", Config.broadcast_backlog),
        partial_lines=values.get("partial-lines", 0),
        **simple,
    )
