"""Process output → WebSocket frames, as bytes ready for one `sendall` (no I/O here).

Text mode rules (SPEC §2): each line becomes one text message without its
"\\n" and without one "\\r" right before it; an empty line is an empty
message; bytes that are not UTF-8 become U+FFFD, so a text frame is never
invalid; the last line is sent at EOF even without "\\n". A line longer than
`fragment_size` is sent as a fragmented message while it arrives, so memory
stays bounded whatever the process prints.

Server frames are never masked or compressed, so they are built here directly:
all the lines of one read become one buffer and one system call.
"""

import codecs
import json
import struct

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 0x40  # "compressed", on the first frame of a message (RFC 7692)

_SHORT_HEADERS = {
    (opcode, fin): [bytes(((0x80 if fin else 0) | opcode, n)) for n in range(126)]
    for opcode in range(16) for fin in (True, False)
}


def frame_header(opcode, length, fin=True):
    if length < 126:
        return _SHORT_HEADERS[opcode, fin][length]
    first = (0x80 if fin else 0) | opcode
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame(opcode, payload, fin=True):
    """One unmasked frame."""
    return frame_header(opcode, len(payload), fin) + payload


def _json_escape(text):
    """Escape text as the inside of a JSON string; pieces escaped apart join into valid JSON."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def stdout_framer(binary, enveloped):
    """The framer of a program's stdout: a message per read (--binary), else per line,
    each line as {"stream": "stdout", ...} when `enveloped` (--passstderr, the dev console)."""
    if binary:
        return BinaryFramer()
    return LineFramer(stream="stdout" if enveloped else None)


def event(kind, text):
    """A dev console event as one text frame: {"event": kind, "data": text}."""
    return frame(OP_TEXT, json.dumps({"event": kind, "data": text}, ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8"))


class BinaryFramer:
    """Binary mode: each read is one binary message, sent as it came."""

    started = False  # (never inside a message: see LineFramer.started)

    def feed(self, chunk):
        return frame(OP_BINARY, chunk)

    def finish(self):
        return b""


class LineFramer:
    """Turns a byte stream into one text message per line (text mode).

    With `stream` set (--passstderr), every line is wrapped as
    {"stream": stream, "data": line}, and a long line is cut into several
    whole messages instead of fragments, because two streams share the
    connection and data frames of two messages must not interleave.
    """

    def __init__(self, fragment_size=65536, stream=None):
        self.fragment_size = fragment_size
        self.split_long_lines = stream is not None
        self.pending = b""        # the current line's bytes not yet framed
        self.started = False      # the current line is being sent in fragments
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if stream is None:
            self._prefix, self._suffix, self._escape = "", "", None
            self._partial_prefix = ""
        else:
            self._prefix = '{"stream":%s,"data":"' % json.dumps(stream)
            self._partial_prefix = '{"stream":"prompt","data":"'
            self._suffix = '"}'
            self._escape = _json_escape

    def feed(self, chunk):
        """Frames for the complete lines in `chunk` (and any long-line fragment)."""
        data = self.pending + chunk if self.pending else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.pending = data
            return self._fragment() if len(data) > self.fragment_size else b""
        self.pending = data[end + 1:]
        lines = data[:end].split(b"\n")
        parts = []
        if self.started:
            parts.append(self._last_fragment(_strip_cr(lines.pop(0))))
        if lines:
            parts.append(self._messages(lines, data, end))
        if len(self.pending) > self.fragment_size:
            parts.append(self._fragment())
        return b"".join(parts)

    def finish(self):
        """Frames for what is left at EOF: the last line, even without "\\n"."""
        rest, self.pending = self.pending, b""
        if self.started:
            return self._last_fragment(rest)
        return self._messages([rest], rest, len(rest), strip_cr=False) if rest else b""

    def flush_partial(self):
        """The start of a line that waits for its newline, as a message of its own (a prompt
        such as `Guess: `); b"" if there is none or it is being sent in fragments. With
        `stream`, it is {"stream": "prompt", ...}. A UTF-8 sequence cut short waits."""
        waiting = self.pending[:-1] if self.pending.endswith(b"\r") else self.pending
        if self.started or not waiting:
            return b""  # (a "\r" may be the start of the line's "\r\n": it waits)
        text, used = codecs.utf_8_decode(waiting, "replace", False)
        if not text:
            return b""
        self.pending = self.pending[used:]
        if self._escape is not None:
            text = self._partial_prefix + self._escape(text) + self._suffix
        return frame(OP_TEXT, text.encode("utf-8"))

    def _messages(self, lines, data, end, strip_cr=True):
        """Whole text messages for `lines` (`data[:end]` is them joined by "\n")."""
        parts = []
        append = parts.append
        if self._escape is None and (data.isascii() or _is_utf8(data[:end])):
            for line in lines:
                if strip_cr and line[-1:] == b"\r":
                    line = line[:-1]
                append(frame_header(OP_TEXT, len(line)))
                append(line)
        else:
            for line in lines:
                if strip_cr:
                    line = _strip_cr(line)
                payload = self._wrap(line.decode("utf-8", "replace"), True, True)
                append(frame_header(OP_TEXT, len(payload)))
                append(payload)
        return b"".join(parts)

    def _fragment(self):
        """A non-final frame with the pending bytes, keeping back a "\\r" that may end the line."""
        keep = 1 if self.pending.endswith(b"\r") else 0
        part = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        text = self._decoder.decode(part)
        if self.split_long_lines:
            self.started = True
            return frame(OP_TEXT, self._wrap(text, True, True))
        payload = self._wrap(text, not self.started, False)
        opcode = OP_CONTINUATION if self.started else OP_TEXT
        self.started = True
        return frame(opcode, payload, fin=False)

    def _last_fragment(self, rest):
        text = self._decoder.decode(rest, final=True)
        self._decoder.reset()
        self.started = False
        if self.split_long_lines:
            return frame(OP_TEXT, self._wrap(text, True, True))
        return frame(OP_CONTINUATION, self._wrap(text, False, True), fin=True)

    def _wrap(self, text, first, last):
        if self._escape is not None:
            text = (self._prefix if first else "") + self._escape(text) + (
                self._suffix if last else "")
        return text.encode("utf-8")


def _strip_cr(line):
    return line[:-1] if line[-1:] == b"\r" else line


def _is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def split_lines(pending, chunk, limit=65536):
    """(complete lines, new pending) for logging stderr; a line over `limit` is cut there.

    An empty `chunk` is EOF: what is pending is the last line.
    """
    if not chunk:
        return ([pending] if pending else []), b""
    data = pending + chunk
    lines = data.split(b"\n")
    pending = lines.pop()
    lines = [_strip_cr(line) for line in lines]
    while len(pending) > limit:
        lines.append(pending[:limit])
        pending = pending[limit:]
    return lines, pending
