"""The WebSocket handshake as a pure function: the request and the settings in, a decision out.

`accept(environ, config)` returns an `Accepted` upgrade (the chosen
subprotocol, the compression agreement and the exact 101 response bytes) or
raises `Refused` with the status and one line saying why, in the order a
client is told: origin not allowed (403), then what RFC 6455 §4.2.1 does not
allow (400). It reads only the request and the settings: no socket, no
process, so every rule here is tested without a server.
"""

import base64
import binascii
import dataclasses
import hashlib
from typing import Optional
from urllib.parse import urlsplit

from . import compression, environment
from .refused import Refused

#: The dev console page's subprotocol (accepted only with --devconsole): every text message
#: is a JSON object, {"stream": "stdout" | "stderr" | "prompt", "data": ...} or
#: {"event": "exit" | "hint", "data": ...}; with --binary, stdout stays binary messages.
DEVCONSOLE = "websocketd-py.devconsole"
#: What the server answers the page instead with --broadcast: a shared process's plain
#: messages, the same as every other client's.
DEVCONSOLE_PLAIN = "websocketd-py.devconsole.plain"

#: RFC 6455 §1.3: appended to the client's key before hashing it for Sec-WebSocket-Accept.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclasses.dataclass(frozen=True)
class Accepted:
    """An upgrade to answer with 101."""

    subprotocol: Optional[str]                       # the one chosen, None if none
    compression: Optional[compression.Agreement]     # permessage-deflate, if agreed
    response: bytes                                  # the whole 101 response
    devconsole: bool = False                         # the dev console page, with its events


def is_upgrade(environ):
    """A GET asking for `Upgrade: websocket` with `upgrade` among its Connection tokens."""
    connection = environ.get("HTTP_CONNECTION", "").lower()
    return (environ.get("HTTP_UPGRADE", "").lower() == "websocket"
            and "upgrade" in (token.strip() for token in connection.split(",")))


def accept(environ, config):
    """The `Accepted` upgrade for this request under `config`; `Refused` if it may not be."""
    host = environ.get("HTTP_HOST", "")
    https = environ.get("wsgi.url_scheme") == "https"
    if not origin_allowed(environ.get("HTTP_ORIGIN"), host, https, config.origins,
                          config.sameorigin):
        raise Refused(403, "Forbidden: origin not allowed")
    _check_form(environ)
    offered = [name.strip() for name in environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")]
    devconsole = False
    if config.devconsole and DEVCONSOLE in offered:
        subprotocol = DEVCONSOLE_PLAIN if config.broadcast else DEVCONSOLE
        devconsole = not config.broadcast
    else:
        subprotocol = next((name for name in offered if name in config.subprotocols), None)
    agreement = config.compress and compression.negotiate(
        environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")) or None
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", accept_token(environ["HTTP_SEC_WEBSOCKET_KEY"].strip()))]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    headers += config.headers + config.headers_ws
    if agreement is not None:
        headers.append(("Sec-WebSocket-Extensions", agreement.response))
    lines = ["HTTP/1.1 101 Switching Protocols"] + [f"{name}: {value}" for name, value in headers]
    return Accepted(subprotocol, agreement, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"),
                    devconsole)


def accept_token(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode("latin-1") + _ACCEPT_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def _check_form(environ):
    """Refuse (400) what RFC 6455 §4.2.1 does not allow."""
    if environ["REQUEST_METHOD"] != "GET":
        raise Refused(400, "Bad Request: a WebSocket upgrade must be a GET")
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        raise Refused(400, "Bad Request: a WebSocket upgrade needs HTTP/1.1")
    if "HTTP_HOST" not in environ:
        raise Refused(400, "Bad Request: missing Host header (HTTP/1.1 requires one)")
    if not environment.valid_host_header(environ["HTTP_HOST"]):
        raise Refused(400, "Bad Request: malformed Host header (host[:port] only)")
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


def origin_allowed(origin, host, https, allowed, same_origin):
    """SPEC §5: --origin entries and --sameorigin against the Origin header."""
    if not allowed and not same_origin:
        return True
    if not origin or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:  # `http://[x`, `http://h:99999`: no origin anyone could allow
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
