"""Every difference between operating systems, behind a small interface.

POSIX: the child gets its own session and process group, so SIGINT, SIGTERM
and SIGKILL reach a shell pipeline's children too. Windows: the child gets its
own process group, so CTRL_BREAK_EVENT reaches it, and `taskkill /T` ends the
tree. Nothing here runs a platform-only call at import time.
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys

IS_WINDOWS = sys.platform == "win32"
IS_MACOS = sys.platform == "darwin"

if IS_WINDOWS:
    DEFAULT_PASSENV = ("PATH", "PATHEXT", "SYSTEMROOT", "COMSPEC", "WINDIR", "TEMP", "TMP")
elif IS_MACOS:
    DEFAULT_PASSENV = ("PATH", "DYLD_LIBRARY_PATH")
else:
    DEFAULT_PASSENV = ("PATH", "LD_LIBRARY_PATH")


def resolve_command(name):
    """The full path of COMMAND as the OS will run it, or None if there is none.

    A name with a directory part is taken relative to the working directory;
    a bare name is looked up on PATH (with PATHEXT on Windows).
    """
    if os.path.dirname(name):
        path = os.path.abspath(name)
        if os.path.isfile(path) and (IS_WINDOWS or os.access(path, os.X_OK)):
            return path
        return None
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def explain_missing_command(name):
    """One line saying why COMMAND cannot run and what to do about it."""
    if os.path.dirname(name):
        path = os.path.abspath(name)
        if os.path.isdir(path):
            return f"COMMAND {name} is a directory; to serve every script in it use --dir={name}"
        if os.path.isfile(path):
            return f"COMMAND {name} is not executable: run chmod +x {name}"
        return f"COMMAND {name} does not exist"
    if os.path.isfile(name):
        return (f"COMMAND {name} is not on PATH; to run the file in this directory "
                f"write ./{name}")
    return f"COMMAND {name} not found on PATH"


def child_process_options():
    """Popen options that give the child its own process group."""
    if IS_WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


#: Linux can see a client's hang-up while unread data is still queued before it.
CAN_WATCH_HANGUP = hasattr(select, "poll") and hasattr(select, "POLLRDHUP")


def prepare_stdin(fd):
    """Make the child's stdin non-blocking where `wait_writable_or_hangup` can watch it."""
    if CAN_WATCH_HANGUP:
        os.set_blocking(fd, False)


def wait_writable_or_hangup(fd, sock):
    """Block until pipe `fd` takes more data (True) or the peer of `sock` hung up (False).

    A process that stops reading stdin blocks the session's reader, which then
    reads no more from the client; without this, a client that leaves in that
    state would go unnoticed until the process exits.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.register(sock, select.POLLRDHUP)
    while True:
        for ready, events in poller.poll():
            if ready == fd:
                return True
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                return False


def interrupt(process):
    """The polite first signal: SIGINT to the group, or CTRL_BREAK_EVENT on Windows."""
    if IS_WINDOWS:
        _ignore_gone(os.kill, process.pid, signal.CTRL_BREAK_EVENT)
    else:
        _ignore_gone(os.killpg, process.pid, signal.SIGINT)


def terminate(process):
    """The firm second signal: SIGTERM to the group (Windows: end the tree)."""
    if IS_WINDOWS:
        _kill_windows_tree(process)
    else:
        _ignore_gone(os.killpg, process.pid, signal.SIGTERM)


def kill(process):
    """The last resort: SIGKILL to the group (Windows: end the tree)."""
    if IS_WINDOWS:
        _kill_windows_tree(process)
    else:
        _ignore_gone(os.killpg, process.pid, signal.SIGKILL)


def group_alive(process):
    """True while the child, or anything left in its process group, still runs."""
    if process.poll() is None:
        return True
    if IS_WINDOWS:
        return False
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_exit(returncode):
    """websocketd-style words for an exit status: `exit status 3`, `killed by signal 9`."""
    if returncode is not None and returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _kill_windows_tree(process):
    subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _ignore_gone(call, *args):
    try:
        call(*args)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # the process (group) is gone already


def raise_open_file_limit():
    """Raise the soft open-file limit to the hard one, as Go does, so thousands of sessions fit."""
    if IS_WINDOWS:
        return
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if IS_MACOS and hard == resource.RLIM_INFINITY:
        hard = 10240  # macOS refuses more than OPEN_MAX for the soft limit
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


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


def install_shutdown_handlers(callback):
    """Call `callback(signal_name)` on Ctrl-C, SIGTERM, SIGHUP, or (Windows) Ctrl-Break / console close."""
    names = ["SIGINT", "SIGTERM", "SIGBREAK"] if IS_WINDOWS else ["SIGINT", "SIGTERM", "SIGHUP"]
    for name in names:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, lambda number, frame, name=name: callback(name))
