"""--logformat=short: a log for a person watching a class, one short line per event.

    12:01:05 carol/buggy.py #0042  connected from 192.168.1.12
    12:01:07 carol/buggy.py #0042  NameError: name 'txt' is not defined (buggy.py, line 5)
    12:01:07 carol/buggy.py #0042  disconnected: exit status 1

A line is the local time, who it is about and the message. Who: the
program, as its path under --dir (or --cgidir), else its file name, and for
a session a tag, `#` and the last four digits of its id (the `id` of
websocketd's format and the program's UNIQUE_ID), so the lines of one
session can be told from another's; a request without a program is named by
its URL path; server lines name nobody.

What is shown: a session's connect and disconnect (with how the program
ended, unless it exited with status 0), every stderr line but blank ones,
every error and every INFO line (start-up, shutdown). A Python traceback is
one line (`PythonTracebacks`): its exception and the file and line where it
was raised. Left out: the access lines of plain HTTP requests and of the
101, which the connect line stands for. --loglevel applies as for the
default format.
"""

import os
import re
import time
from urllib.parse import urlsplit

from .log import ERROR, StderrLog, one_line

#: Lines that join the tracebacks of chained exceptions: each exception gets its own line.
_CHAINING = frozenset((
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:"))
_FRAME = re.compile(r'  File "(.*)", line (\d+)')


class ShortFormat:
    """The short line of each entry; `root` is --dir or --cgidir, the programs' names' root."""

    def __init__(self, root=None):
        self.root = os.path.realpath(root) if root else None

    def line(self, level, category, message, fields):
        fields = dict(fields)
        if level == "access" and not (category == "session"
                                      and message in ("CONNECT", "DISCONNECT")):
            return None
        if message == "CONNECT":
            message = f"connected from {fields.get('remote', '')}"
        elif message == "DISCONNECT":
            ended = fields.get("exit", "")
            message = "disconnected" if ended in ("", "exit status 0") else f"disconnected: {ended}"
        head = f"{time.strftime('%H:%M:%S')} {self._who(fields)}".rstrip()
        return f"{head}  {one_line(message)}\n"

    @staticmethod
    def stderr_log(log):
        return PythonTracebacks(log)

    def _who(self, fields):
        program = fields.get("command") or fields.get("cgiscript")
        if program:
            inside = self.root and program.startswith(self.root + os.sep)
            who = program[len(self.root) + 1:] if inside else os.path.basename(program)
        elif fields.get("url"):
            who = urlsplit(fields["url"]).path
        else:
            return ""
        session = fields.get("id", "")
        return one_line(f"{who} #{session[-4:]}" if session else who)


class PythonTracebacks(StderrLog):
    """A program's stderr for the short log: blank lines left out, and each Python traceback
    (or SyntaxError report) one line, its exception with where it was raised."""

    def __init__(self, log):
        super().__init__(log)
        self._in_traceback = False
        self._where = ""

    def line(self, text):
        if self._in_traceback:
            if text.startswith(" ") or not text:
                self._frame(text)
                return
            self._in_traceback = False
            text = f"{text} ({self._where})" if self._where else text
        elif text == "Traceback (most recent call last):" or _FRAME.match(text):
            self._in_traceback, self._where = True, ""
            self._frame(text)
            return
        if text.strip() and text not in _CHAINING:
            self.log.write(ERROR, "stderr", text)

    def end(self):
        if self._in_traceback:  # the program ended in the middle of one
            self._in_traceback = False
            where = f" ({self._where})" if self._where else ""
            self.log.write(ERROR, "stderr", f"a traceback cut short{where}")

    def _frame(self, text):
        frame = _FRAME.match(text)
        if frame:
            self._where = f"{os.path.basename(frame.group(1))}, line {frame.group(2)}"
