"""Process-wide tuning that only the command line applies, each undone when serving ends.

The open-file limit (as Go raises it), the server's threads on one CPU, one
malloc arena for all threads, and the shutdown signal handlers: each
changes the whole process, so a library call (`api.serve`, `WebSocketApp`)
must not make it behind its caller's back.
"""

import contextlib
import os
import signal
import sys

from .launching import IS_MACOS, IS_WINDOWS

#: sys.setswitchinterval while the command line serves. A burst of sessions (everyone
#: sends at once, or everyone hangs up) wakes thousands of threads, and each waiting for
#: the GIL asks the holder to let go every interval (5 ms by default): the work dissolves
#: into thread switches. Session threads give the GIL up at every blocking call, so a long
#: interval costs them nothing (docs/performance.md, "idle-max", has the figures).
SWITCH_INTERVAL = 2.0


@contextlib.contextmanager
def for_the_command_line(on_signal):
    """Everything process-wide the command line sets while it serves, restored at the end.

    `on_signal(name)` is called on Ctrl-C, SIGTERM, SIGHUP (Windows: Ctrl-Break,
    console close); the open-file limit is raised as Go raises it, one malloc
    arena serves every thread (which cannot be undone; the process exits
    right after), the GIL switch interval is SWITCH_INTERVAL, and the
    server's threads keep to one CPU (entered here, before any starts).
    """
    handlers = install_shutdown_handlers(on_signal)
    file_limit = raise_open_file_limit()
    use_one_malloc_arena()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with server_threads_on_one_cpu():
            yield
    finally:
        sys.setswitchinterval(interval)
        _restore_open_file_limit(file_limit)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def raise_open_file_limit():
    """Raise the soft open-file limit to the hard one, as Go does, so thousands of sessions
    fit; the limits before, or None if nothing changed."""
    if IS_WINDOWS:
        return None
    import resource
    soft, hard = before = resource.getrlimit(resource.RLIMIT_NOFILE)
    if IS_MACOS and hard == resource.RLIM_INFINITY:
        hard = 10240  # macOS refuses more than OPEN_MAX for the soft limit
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return before
        except (ValueError, OSError):
            pass
    return None


def _restore_open_file_limit(before):
    if before is not None:
        import resource
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, before)
        except (ValueError, OSError):
            pass


#: Set by `server_threads_on_one_cpu` while the server runs: the CPUs the server was
#: given (its children run on all of them) and the one its own threads keep to.
_every_cpu = None
_server_cpu = None


@contextlib.contextmanager
def server_threads_on_one_cpu():
    """Linux: while the server runs, its threads keep to one CPU, the one it runs on now.

    The threads take turns holding the GIL. Spread over several CPUs, every
    hand-over wakes a thread on another CPU, which often finds the GIL taken
    again by then and goes back to sleep (the convoy D. Beazley described in
    "Understanding the Python GIL", 2010); on one CPU a woken thread waits its
    turn (docs/performance.md, "Process-wide tuning", has the figures).
    Python code runs on one CPU at a time anyway. The programs the server
    starts get every CPU (`every_cpu`). Threads inherit the setting from the
    thread that starts them, so this is entered before the server starts
    any; at the end the calling thread gets its CPUs back. Elsewhere, or with
    one CPU, nothing changes.
    """
    global _every_cpu, _server_cpu
    chosen = _keep_to_one_cpu()
    if chosen is None:
        yield
        return
    _every_cpu, _server_cpu = chosen
    try:
        yield
    finally:
        _every_cpu = _server_cpu = None
        _set_cpus(chosen[0])


def _keep_to_one_cpu():
    """Put the calling thread on one CPU: (every CPU it had, {that CPU}), or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:
            return None
        cpu = _current_cpu()
        if cpu not in cpus:
            cpu = max(cpus)
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpus, {cpu}


def _current_cpu():
    """The CPU this thread last ran on, or None.

    The scheduler starts a new program on the least busy CPU it finds, so
    servers started one after the other do not all keep to the same one.
    """
    try:
        with open("/proc/thread-self/stat", "rb") as stat:
            return cpu_in_stat(stat.read())
    except (OSError, IndexError, ValueError):
        return None


def cpu_in_stat(stat):
    """Field 39 ("processor") of a /proc/.../stat line. The name in field 2 is in
    parentheses and may hold spaces and parentheses itself: fields are counted
    from the last ")"."""
    fields_after_name = stat.rsplit(b")", 1)[1].split()
    return int(fields_after_name[39 - 3])


@contextlib.contextmanager
def every_cpu():
    """Around starting a child process: the calling thread may use every CPU meanwhile.

    A child inherits the CPUs of the thread that starts it, from its first
    instruction on: started from a thread kept to one CPU
    (`server_threads_on_one_cpu`), its exec and start-up would queue behind
    the server's threads, and widening its CPUs once it runs comes too late.
    """
    every, one = _every_cpu, _server_cpu
    if every is None:
        yield
        return
    _set_cpus(every)
    try:
        yield
    finally:
        _set_cpus(one)


def _set_cpus(cpus):
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:  # e.g. a CPU taken away meanwhile: the thread runs where it can
        pass


def use_one_malloc_arena():
    """glibc only: one malloc arena for all threads (M_ARENA_MAX), before any thread starts.

    glibc gives threads up to 8 arenas per core; each session's thread then
    leaves freed memory in whichever arena it used, and RSS per idle session
    grows with the session count. Python allocates under the GIL, so the
    threads hardly contend for the one arena (zlib and OpenSSL, with
    --compress and --ssl, allocate without it). A limit set by the user
    (MALLOC_ARENA_MAX, or arena_max in GLIBC_TUNABLES) is left as it is.
    """
    if (not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ
            or "arena_max" in os.environ.get("GLIBC_TUNABLES", "")):
        return
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):  # no ctypes, or not glibc (musl)
        return
    mallopt(_M_ARENA_MAX, 1)


_M_ARENA_MAX = -8  # from glibc's malloc.h


def install_shutdown_handlers(callback):
    """Call `callback(signal_name)` on Ctrl-C, SIGTERM, SIGHUP, or (Windows) Ctrl-Break /
    console close; the handlers they replace, by signal number."""
    names = ["SIGINT", "SIGTERM", "SIGBREAK"] if IS_WINDOWS else ["SIGINT", "SIGTERM", "SIGHUP"]
    replaced = {}
    for name in names:
        signum = getattr(signal, name, None)
        if signum is not None:
            replaced[signum] = signal.signal(
                signum, lambda number, frame, name=name: callback(name))
    return replaced
