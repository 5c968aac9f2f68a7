"""The server's settings (`Config`) and the checks that run before anything starts.

`cli` turns argv into a `Config`; `Config.validate()` then checks it against
the machine (directories exist, COMMAND is on PATH, flags go together) and
raises `UsageError` with one line that says what is wrong and what to do.
"""

import dataclasses
import os
import re
from typing import Optional, Tuple

from . import auth, launching, proxy, tls, unixsocket


#: An HTTP token (RFC 9110 §5.6.2), what a WebSocket subprotocol name must be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2, nothing started."""


#: Flags that parse but whose feature this release does not have yet.
NOT_SUPPORTED_YET = ()


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
        for name in NOT_SUPPORTED_YET:
            if name in self.explicit:
                raise UsageError(f"--{name} is not supported yet in this version of websocketd-py")
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
            raise UsageError("--devconsole cannot be used with --staticdir or --cgidir "
                             "(both want to answer plain HTTP requests)")
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
        """COMMAND with its program found (on PATH, or as Windows finds it), and startable."""
        if not self.command:
            return self.command
        resolved = launching.resolve_command(self.command[0])
        if resolved is None:
            raise UsageError(launching.explain_missing_command(self.command[0]))
        command = (resolved,) + self.command[1:]
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
