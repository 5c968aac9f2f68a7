"""The buffering hint: what to tell a student whose program has printed nothing yet.

stdout is a pipe, not a terminal, so many runtimes keep a program's output
in a buffer until it fills or the program exits. The fix depends on what
the program is: the hint names it from the command's name, or for a script
from its `#!` line (`#!/usr/bin/env python3` is Python).
"""

import os

HINT_START = ("no output from the program yet: if it has printed something, it is probably "
              "waiting in a buffer (stdout is a pipe, not a terminal). ")

_PYTHON = "Python: print(..., flush=True), or run it with python -u"
_SHELL = ("a shell script: the commands in it buffer when their output is a pipe: sed -u, "
          "awk with fflush() after each print, grep --line-buffered, or stdbuf -oL COMMAND")
_FIXES = {
    "python": _PYTHON, "py": _PYTHON,
    "sh": _SHELL, "bash": _SHELL, "dash": _SHELL, "zsh": _SHELL, "ksh": _SHELL,
    "sed": "sed -u", "awk": "awk: fflush() after each print",
    "gawk": "gawk: fflush() after each print",
    "grep": "grep --line-buffered",
    "perl": "Perl: $| = 1;", "ruby": "Ruby: $stdout.sync = true", "php": "PHP: flush()",
}
#: A compiled program, or one we cannot tell.
_OTHER = ("C/C++: fflush(stdout) after each line, or setvbuf(stdout, NULL, _IOLBF, 0) once; "
          "a program you cannot change: stdbuf -oL COMMAND (Linux); Perl $| = 1; "
          "Ruby $stdout.sync = true; PHP flush()")


def buffering_hint(argv):
    """The hint for the program `argv` runs."""
    return HINT_START + "Flush after each line: " + _FIXES.get(program_kind(argv), _OTHER)


def program_kind(argv):
    """`python`, `bash`, ... : the command's name, or for a script its interpreter's."""
    interpreter = _interpreter(argv[0]) if argv else None
    words = interpreter or list(argv[:1])
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        words = [word for word in words[1:] if not word.startswith("-")] or words
    name = os.path.basename(words[0]).lower() if words else ""
    if name.endswith(".exe"):
        name = name[:-4]
    if name.endswith(".py"):
        return "python"
    return name.rstrip("0123456789.")


def _interpreter(path):
    """The words of a script's `#!` line, or None (not a script, or not readable)."""
    try:
        with open(path, "rb") as script:
            first = script.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode("utf-8", "replace").split() or None
