"""The server's log: one line per event on stdout, by default in websocketd's format.

    Tue, 24 Nov 2026 16:58:12 +0000 | ACCESS | session    | url:'http://…' id:'17…' | CONNECT

websocketd's format (`WebsocketdFormat`), so existing log tooling keeps
working: time (RFC 1123 with numeric zone), level padded to 6, category
padded to 10, ``key:'value'`` pairs, message. --logformat=short gives lines
for a person instead (`shortlog`). Lines are written whole under a lock, so
threads never interleave them.
"""

import sys
import threading
import time

#: Levels from most to least verbose, as websocketd orders them.
LEVELS = ("debug", "trace", "access", "info", "error", "fatal")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_RANK["none"] = len(LEVELS)

DEBUG, TRACE, ACCESS, INFO, ERROR, FATAL = LEVELS

# Control characters and Unicode line breaks would break the one-line-per-entry format.
_ONE_LINE = str.maketrans({c: " " for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]})


def one_line(value):
    """`value` as text with no line break or control character in it."""
    text = str(value)
    # Every character _ONE_LINE replaces is unprintable; the check is much faster.
    return text if text.isprintable() else text.translate(_ONE_LINE)


def _field_value(value):
    """A field value that cannot end its quotes early: a key:'value' pair another field's
    text cannot forge (`\\` and `\'` escaped, control characters made spaces)."""
    return one_line(value).replace("\\", "\\\\").replace("'", "\\'")


def _timestamp():
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime())


class WebsocketdFormat:
    """websocketd's log line, and each stderr line logged as it is."""

    @staticmethod
    def line(level, category, message, fields):
        """The line of one entry (None would leave it out)."""
        pairs = " ".join(f"{key}:'{_field_value(value)}'" for key, value in fields)
        return (f"{_timestamp()} | {level.upper():<6} | {category:<10} | {pairs} | "
                f"{one_line(message)}\n")

    @staticmethod
    def stderr_log(log):
        """Where the lines of one program's stderr go (`StderrLog`), `log` being its context."""
        return StderrLog(log)


class StderrLog:
    """The lines of one program's stderr, each an ERROR entry in category `stderr`."""

    def __init__(self, log):
        self.log = log

    def line(self, text):
        self.log.error("stderr", text)

    def end(self):
        """stderr is closed: nothing more comes."""


#: The default line format (it holds nothing: one serves every log).
WEBSOCKETD_FORMAT = WebsocketdFormat()


class Log:
    """The server's log: a level threshold, a line format, and a stream written line by line."""

    def __init__(self, level="access", stream=None, line_format=WEBSOCKETD_FORMAT):
        self.threshold = _RANK[level]
        self.stream = stream if stream is not None else sys.stdout
        self.format = line_format
        self._lock = threading.Lock()

    def enabled(self, level):
        return _RANK[level] >= self.threshold

    def write(self, level, category, message, fields=()):
        """Write one entry if `level` passes the threshold (and the format shows it);
        `fields` is (key, value) pairs."""
        if _RANK[level] < self.threshold:
            return
        line = self.format.line(level, category, message, fields)
        if line is None:
            return
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stdout must not take the server down

    def context(self, **fields):
        """A logger that adds these fields to every entry (a request, a session)."""
        return LogContext(self, tuple(fields.items()))


class LogContext:
    """A `Log` plus the fields that identify one request or session."""

    def __init__(self, log, fields):
        self.log = log
        self.fields = fields

    def with_fields(self, **more):
        return LogContext(self.log, self.fields + tuple(more.items()))

    def enabled(self, level):
        return self.log.enabled(level)

    def stderr_log(self):
        """Where the lines of this context's program's stderr go (a `StderrLog`)."""
        return self.log.format.stderr_log(self)

    def write(self, level, category, message):
        self.log.write(level, category, message, self.fields)

    def debug(self, category, message):
        self.write(DEBUG, category, message)

    def access(self, category, message):
        self.write(ACCESS, category, message)

    def info(self, category, message):
        self.write(INFO, category, message)

    def error(self, category, message):
        self.write(ERROR, category, message)
