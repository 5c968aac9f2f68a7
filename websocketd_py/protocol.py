"""The WebSocket protocol without I/O: a `Connection` fed bytes, giving events and bytes to send.

`Connection` owns what one server-side connection needs: the parser of what
the client sends (`ClientFrameParser`), the framer of what we send
(`framing`), permessage-deflate both ways when agreed (`compression`) and
the close state. It never touches a socket: `websocket.WebSocketEndpoint`
reads and writes the bytes, under its one send lock.

The parser does only what a server needs from a client (masked frames,
permessage-deflate only if --compress negotiated it) in one loop over the
received bytes, and streams payloads: a large frame is passed on piece by
piece as it arrives, so memory stays bounded by what one read returns. A
compressed message is inflated as it arrives, at most INFLATE_BUDGET bytes
per `feed`: when more is left, the parser is `stalled` and the next `feed`
(with no new bytes) goes on from there.

Everything RFC 6455 asks a server to reject is a `FAIL` event with the close
code to send: 1002 for a protocol error (compressed data that does not
inflate included), 1007 for invalid UTF-8 in a text message (found as soon
as the bad bytes arrive), 1009 for a message over the size limit (found from
the frame header, before its payload is read; a compressed message is
checked as it is inflated, and may take up to twice the limit on the wire).
"""

import codecs
import struct
import zlib

from . import compression
from .framing import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RSV1,
                      frame)

# Event kinds returned by `ClientFrameParser.feed`.
DATA = "data"     # (DATA, is_text, payload bytes, ends_message)
PING = "ping"     # (PING, payload)
PONG = "pong"     # (PONG, payload)
CLOSE = "close"   # (CLOSE, code or None, reason)
FAIL = "fail"     # (FAIL, code, reason): the connection must be closed with this code

# Close codes (RFC 6455 §7.4.1) the server sends or records.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001          # server shutdown
POLICY_VIOLATION = 1008    # ping timeout, a --broadcast client too far behind
INTERNAL_ERROR = 1011      # the program failed: exit status not 0, or could not start
NO_STATUS = 1005
ABNORMAL_CLOSURE = 1006    # never sent: the connection ended without a close frame
#: A close frame's payload is at most 125 bytes, 2 of them the code.
_MAX_REASON_BYTES = 123

#: Binary frames up to this size are passed on whole (one write to the process, so
#: a message comes back through `cat` whole); larger ones, and text frames (whose
#: UTF-8 is checked as it arrives, to fail fast), are streamed as they arrive.
WHOLE_FRAME_LIMIT = 256 * 1024
#: At most this many inflated bytes per `feed`: what a zip bomb can cost before 1009.
INFLATE_BUDGET = WHOLE_FRAME_LIMIT

_FREE_CLOSE_CODES = range(3000, 5000)   # for libraries and applications
_DEFINED_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


