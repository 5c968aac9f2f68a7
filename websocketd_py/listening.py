"""Listening TCP sockets, bound here so that a busy port is one clear line.

Windows gets SO_EXCLUSIVEADDRUSE so a second server on the same port is
refused instead of silently sharing it; elsewhere SO_REUSEADDR lets a
restarted server bind at once. With no address, one dual-stack IPv6 socket
takes IPv4 and IPv6 where the OS has them.
"""

import socket

from .launching import IS_WINDOWS

def listening_socket(host, port):
    """A bound, listening TCP socket; `host` None means every interface, IPv4 and IPv6.

    Windows gets SO_EXCLUSIVEADDRUSE so a second server on the same port is
    refused instead of silently sharing it.
    """
    if host is None:
        if socket.has_dualstack_ipv6():
            return _bind(socket.AF_INET6, ("::", port), dualstack=True)
        host = "0.0.0.0"
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return _bind(family, address, dualstack=False)


def _bind(family, address, dualstack):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if IS_WINDOWS:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock
