"""Listening sockets: TCP ones bound here, and the accept loop's pause when out of files.

TCP sockets are bound here so that a busy port is one clear line. Windows
gets SO_EXCLUSIVEADDRUSE so a second server on the same port is refused
instead of silently sharing it; elsewhere SO_REUSEADDR lets a restarted
server bind at once. With no address, one dual-stack IPv6 socket takes IPv4
and IPv6 where the OS has them.
"""

import errno
import socket
import threading
import time

from .launching import IS_WINDOWS

#: accept() errors that mean no file descriptor is left (the process's limit, the system's).
OUT_OF_FILES = {errno.EMFILE: "the open-file limit of the process (ulimit -n) is reached",
                errno.ENFILE: "the open-file limit of the system is reached"}
#: The accept loop's first pause after such an error, and its longest (Go's net/http server's).
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 1.0
#: Seconds between two log lines about running out of files, however often it happens.
REPORT_INTERVAL = 60.0

def os_wording(error):
    """An OSError's reason as Go words it: the OS's text, lowercase first (`address already
    in use`)."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


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


class AcceptPause:
    """The accept loop's rest after accept() failed because no file descriptor is left.

    The connection stays in the listen queue, so the listening socket stays
    readable and the loop would call accept() again at once, spinning a CPU
    while nothing can be accepted. As Go's net/http server does, the loop
    sleeps instead: 5 ms after the first failure, doubling up to 1 s, back to
    none after an accept succeeds. Connections already accepted are served
    meanwhile. One ERROR line says so, at most one a minute however often it
    happens (near the limit, accepts succeed and fail by turns as connections
    close). `stop()` ends a pause at once.
    """

    def __init__(self, log, clock=time.monotonic):
        self._log = log
        self._clock = clock
        self.pause = 0.0           # seconds of the latest pause; 0 after a success
        self._reported_at = None   # when the last ERROR line was written
        self._stopping = threading.Event()

    def after_failure(self, error):
        """Sleep if `error` (from accept) means no file descriptor is left."""
        if error.errno not in OUT_OF_FILES:
            return
        if self.pause == 0.0:
            self._report(error)
        self.pause = min(LONGEST_PAUSE, self.pause * 2) or FIRST_PAUSE
        self._stopping.wait(self.pause)

    def after_success(self):
        """A connection was accepted: no more pauses."""
        self.pause = 0.0

    def stop(self):
        self._stopping.set()

    def _report(self, error):
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < REPORT_INTERVAL:
            return
        self._reported_at = now
        self._log.write("error", "server",
                        f"cannot accept new connections: {OUT_OF_FILES[error.errno]}; "
                        f"retrying with pauses of up to {LONGEST_PAUSE:g} s, serving the "
                        "connections already open")
