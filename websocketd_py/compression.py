"""permessage-deflate (RFC 7692) for --compress: negotiation, and bounded inflate/deflate.

Negotiation (`negotiate`) accepts the first offer it can honour and declines
the others: an unknown or repeated parameter, a bad value, or
server_max_window_bits=8, which zlib cannot produce for raw deflate. Our
deflater uses a small window, 2**SERVER_WINDOW_BITS bytes (smaller if the
client asks), and a small zlib memLevel; the client is asked for a window of
2**CLIENT_WINDOW_BITS when its offer has client_max_window_bits (browsers'
offers do), otherwise it may use the RFC's default 32 KiB, which we must then
keep to inflate its messages. No-context-takeover is honoured both ways.

Memory per connection (measured with tracemalloc, which sees zlib's
allocations): the deflater 22 KiB, against 263 KiB for zlib's defaults; the
inflater, made at the client's first compressed message, 9 KiB with a 2 KiB
client window and 39 KiB with a 32 KiB one, freed after each message under
client_no_context_takeover. Over 200 real connections echoing 1.8 KB
messages, the server's RSS grew by about 130 KiB per connection with
compression and 110 KiB without. For small JSON/log lines, the compressed
size is within 3% (JSON) and 20% (log lines) of zlib's defaults.

A compressed message cannot blow past --maxframesize: the parser inflates a
bounded amount per call and fails with 1009 as soon as the inflated size of a
message passes the limit, so a zip bomb never costs more than that bounded
amount (see `protocol.INFLATE_BUDGET`).
"""

import re
import struct
import zlib
from dataclasses import dataclass

from .framing import RSV1, frame_header

EXTENSION = "permessage-deflate"
#: Our deflater's LZ77 window, 2**N bytes (RFC 7692 allows 9..15; zlib's default is 15).
SERVER_WINDOW_BITS = 11
#: The window asked of a client whose offer has client_max_window_bits.
CLIENT_WINDOW_BITS = 11
#: zlib's memLevel for our deflater: its hash table is 2**(N+9) bytes (default 8: 128 KiB).
MEM_LEVEL = 4
#: What a sender strips from the end of each message and the receiver puts back (RFC 7692 7.2.1).
TAIL = b"\x00\x00\xff\xff"

_WINDOW_BITS_VALUE = re.compile(r"(?:[89]|1[0-5])\Z")  # 8..15, no leading zero
_NO_VALUE = object()


@dataclass(frozen=True)
class Agreement:
    """The accepted offer: each side's window and context takeover, and the response header."""

    server_window_bits: int
    client_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    response: str     # the Sec-WebSocket-Extensions value to send back


def negotiate(header):
    """The Agreement for the first acceptable offer in a Sec-WebSocket-Extensions value, or None."""
    for offer in header.split(","):
        name, *params = [part.strip() for part in offer.split(";")]
        if name == EXTENSION:
            agreement = _accept(params)
            if agreement is not None:
                return agreement
    return None


def _accept(params):
    """An Agreement for one offer's parameters, or None to decline it (RFC 7692 7.1)."""
    offered = {}
    for param in params:
        key, equals, value = param.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key in offered:
            return None
        offered[key] = value if equals else _NO_VALUE
    response = [EXTENSION]
    server_bits, client_bits = SERVER_WINDOW_BITS, 15
    for key, value in offered.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not _NO_VALUE:
                return None
            response.append(key)
        elif key == "server_max_window_bits":
            if value is _NO_VALUE or not _WINDOW_BITS_VALUE.match(value) or value == "8":
                return None  # zlib makes no raw deflate stream with a 256-byte window
            server_bits = min(int(value), SERVER_WINDOW_BITS)
            response.append(f"server_max_window_bits={server_bits}")
        elif key == "client_max_window_bits":
            if value is not _NO_VALUE and not _WINDOW_BITS_VALUE.match(value):
                return None
            client_bits = CLIENT_WINDOW_BITS if value is _NO_VALUE else min(
                int(value), CLIENT_WINDOW_BITS)
            response.append(f"client_max_window_bits={client_bits}")
        else:
            return None
    return Agreement(server_bits, client_bits, "server_no_context_takeover" in offered,
                     "client_no_context_takeover" in offered, "; ".join(response))


class Inflater:
    """Inflates the client's compressed messages, at most `max_length` bytes per `read`.

    `feed` queues a message's payload bytes; `read` is called until `pending`
    is false before more is fed, so zlib never holds more than one piece of
    input and one bounded piece of output.
    """

    def __init__(self, window_bits, no_context_takeover):
        # zlib's raw deflate has no 256-byte window: a client asked for 8 uses 9 (RFC 7692 7.1.2.2)
        self.window_bits = max(window_bits, 9)
        self.no_context_takeover = no_context_takeover
        self.pending = False        # `read` has more output to give
        self.message_done = False   # the last `read` ended the message
        self._zlib = None           # made on first use; dropped after each message without takeover
        self._input = b""
        self._message_ends = False

    def feed(self, data, ends_message):
        """Queue compressed payload bytes; `ends_message` when they end the message."""
        if self._zlib is None:
            self._zlib = zlib.decompressobj(wbits=-self.window_bits)
        self._input = data + TAIL if ends_message else data
        self._message_ends = ends_message
        self.pending = True

    def read(self, max_length):
        """Up to `max_length` (> 0) inflated bytes; zlib.error for data that is not deflate."""
        inflater = self._zlib
        output = inflater.decompress(self._input, max_length)
        self._input = inflater.unconsumed_tail
        self.pending = bool(self._input) or len(output) == max_length
        self.message_done = self._message_ends and not self.pending
        if self.message_done:
            if inflater.eof:  # the message ended with a final block (BFINAL): start afresh
                if inflater.unused_data != TAIL:
                    raise zlib.error("data after the final deflate block")
                self._zlib = None
            elif self.no_context_takeover:
                self._zlib = None
        return output


class Deflater:
    """Compresses our own outgoing data frames, message by message (one compression context)."""

    def __init__(self, window_bits, no_context_takeover):
        self._zlib = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits,
                                      MEM_LEVEL)
        # Z_FULL_FLUSH at a message's end forgets the context, as a fresh compressor would
        self._end_flush = zlib.Z_FULL_FLUSH if no_context_takeover else zlib.Z_SYNC_FLUSH

    def compress_frames(self, frames):
        """The same frames compressed: `frames` holds whole unmasked data frames (framing's)."""
        view = memoryview(frames)
        out = []
        pos, end = 0, len(frames)
        while pos < end:
            first, length = frames[pos], frames[pos + 1] & 0x7F
            pos += 2
            if length == 126:
                length = struct.unpack_from("!H", frames, pos)[0]
                pos += 2
            elif length == 127:
                length = struct.unpack_from("!Q", frames, pos)[0]
                pos += 8
            fin, opcode = first & 0x80, first & 0x0F
            payload = self._zlib.compress(view[pos:pos + length]) + self._zlib.flush(
                self._end_flush if fin else zlib.Z_SYNC_FLUSH)
            pos += length
            if fin:
                payload = payload[:-4]  # the TAIL the client puts back
            header = frame_header(opcode, len(payload), bool(fin))
            if opcode:  # the first frame of a message says it is compressed
                header = bytes((header[0] | RSV1,)) + header[1:]
            out.append(header)
            out.append(payload)
        return b"".join(out)
