"""Process trees: starting a program as a tree, signals to all of it, waiting for exits,
and pipe waits.

POSIX: the program gets its own session and process group
(`launching.child_process_options`), so SIGINT, SIGTERM and SIGKILL reach a
shell pipeline's children too. Windows: its own process group, so
CTRL_BREAK_EVENT reaches it when the server has a console, and a Job Object
(`winjob`) that holds the whole tree: the firm steps end the job.

The functions that take `job` take the `winjob.Job` of `start` (None on POSIX).
"""

import os
import select
import signal
import subprocess
import sys

from . import launching
from .launching import IS_WINDOWS

if IS_WINDOWS:
    from . import winjob

CAN_WATCH_HANGUP = hasattr(select, "poll") and hasattr(select, "POLLRDHUP")


def prepare_stdin(fd):
    """Make the child's stdin non-blocking where `wait_pipe` can watch it."""
    if CAN_WATCH_HANGUP:
        os.set_blocking(fd, False)


def wait_pipe(fd, writable, sock=None, fin_is_leaving=True):
    """Block until pipe `fd` can be written (`writable`) or read: True; or until the
    peer of `sock`, if given, has hung up: False (checked first).

    Hung up means reset, or with `fin_is_leaving` also a FIN (the peer's end
    of sending: a WebSocket client that leaves; for plain HTTP it may be a
    client that half-closes and still reads the response). Only where
    CAN_WATCH_HANGUP. A process that stops reading stdin blocks the session's
    reader, which then reads no more from the client; without this, a client
    that leaves in that state would go unnoticed until the process exits.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writable else select.POLLIN)
    hung_up = select.POLLHUP | select.POLLERR  # reported whatever is registered
    if sock is not None:
        poller.register(sock, select.POLLRDHUP if fin_is_leaving else 0)
        if fin_is_leaving:
            hung_up |= select.POLLRDHUP
    while True:
        events = dict(poller.poll())
        if sock is not None and events.get(sock.fileno(), 0) & hung_up:
            return False
        if fd in events:
            return True


def readable_within(fd, timeout):
    """True if pipe `fd` has data or EOF to read within `timeout` seconds. Windows cannot
    wait on a pipe: always True there (the caller then just reads)."""
    if IS_WINDOWS:
        return True
    if not hasattr(select, "poll"):
        return bool(select.select([fd], [], [], timeout)[0])
    poller = select.poll()  # unlike select(), any descriptor number
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def wait_exit(popen, timeout):
    """Wait until `popen` has exited, and reap it: True; False after `timeout` seconds.

    Linux: a pidfd wakes the caller at the exit (Popen.wait with a timeout
    polls with growing sleeps, which would add milliseconds to every session's
    end). Elsewhere, or without a free descriptor, Popen.wait.
    """
    if popen.returncode is None and hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:   # reaped meanwhile, out of descriptors, or an old kernel
            pidfd = None
        if pidfd is not None:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(max(timeout, 0) * 1000):
                    return False
            finally:
                os.close(pidfd)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def some_child_exited():
    """Whether some child of this process has exited and awaits reaping (one cheap call).

    True where that cannot be asked without reaping (Windows, macOS): callers check each child.
    """
    if not hasattr(os, "waitid") or not hasattr(os, "WNOWAIT") or sys.platform == "darwin":
        return True
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no children at all
        return False


def pipe_is_held_open(fd):
    """True when pipe `fd` has nothing to read and no EOF: some process still has its
    write end. (Windows cannot poll pipes: False, so callers keep waiting.)"""
    if IS_WINDOWS or not hasattr(select, "poll"):
        return False
    poller = select.poll()  # not select(): session fds go far past 1024
    poller.register(fd, select.POLLIN)
    return not poller.poll(0)


def start(args, **popen_options):
    """(Popen, job): `args` started in a process group of its own; on Windows also in a
    job of its own before it can start anything (OSError if it cannot start)."""
    options = {**popen_options, **launching.child_process_options()}
    if not IS_WINDOWS:
        return subprocess.Popen(args, **options), None
    job = winjob.Job()
    try:
        options["creationflags"] |= winjob.SUSPENDED
        popen = subprocess.Popen(args, **options)
    except BaseException:
        job.close()
        raise
    try:
        job.adopt(popen)
    except OSError:
        job.close()  # KILL_ON_JOB_CLOSE: ends it if it was adopted
        popen.kill()
        popen.wait()
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            pipe.close()
        raise
    return popen, job


def interrupt(process, job):
    """The polite first signal: SIGINT to the group; on Windows CTRL_BREAK_EVENT, when the
    server has a console to send it through. OSError if Windows refuses."""
    if not IS_WINDOWS:
        _ignore_gone(os.killpg, process.pid, signal.SIGINT)
    elif winjob.has_console():
        winjob.send_ctrl_break(process.pid)


def terminate(process, job):
    """The firm second signal: SIGTERM to the group (Windows: end the job)."""
    if IS_WINDOWS:
        job.terminate()
    else:
        _ignore_gone(os.killpg, process.pid, signal.SIGTERM)


def kill(process, job):
    """The last resort: SIGKILL to the group (Windows: end the job)."""
    if IS_WINDOWS:
        job.terminate()
    else:
        _ignore_gone(os.killpg, process.pid, signal.SIGKILL)


def group_alive(process, job):
    """True while the child, or anything left in its process group (Windows: its job),
    still runs."""
    if IS_WINDOWS:
        return process.poll() is None or job.active_processes() > 0
    if process.poll() is None:
        return True
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


def _ignore_gone(call, *args):
    try:
        call(*args)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # the process (group) is gone already
