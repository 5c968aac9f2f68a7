"""--trusted-proxy: the client's address, scheme and host as a reverse proxy forwards them.

Behind nginx every connection comes from nginx, so without this REMOTE_ADDR
is nginx's address. For a request whose peer (REMOTE_ADDR) is a listed
proxy, werkzeug's ProxyFix takes REMOTE_ADDR from the last X-Forwarded-For
entry (the one that proxy added: whatever the client sent stands before it),
the scheme from X-Forwarded-Proto (`https` gives HTTPS=on), and the host and
port from X-Forwarded-Host and X-Forwarded-Port (SERVER_NAME, SERVER_PORT,
and what --sameorigin compares). REMOTE_PORT becomes empty: the client's
port is not forwarded, and the proxy's own would mislead. From any other
peer the headers change nothing, so a client that connects directly cannot
choose its REMOTE_ADDR. The program still sees them as HTTP_X_FORWARDED_*.
"""

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix


def parse_networks(entries):
    """--trusted-proxy entries (`127.0.0.1`, `10.0.0.0/8`, `::1`, `[::1]`) as networks.

    A network with host bits set (`10.0.0.1/8`) is refused rather than
    widened: it is more likely a typo than a wish to trust the whole network.
    """
    networks = []
    for entry in entries:
        text = entry.strip()
        if text.startswith("["):
            text = text[1:].replace("]", "", 1)
        try:
            networks.append(ipaddress.ip_network(text))
        except ValueError as error:
            raise ValueError(f"invalid --trusted-proxy entry {entry!r}: {error} (give IP "
                             "addresses or networks, e.g. 127.0.0.1,10.0.0.0/8,::1)") from None
    return tuple(networks)


def is_trusted(address, networks):
    """True when the peer `address` is in one of `networks`.

    An IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`: it is
    matched as a.b.c.d. A Unix socket peer (`unix:`) is never trusted.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class TrustedProxies:
    """WSGI middleware: ProxyFix for requests from a --trusted-proxy, nothing for the others.

    A forwarded address that is not an IP address is ignored (the peer's stays,
    and the log says so once per request): it would reach REMOTE_ADDR and the
    log as it is.
    """

    def __init__(self, app, entries, log):
        self.app = app
        self.networks = parse_networks(entries)
        self.log = log
        self.forwarded = ProxyFix(self._checked, x_for=1, x_proto=1, x_host=1, x_port=1)

    def __call__(self, environ, start_response):
        if not is_trusted(environ.get("REMOTE_ADDR", ""), self.networks):
            return self.app(environ, start_response)
        if environ.get("HTTP_X_FORWARDED_FOR"):
            environ["REMOTE_PORT"] = ""
        return self.forwarded(environ, start_response)

    def _checked(self, environ, start_response):
        """Behind ProxyFix: put the peer's address back if the forwarded one is no address."""
        try:
            ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            peer = environ["werkzeug.proxy_fix.orig"]["REMOTE_ADDR"]
            self.log.write("error", "http", "X-Forwarded-For is not an IP address: ignored",
                           (("remote", peer), ("forwarded", environ.get("REMOTE_ADDR", ""))))
            environ["REMOTE_ADDR"] = peer
        return self.app(environ, start_response)
