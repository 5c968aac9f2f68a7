"""Every difference between operating systems, behind a small interface.

POSIX: the child gets its own session and process group, so SIGINT, SIGTERM
and SIGKILL reach a shell pipeline's children too. Windows: the child gets its
own process group, so CTRL_BREAK_EVENT reaches it, and `taskkill /T` ends the
tree. Nothing here runs a platform-only call at import time.

Finding and starting COMMAND depends on a `Platform` (the running machine's
unless one is passed), so the Windows rules are unit-tested on any OS.
"""

import contextlib
import dataclasses
import ntpath
import os
import re
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
from typing import Callable, Tuple

IS_WINDOWS = sys.platform == "win32"
IS_MACOS = sys.platform == "darwin"

if IS_WINDOWS:
    DEFAULT_PASSENV = ("PATH", "PATHEXT", "SYSTEMROOT", "COMSPEC", "WINDIR", "TEMP", "TMP")
elif IS_MACOS:
    DEFAULT_PASSENV = ("PATH", "DYLD_LIBRARY_PATH")
else:
    DEFAULT_PASSENV = ("PATH", "LD_LIBRARY_PATH")

#: Set for every child unless --passenv passes the server's own value. Windows: Python
#: writes its pipes in the ANSI code page unless told to use UTF-8, which the server reads.
CHILD_ENVIRONMENT = {"PYTHONIOENCODING": "utf-8"} if IS_WINDOWS else {}

#: The extensions Windows tries after a bare name when PATHEXT is not set.
DEFAULT_PATHEXT = ".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC"
#: Interpreters a #! line may name on Windows; the Python ones mean the server's own Python.
SHEBANG_INTERPRETERS = ("python", "python3", "node", "perl", "ruby", "php", "bash", "sh")
_PYTHON_NAMES = ("python", "python3")
#: What cmd.exe expands even inside quotes (%), or what would end the quoting: refused.
_BATCH_REFUSED = frozenset('"%\r\n\0')
#: What an argument may hold and stay unquoted on a cmd.exe line; anything else is quoted.
_BATCH_PLAIN = frozenset(string.ascii_letters + string.digits + "#$*+-./:?@\\_")


class LaunchError(ValueError):
    """COMMAND exists but cannot be started on this OS: one line saying why and what to do."""


@dataclasses.dataclass(frozen=True)
class Platform:
    """What finding and starting COMMAND depends on; tests pass a Windows one on Linux."""

    is_windows: bool
    pathext: Tuple[str, ...]                 # lower-case extensions, e.g. (".exe", ".bat")
    path: Tuple[str, ...]                    # the directories of PATH
    cwd: str
    is_file: Callable[[str], bool]
    is_dir: Callable[[str], bool]
    read_first_line: Callable[[str], bytes]  # where a #! line would be
    python: str                              # runs .py files and python #! lines
    comspec: str                             # cmd.exe, which runs .bat and .cmd files


def current_platform():
    """The running machine's `Platform`, read now (PATH or the directory may have changed)."""
    pathext = os.environ.get("PATHEXT") or DEFAULT_PATHEXT
    return Platform(
        is_windows=IS_WINDOWS,
        pathext=tuple(ext.lower() for ext in pathext.split(";") if ext),
        path=tuple(d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d),
        cwd=os.getcwd(), is_file=os.path.isfile, is_dir=os.path.isdir,
        read_first_line=_read_first_line, python=sys.executable,
        comspec=os.environ.get("COMSPEC") or "cmd.exe")


def _read_first_line(path):
    try:
        with open(path, "rb") as file:
            return file.readline(256)
    except OSError:
        return b""


