"""Finding and starting COMMAND: where the OS looks, and the rules Windows needs.

POSIX: a name with a directory part is taken relative to the working
directory, a bare one is looked up on PATH, and the kernel honours `#!`
lines. Windows cannot exec a `.py` or `#!` script, so `launch_argv` says how
to start each kind of file (`.exe`, `.bat`/`.cmd` through cmd.exe with safe
quoting, `.py` with the server's own Python, others by their `#!` line).
The rules depend on a `Platform` (the running machine's unless one is
passed), so the Windows ones are unit-tested on any OS. Nothing here runs a
platform-only call at import time.
"""

import dataclasses
import errno
import ntpath
import os
import re
import shutil
import string
import subprocess
import sys
from typing import Callable, Tuple

IS_WINDOWS = sys.platform == "win32"
IS_MACOS = sys.platform == "darwin"

if IS_WINDOWS:
    DEFAULT_PASSENV = ("PATH", "PATHEXT", "SYSTEMROOT", "COMSPEC", "WINDIR", "TEMP", "TMP")
elif IS_MACOS:
    DEFAULT_PASSENV = ("PATH", "DYLD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE")
else:
    DEFAULT_PASSENV = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE")

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


#: What a client is told when a program cannot start and nothing more precise is known.
CANNOT_START = "cannot start the program"
#: A #! line: the interpreter (up to a blank), then its one optional argument.
_SHEBANG = re.compile(rb"#![ \t]*([^ \t]*)[ \t]*(.*)", re.DOTALL)


class LaunchError(ValueError):
    """A program cannot be started: one line saying why and what to do.

    `reason` is the short form for the client (a close reason or an HTTP
    error's text), without the program's path.
    """

    def __init__(self, message, reason=CANNOT_START):
        super().__init__(message)
        self.reason = reason


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
        return list(argv)  # per session: no need to read PATH and the directory here
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


def start_failure(path, error):
    """The `LaunchError` for a program at `path` that the OS refused to start (`error`, the
    OSError of Popen): what is wrong with it, if we can tell, and the fix."""
    problem = script_problem(path)
    if problem is None and not IS_WINDOWS and os.path.isfile(path):
        if error.errno == errno.EACCES:
            problem = ("the program is not executable", f"run chmod +x {path}")
        elif error.errno == errno.ENOEXEC:
            problem = ("the program has no #! line",
                       f"make the first line of {path} name its interpreter, "
                       "e.g. #!/usr/bin/env python3")
    if problem is None:
        return LaunchError(str(error))
    what, fix = problem
    return LaunchError(f"{what}; {fix}", reason=what)


def client_reason(error):
    """What a client is told about a program that could not start with `error`."""
    return error.reason if isinstance(error, LaunchError) else CANNOT_START


def script_problem(path, name=None):
    """What in the #! line of the script at `path` keeps it from starting, as (what is wrong,
    what to do, naming the script `name`, by default its path), or None if nothing does.

    A #! line ending in \\r (the file was saved with Windows line endings)
    makes the kernel look for `/bin/bash\\r`, or `env` for `python3\\r`; an
    interpreter that is not there fails the same way. POSIX only: Windows
    reads #! lines itself (`launch_argv`), blanks and \\r stripped.
    """
    if IS_WINDOWS:
        return None
    name = name or path
    match = _SHEBANG.match(_read_first_line(path).rstrip(b"\n"))
    if match is None:
        return None
    interpreter, argument = (os.fsdecode(part) for part in match.groups())
    windows_line_ending = (argument or interpreter).endswith("\r")
    missing, where = None, ""
    if not os.access(interpreter, os.X_OK):
        missing = interpreter
    elif os.path.basename(interpreter) == "env":
        words = [word for word in re.split(r"[ \t]+", argument) if word and word[0] != "-"]
        if words and not (os.access(words[0], os.X_OK) if "/" in words[0]
                          else shutil.which(words[0])):
            missing, where = words[0], "" if "/" in words[0] else " on PATH"
    if windows_line_ending:
        fix = f"run dos2unix {name} (or set the editor to save with LF line endings)"
        if missing is not None:
            return (f"interpreter {printable(missing)} not found: "
                    "the script has Windows line endings"), fix
        return r"its #! line ends in \r: the script has Windows line endings", fix
    if missing is not None:
        return (f"interpreter {missing} not found{where}",
                f"install it, or name another one on the #! line of {name}")
    return None


def printable(text):
    """`text` with each unprintable character written as a Python escape (\\r, \\x00)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def child_process_options():
    """Popen options that give the child its own process group."""
    if IS_WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


#: Linux can see a client's hang-up while unread data is still queued before it.