class _Fail(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload, mask, offset=0):
    """XOR `payload` with the 4-byte `mask`, starting `offset` bytes into it.

    Short payloads: one big-integer XOR. Longer ones: each of the four byte
    lanes through a 256-byte XOR table (`bytes.translate`), about twice as
    fast at 64 KiB, where turning bytes into an integer and back dominates.
    """
    if not payload:
        return b""
    if offset:
        mask = mask[offset:] + mask[:offset]
    length = len(payload)
    if length < _TRANSLATE_FROM:
        key = (mask * (length // 4 + 1))[:length]
        return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    data = bytearray(payload)
    for lane in range(4):
        data[lane::4] = data[lane::4].translate(_XOR_TABLES[mask[lane]])
    return data


#: From this payload size on, `unmask` goes through the XOR tables (measured crossover).
_TRANSLATE_FROM = 512
#: _XOR_TABLES[k] maps each byte b to b ^ k.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def close_payload(payload):
    """(code, reason) from a close frame's payload; _Fail when RFC 6455 forbids it."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise _Fail(1002, "close frame with a 1-byte payload")
    code = struct.unpack("!H", payload[:2])[0]
    if code not in _DEFINED_CLOSE_CODES and code not in _FREE_CLOSE_CODES:
        raise _Fail(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(1007, "close reason is not valid UTF-8") from None
    return code, reason


class ClientFrameParser:
    """Turns the bytes a client sends into events; see the module docstring."""

    def __init__(self, max_message_size=0, inflater=None):
        self.max_message_size = max_message_size
        self.stalled = False           # inflated output is left: `feed(b"")` before reading more
        self._inflater = inflater      # a compression.Inflater when permessage-deflate is on
        self._inflating = False        # the current message is compressed
        self._inflated_size = 0
        self._budget = INFLATE_BUDGET  # inflated bytes this `feed` may still produce
        self._pending = b""            # bytes of an incomplete frame header or control frame
        self._remaining = 0            # payload bytes of the current data frame still to come
        self._mask = b""
        self._mask_offset = 0
        self._frame_fin = False
        self._message_opcode = None    # OP_TEXT or OP_BINARY while a message is in progress
        self._message_size = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._utf8_clean = True        # the decoder holds no partial character
        self._done = False             # a close frame or an error ended the stream

    def feed(self, data):
        """Events for `data`; nothing more after a CLOSE or FAIL event."""
        if self._done:
            return []
        if self._pending:
            data = self._pending + data
            self._pending = b""
        events = []
        try:
            self._budget = INFLATE_BUDGET
            if self.stalled:
                if self._drain(events):
                    self._pending = data
                    return events
            self._parse(data, events)
        except _Fail as failure:
            events.append((FAIL, failure.code, failure.reason))
            self._done = True
        return events

    def _parse(self, data, events):
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                chunk = unmask(data[pos:pos + take], self._mask, self._mask_offset)
                pos += take
                self._remaining -= take
                self._mask_offset = (self._mask_offset + take) % 4
                if self._inflating:
                    if self._inflate(events, chunk, self._frame_fin and not self._remaining):
                        self._pending = data[pos:]
                        return
                else:
                    self._deliver(events, chunk, self._frame_fin and not self._remaining)
                continue
            frame_start = pos
            header = self._header(data, pos, end)
            if header is None:
                self._pending = data[frame_start:]
                return
            pos, first, opcode, length, mask = header
            if opcode >= OP_CLOSE:
                if end - pos < length:  # control frames are handled whole
                    self._pending = data[frame_start:]
                    return
                payload = unmask(data[pos:pos + length], mask)
                pos += length
                if self._control(events, opcode, payload):
                    self._done = True
                    return
                continue
            self._check_data_frame(first, opcode, length)
            binary = (opcode or self._message_opcode) == OP_BINARY
            if binary and length <= WHOLE_FRAME_LIMIT and end - pos < length:
                self._pending = data[frame_start:]
                return
            self._start_frame(first, opcode, length, mask)
            if not length:
                if self._inflating:
                    if self._inflate(events, b"", self._frame_fin):
                        self._pending = data[pos:]
                        return
                else:
                    self._deliver(events, b"", self._frame_fin)

    def _header(self, data, pos, end):
        """(payload start, first byte, opcode, length, mask); None if the header is incomplete."""
        if end - pos < 2:
            return None
        first, second = data[pos], data[pos + 1]
        opcode = first & 0x0F
        if first & 0x70 and not (self._inflater and first & 0x70 == RSV1
                                 and opcode in (OP_TEXT, OP_BINARY)):
            raise _Fail(1002, "reserved bits set without an extension")
        if opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            raise _Fail(1002, f"unknown opcode {opcode}")
        if not second & 0x80:
            raise _Fail(1002, "client frames must be masked")
        length = second & 0x7F
        start = pos + 2
        if length == 126:
            if end - pos < 8:
                return None
            length = struct.unpack_from("!H", data, start)[0]
            start += 2
        elif length == 127:
            if end - pos < 14:
                return None
            length = struct.unpack_from("!Q", data, start)[0]
            if length >> 63:
                raise _Fail(1002, "frame length over 2**63")
            start += 8
        elif end - pos < 6:
            return None
        if opcode >= OP_CLOSE:
            if not first & 0x80:
                raise _Fail(1002, "fragmented control frame")
            if length > 125:
                raise _Fail(1002, "control frame over 125 bytes")
        return start + 4, first, opcode, length, data[start:start + 4]

    def _control(self, events, opcode, payload):
        """Handle a whole control frame; True when it ends the stream (close)."""
        if opcode == OP_PING:
            events.append((PING, payload))
        elif opcode == OP_PONG:
            events.append((PONG, payload))
        else:
            code, reason = close_payload(payload)
            events.append((CLOSE, code, reason))
            return True
        return False

    def _check_data_frame(self, first, opcode, length):
        """Fail a data frame that breaks fragmentation rules or the size limit (header only).

        A compressed message may take up to twice the limit on the wire:
        deflate makes incompressible data a little larger, and the inflated
        size is checked as it is inflated.
        """
        if opcode == OP_CONTINUATION:
            if self._message_opcode is None:
                raise _Fail(1002, "continuation frame without a message to continue")
            size = self._message_size + length
        else:
            if self._message_opcode is not None:
                raise _Fail(1002, "new message before the fragmented one ended")
            size = length
        if self.max_message_size and size > self.max_message_size:
            compressed = self._inflating if opcode == OP_CONTINUATION else first & RSV1
            if not compressed or size > 2 * self.max_message_size:
                raise _Fail(1009, f"message over {self.max_message_size} bytes")

    def _start_frame(self, first, opcode, length, mask):
        if opcode != OP_CONTINUATION:
            self._message_opcode = opcode
            self._message_size = 0
            self._inflating = first & RSV1 != 0
            self._inflated_size = 0
        self._message_size += length
        self._remaining, self._mask, self._mask_offset = length, mask, 0
        self._frame_fin = first > 0x7F

    def _inflate(self, events, chunk, ends_message):
        """Inflate a compressed message's `chunk`; True if output is left for the next feed."""
        self._inflater.feed(chunk, ends_message)
        return self._drain(events)

    def _drain(self, events):
        """DATA events from the inflater, within this feed's budget; True if output is left."""
        try:
            chunk = self._inflater.read(self._budget)
        except zlib.error:
            raise _Fail(1002, "invalid compressed data") from None
        self._budget -= len(chunk)  # stays > 0 unless output is left
        self._inflated_size += len(chunk)
        if self.max_message_size and self._inflated_size > self.max_message_size:
            raise _Fail(1009, f"message over {self.max_message_size} bytes once inflated")
        self._deliver(events, chunk, self._inflater.message_done)
        self.stalled = self._inflater.pending
        return self.stalled

    def _deliver(self, events, chunk, ends_message):
        is_text = self._message_opcode == OP_TEXT
        if is_text and not (self._utf8_clean and chunk.isascii()):
            try:
                self._utf8.decode(chunk, ends_message)
            except UnicodeDecodeError:
                raise _Fail(1007, "invalid UTF-8 in a text message") from None
            self._utf8_clean = not self._utf8.getstate()[0]
        if ends_message:
            self._message_opcode = None
            self._utf8.reset()
            self._utf8_clean = True
        if chunk or ends_message:
            events.append((DATA, is_text, chunk, ends_message))



class Connection:
    """One server-side WebSocket connection, without I/O.

    `receive_data(bytes)` gives the events of what the client sent (see
    `ClientFrameParser`); `data`, `pong`, `ping` and `close` give the bytes to
    send, and update the close state, so the caller calls them under the lock
    that orders its sends. `close_code` is the first close code sent or
    received, ABNORMAL_CLOSURE once the connection broke without one.
    """

    def __init__(self, max_message_size=0, agreement=None):
        inflater = deflater = None
        if agreement is not None:
            deflater = compression.Deflater(agreement.server_window_bits,
                                            agreement.server_no_context_takeover)
            inflater = compression.Inflater(agreement.client_window_bits,
                                            agreement.client_no_context_takeover)
        self._parser = ClientFrameParser(max_message_size, inflater)
        self._deflater = deflater
        self.close_sent = False
        self.close_code = None

    @property
    def input_pending(self):
        """Inflated data is left: `receive_data(b"")` goes on before more is read."""
        return self._parser.stalled

    def receive_data(self, data):
        """The events of `data` (see the module docstring); nothing after a CLOSE or FAIL."""
        events = self._parser.feed(data)
        for event in events:
            if event[0] is CLOSE and self.close_code is None:
                self.close_code = event[1]
        return events

    def receive_eof(self):
        """The client's side of the connection ended (or broke)."""
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE

    def data(self, frames):
        """Ready-made data frames (`framing`'s) as they go out, compressed if agreed;
        None once our close frame was sent."""
        if self.close_sent:
            return None
        return self._deflater.compress_frames(frames) if self._deflater else frames

    def pong(self, payload):
        """The answer to a ping; nothing after our close frame."""
        return b"" if self.close_sent else frame(OP_PONG, payload)

    def ping(self):
        return b"" if self.close_sent else frame(OP_PING, b"")

    def close(self, code, reason=""):
        """Our close frame, once: later calls give nothing."""
        if self.close_sent:
            return b""
        self.close_sent = True
        if self.close_code is None:
            self.close_code = code
        return frame(OP_CLOSE, _close_payload(code, reason))


def _close_payload(code, reason):
    """A close frame's payload: the code and at most 123 bytes of reason (1005: nothing)."""
    if code == NO_STATUS:
        return b""
    reason = (reason or "").encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
    return struct.pack("!H", code) + reason.encode("utf-8")
