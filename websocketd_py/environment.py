"""The CGI-style environment a process sees, built from its request.

Only the --passenv variables of the server's own environment pass through
(by default PATH, the library path and the locale variables), plus two
defaults a passed value overrides: PYTHONUNBUFFERED=1, and LC_CTYPE=C.UTF-8
where no locale variable passes (`utf8_locale`). Everything else comes from
the request, under names a client cannot choose: every header becomes
`HTTP_<NAME>`, and a header whose name could collide with another (`X_Foo`
vs `X-Foo`) or carries the httpoxy hole (`Proxy`) is dropped, so no client
can set PATH, LD_PRELOAD or HTTP_PROXY.
"""

import dataclasses
import functools
import itertools
import os
import re
import socket
import threading
import time
from typing import Tuple

from . import WEBSOCKETD_COMPAT_VERSION, __version__, launching
from .decoding import as_sent, request_target

SERVER_SOFTWARE = f"websocketd/{WEBSOCKETD_COMPAT_VERSION} (websocketd-py/{__version__})"
GATEWAY_INTERFACE = "CGI/1.1"  # RFC 3875; websocketd 0.4.1 said websocketd-CGI/0.1

_TOKEN = re.compile(r"[A-Za-z0-9-]+\Z")        # header names we map (no "_")
_CONTROL = str.maketrans({c: " " for c in [*range(0x09), *range(0x0A, 0x20), 0x7F]})
_unique_counter = itertools.count(1)

#: Set for every process unless --passenv passes the server's own value: stdout is a pipe,
#: and Python would hold what the program prints until 8 KiB pile up or it exits.
UNBUFFERED_OUTPUT = {"PYTHONUNBUFFERED": "1"}

#: The variables that set a program's character encoding; without any, C programs, bash
#: and grep see bytes, not characters (`${#word}` of "élève" would be 7, not 5).
LOCALE_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE")
#: Where the C.UTF-8 locale is installed, if it is (glibc's and the BSDs' places).
_UTF8_LOCALE_PLACES = ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8",
                       "/usr/share/locale/C.UTF-8")

#: Seconds --reverselookup waits for reverse DNS before REMOTE_HOST falls back to the address.
REVERSE_LOOKUP_TIMEOUT = 1.5


@dataclasses.dataclass(frozen=True)
class EndpointRequest:
    """The request facts a process environment is built from (see `build`)."""

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


def request_facts(environ, endpoint, reverse_lookup, headers=None, **more):
    """The `EndpointRequest` of a WSGI request to `endpoint`, its request target decoded once
    (`decoding`); `headers` replaces the request's (name, value) pairs, `more` other facts."""
    target = request_target(environ)
    remote_addr = environ.get("REMOTE_ADDR", "")
    if headers is None:
        headers = environ.get("websocketd_py.headers", ())
    facts = dict(
        method=environ["REQUEST_METHOD"], host=environ.get("HTTP_HOST", ""),
        https=environ.get("wsgi.url_scheme") == "https", remote_addr=remote_addr,
        remote_port=environ.get("REMOTE_PORT", 0),
        remote_host=remote_host(remote_addr, reverse_lookup),
        script_name=endpoint.script_name, path_info=endpoint.path_info, path=target.path,
        query_string=target.query, request_uri=target.uri,
        headers=tuple(headers), remote_user=environ.get("REMOTE_USER", ""),
        auth_type=environ.get("AUTH_TYPE", ""))
    facts.update(more)
    if "unique_id" not in facts:  # a session brings the id it logs with; a CGI request does not
        facts["unique_id"] = unique_id()
    return EndpointRequest(**facts)


def unique_id():
    """An id unique per connection (also the `id` in the log): time plus a counter."""
    return f"{time.time_ns() // 1000}{next(_unique_counter):04d}"


#: RFC 3986's `host [ ":" port ]`: a bracketed IP literal, or a reg-name (an IPv4 address
#: is one), which is what Go's net/http, and so websocketd, accepts in a Host header.
_HOST_HEADER = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]+\]|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
                          r"(?::[0-9]*)?\Z")


