"""--unixsocket: claim the path, listen there, and remove the socket file at the end.

A socket file left by a server that died (nobody accepts on it) is replaced;
one another server still listens on, or a path that is not a socket at all,
is refused, so a second websocketd-py never steals a running one's socket.
"""

import os
import socket
import stat

from .listening import os_wording

#: Unix sockets exist on this platform (not on Windows builds of Python).
SUPPORTED = hasattr(socket, "AF_UNIX")
#: Seconds to wait when checking whether a server listens on an existing socket file.
PROBE_TIMEOUT = 1.0


class UnixSocketError(Exception):
    """The path cannot be listened on: one line for the user, and `reason`, the same in
    websocketd's words (for its `Can't start server: ...` log line)."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def listening_socket(path):
    """A listening Unix socket at `path`, and the inode of its file (see `remove`)."""
    _claim(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(socket.SOMAXCONN)
        return sock, os.stat(path).st_ino
    except OSError as error:
        sock.close()
        raise UnixSocketError(f"cannot listen on unix socket {path}: "
                              f"{error.strerror or error}",
                              f"listen unix {path}: bind: {os_wording(error)}") from None


def remove(path, inode):
    """Remove the socket file at shutdown, unless another server has replaced it since."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _claim(path):
    """Make `path` free to bind: nothing there, or a stale socket file (removed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UnixSocketError(f"--unixsocket={path} exists and is not a socket: "
                              "remove it or choose another path",
                              f"listen unix {path}: bind: address already in use")
    if _someone_listens(path):
        in_use = f"socket {path} is already in use by a running server"
        raise UnixSocketError(f"{in_use}: stop it or choose another --unixsocket", in_use)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _someone_listens(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except socket.timeout:
        return True  # its backlog is full: very much alive
    except OSError as error:
        raise UnixSocketError(f"cannot check whether a server listens on unix socket {path}: "
                              f"{error.strerror or error}",
                              f"dial unix {path}: connect: {os_wording(error)}") from None
    finally:
        probe.close()
