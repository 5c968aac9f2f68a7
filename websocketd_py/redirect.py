"""--redirport: a listener whose every answer is a 301 to the same URL on the main port.

With --ssl the target is `https://HOST:PORT/path?query` (`:443` left out), so
users who type `http://host:80/` land on the TLS server. Unlike websocketd,
the path and query are kept, and a Host header without a port, with an IPv6
address or with garbage does not crash the redirect; HOST is the Host header's
name, or the address the client connected to when there is no usable one.
"""

import ipaddress
import re

from werkzeug.wrappers import Response

from .decoding import ascii_only, request_target

_HOST_NAME = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d*)?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class RedirectApp:
    """The WSGI app of a --redirport listener: 301 to `scheme://HOST:port` + the same target."""

    def __init__(self, scheme, port):
        self.scheme = scheme
        self.port = port

    def __call__(self, environ, start_response):
        local_address = environ["werkzeug.socket"].getsockname()[0]
        target = location(self.scheme, self.port, environ.get("HTTP_HOST"), local_address,
                          request_target(environ).uri)
        response = Response(f"Moved Permanently: {target}\n", "301 Moved Permanently",
                            mimetype="text/plain", headers=[("Location", target)])
        return response(environ, start_response)


def location(scheme, port, host_header, local_address, target):
    """The redirect URL for a request with this Host header and (origin-form) request target."""
    host = _host_from_header(host_header) or _host_from_address(local_address)
    netloc = host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{ascii_only(target)}"


def _host_from_header(host_header):
    match = _HOST_NAME.match((host_header or "").strip())
    return match.group(1) if match else None


def _host_from_address(address):
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "localhost"
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return f"[{ip}]" if ip.version == 6 else str(ip)