def valid_host_header(value):
    """Whether a Host header value (blanks around it allowed) is `host[:port]`."""
    return bool(_HOST_HEADER.match(value.strip(" \t")))


def split_host(host_header, https):
    """SERVER_NAME and SERVER_PORT from a Host header (`h`, `h:p`, `[v6]`, `[v6]:p`)."""
    default_port = "443" if https else "80"
    host = (host_header or "").strip().rpartition("@")[2]  # absolute-form `user:pw@host`
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    if not (port.isascii() and port.isdigit()):
        port = default_port
    return name, port


def remote_host(address, reverse_lookup):
    """REMOTE_HOST: the client's address, or with --reverselookup the name reverse DNS gives.

    The lookup runs in a thread of its own and is given up after
    REVERSE_LOOKUP_TIMEOUT, so a slow DNS server delays only this connection,
    by at most that; no lock is held while waiting.
    """
    if not reverse_lookup:
        return address
    found = []
    lookup = threading.Thread(target=_reverse_dns, args=(address, found), daemon=True,
                              name="reverse-lookup")
    lookup.start()
    lookup.join(REVERSE_LOOKUP_TIMEOUT)
    return found[0] if found else address


def _reverse_dns(address, found):
    """getnameinfo, not gethostbyaddr: where the C library has no gethostbyaddr_r (macOS,
    Windows) CPython runs gethostbyaddr under one global lock, so lookups would queue."""
    try:
        found.append(socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0])
    except (OSError, UnicodeError):
        pass  # no name, not an IP address (a Unix socket client), or DNS failed


def header_variables(headers):
    """`HTTP_*` variables from (name, value) pairs as received, repeated names joined with ", "."""
    variables = {}
    for name, value in headers:
        if not _TOKEN.match(name) or name.lower() == "proxy":
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        value = as_sent(value).translate(_CONTROL)
        variables[key] = f"{variables[key]}, {value}" if key in variables else value
    return variables


def passed_through(names, source=None):
    """The --passenv variables of the server's own environment, empty ones left out."""
    source = os.environ if source is None else source
    return {name: source[name] for name in names if source.get(name)}


@functools.lru_cache(maxsize=None)
def utf8_locale():
    """{"LC_CTYPE": "C.UTF-8"} where that locale is installed, else {} (Windows: always)."""
    if launching.IS_WINDOWS or not any(map(os.path.isdir, _UTF8_LOCALE_PLACES)):
        return {}
    return {"LC_CTYPE": "C.UTF-8"}


def build(request, passenv, source=None):
    """The whole environment of a process for one `EndpointRequest`.

    A program whose --passenv variables set no locale gets `utf8_locale()`.
    """
    server_name, server_port = split_host(request.host, request.https)
    env = {**UNBUFFERED_OUTPUT, **launching.CHILD_ENVIRONMENT, **passed_through(passenv, source)}
    if not any(name in env for name in LOCALE_VARIABLES):
        env.update(utf8_locale())
    env.update({
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "GATEWAY_INTERFACE": GATEWAY_INTERFACE,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": request.method,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "REMOTE_ADDR": request.remote_addr,
        "REMOTE_PORT": str(request.remote_port),
        "REMOTE_HOST": request.remote_host,
        "SCRIPT_NAME": request.script_name,
        "PATH_INFO": request.path_info,
        "PATH_TRANSLATED": request.path,
        "QUERY_STRING": request.query_string,
        "REQUEST_URI": request.request_uri,
        "UNIQUE_ID": request.unique_id,
        "AUTH_TYPE": request.auth_type,
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "",
        "REMOTE_IDENT": "",
        "REMOTE_USER": request.remote_user,
    })
    if request.https:
        env["HTTPS"] = "on"
    if request.subprotocol:
        env["WEBSOCKET_PROTOCOL"] = request.subprotocol
    env.update(header_variables(request.headers))
    return {key: value.replace("\0", "") for key, value in env.items()}