def resolve_command(name, platform=None):
    """The full path of COMMAND as the OS will run it, or None if there is none.

    POSIX: a name with a directory part is taken relative to the working
    directory and must be executable; a bare name is looked up on PATH.
    Windows: as cmd.exe looks, in the working directory and then on PATH,
    trying the PATHEXT extensions (see `_find_on_windows`).
    """
    platform = platform or current_platform()
    if platform.is_windows:
        return _find_on_windows(name, platform)
    if os.path.dirname(name):
        path = os.path.abspath(name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        return None
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def explain_missing_command(name, platform=None):
    """One line saying why COMMAND cannot run and what to do about it."""
    platform = platform or current_platform()
    if platform.is_windows:
        return _explain_missing_on_windows(name, platform)
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


def _find_on_windows(name, platform):
    """A name with a directory part is looked for there, a bare one in the working directory
    and then on PATH; in each place, the name as given if it has an extension, then with each
    PATHEXT extension, then (a script with a #! line) as given."""
    directories = (platform.cwd,) if ntpath.dirname(name) else (platform.cwd,) + platform.path
    for directory in directories:
        base = ntpath.normpath(ntpath.join(directory, name))
        with_extensions = [base + ext for ext in platform.pathext]
        tries = [base] + with_extensions if ntpath.splitext(base)[1] else with_extensions + [base]
        for candidate in tries:
            if platform.is_file(candidate):
                return candidate
    return None


def _explain_missing_on_windows(name, platform):
    if platform.is_dir(ntpath.join(platform.cwd, name)):
        return f"COMMAND {name} is a directory; to serve every script in it use --dir={name}"
    tried = ", ".join(platform.pathext)
    if ntpath.dirname(name):
        return f"COMMAND {name} does not exist (also tried with {tried})"
    return (f"COMMAND {name} not found in the working directory or on PATH "
            f"(also tried with {tried})")


def launch_argv(argv, platform=None):
    """What to give Popen to run `argv`, whose first item `resolve_command` found.

    POSIX: `argv` itself (the kernel honours #! lines). Windows, by the
    program's extension: .exe and .com run as they are; .bat and .cmd through
    cmd.exe, as one command line (a str, see `_batch_command_line`); .py with
    `platform.python`; any other file by its #! line (see `_shebang_argv`).
    Raises LaunchError when there is no safe way.
    """
    if platform is None and not IS_WINDOWS:
        return list(argv)  # per session: reading the platform would cost ~3% of a churn
    platform = platform or current_platform()
    if not platform.is_windows:
        return list(argv)
    program, args = argv[0], list(argv[1:])
    extension = ntpath.splitext(program)[1].lower()
    if extension in (".exe", ".com"):
        return [program, *args]
    if extension in (".bat", ".cmd"):
        return _batch_command_line(program, args, platform.comspec)
    if extension == ".py":
        return [platform.python, program, *args]
    return _shebang_argv(program, platform) + [program, *args]


def _shebang_argv(program, platform):
    """The interpreter (and its options) named by the #! line of `program`.

    `#!/usr/bin/env node`, `#!/usr/bin/perl -w` and `#!C:\\Perl\\bin\\perl.exe`
    all work: the last path component names the interpreter, which is looked
    up as COMMAND is. python and python3 mean `platform.python`, never a
    `python3` on PATH (on Windows that is often the Microsoft Store stub).
    """
    words = _shebang_words(platform.read_first_line(program))
    if not words:
        raise LaunchError(
            f"cannot run {program} on Windows: it is not a .exe, .com, .bat, .cmd or .py file "
            f"and has no #! line; name its interpreter first: websocketd-py INTERPRETER {program}")
    name, options = _program_name(words[0]), words[1:]
    if name in _PYTHON_NAMES:
        return [platform.python, *options]
    if name not in SHEBANG_INTERPRETERS:
        raise LaunchError(
            f"cannot run {program} on Windows: its #! line names {name}, which is not one of "
            f"{', '.join(SHEBANG_INTERPRETERS)}; name it first: websocketd-py {name} {program}")
    interpreter = _find_on_windows(name, platform)
    if interpreter is None:
        raise LaunchError(f"cannot run {program}: its #! line names {name}, which is not found "
                          "in the working directory or on PATH")
    return [interpreter, *options]


def _shebang_words(first_line):
    """The interpreter and its options named by a #! line (`env` skipped); [] if none."""
    text = first_line.decode("utf-8", "replace").strip()
    if not text.startswith("#!"):
        return []
    words = text[2:].split()
    if words and _program_name(words[0]) == "env":
        words = words[1:]
        while words and words[0].startswith("-"):  # env -S and the like
            words = words[1:]
    return words


def _program_name(path):
    """`/usr/bin/node` and `C:\\Node\\node.exe` → `node`."""
    name = re.split(r"[/\\]", path)[-1].lower()
    return name[:-len(".exe")] if name.endswith(".exe") else name


def _batch_command_line(script, args, comspec):
    """The cmd.exe command line that runs `script` (.bat, .cmd) with `args`, as a str.

    `cmd /d /v:off /s /c "..."`: /d skips AutoRun commands, /v:off keeps `!`
    literal, /s /c runs what is between the outer quotes as it is. Each
    argument is quoted unless it holds only letters, digits and `#$*+-./:?@\\_`,
    so `& | < > ^ ( ) , ; =` and spaces are plain text to cmd.exe and the
    script's `%~1` is the argument as given. cmd.exe expands `%` even inside
    quotes and cannot pass `"` or a line break inside quotes: such an
    argument (or script path) raises LaunchError instead of being mangled.
    """
    for text in (script, *args):
        refused = sorted(_BATCH_REFUSED & set(text))
        if refused:
            shown = " ".join(repr(c) for c in refused)
            raise LaunchError(
                f"cannot pass {text!r} to the batch file {script} safely: cmd.exe would "
                f"interpret {shown} in it; start a program that is not a .bat or .cmd instead")
    line = " ".join([f'"{script}"'] + [_batch_word(arg) for arg in args])
    return subprocess.list2cmdline([comspec, "/d", "/v:off", "/s", "/c"]) + f' "{line}"'


def _batch_word(arg):
    return arg if arg and _BATCH_PLAIN.issuperset(arg) else f'"{arg}"'


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


def wait_pipe(fd, writable, sock=None):
    """Block until pipe `fd` can be written (`writable`) or read: True; or until the
    peer of `sock`, if given, has hung up: False (checked first).

    Only where CAN_WATCH_HANGUP. A process that stops reading stdin blocks the
    session's reader, which then reads no more from the client; without this,
    a client that leaves in that state would go unnoticed until the process exits.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writable else select.POLLIN)
    if sock is not None:
        poller.register(sock, select.POLLRDHUP)
    while True:
        events = dict(poller.poll())
        if sock is not None and events.get(sock.fileno(), 0) & (
                select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return False
        if fd in events:
            return True


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


#: Set by `server_threads_on_one_cpu` while the server runs: the CPUs the server was
#: given (its children run on all of them) and the one its own threads keep to.
_every_cpu = None
_server_cpu = None


@contextlib.contextmanager
def server_threads_on_one_cpu():
    """Linux: while the server runs, its threads keep to one CPU, the one it runs on now.

    The threads take turns holding the GIL. Spread over several CPUs, every
    hand-over wakes a thread on another CPU, which often finds the GIL taken
    again by then and goes back to sleep (the convoy D. Beazley measured in
    "Understanding the Python GIL", 2010). Measured with 50 connections
    echoing: 3.6 context switches per message; on one CPU a woken thread waits
    its turn, 0.7 switches per message and twice the messages per second
    (docs/performance.md). Python code runs on one CPU at a time anyway. The
    programs the server starts get every CPU (`every_cpu`). Threads inherit
    the setting from the thread that starts them, so this is entered before
    the server starts any; at the end the calling thread gets its CPUs back
    (`api.serve` returns to the embedding program). Elsewhere, or with one
    CPU, nothing changes.
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
    the server's threads (measured: churn-16 lost 29% of its sessions per
    second when the children's CPUs were widened only once they had started).
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
    grows with the session count (measured: 102 KiB per session at 1,000
    sessions, 86 KiB with one arena). Python allocates under the GIL, so the
    threads hardly contend for the one arena (zlib and OpenSSL, with
    --compress and --ssl, allocate without it; echo was unchanged in an
    A/B run). A limit set by the user (MALLOC_ARENA_MAX, or arena_max in
    GLIBC_TUNABLES) is left as it is.
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
