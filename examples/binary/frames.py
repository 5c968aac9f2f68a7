#!/usr/bin/env python3
# Binary example: sends a small generated PNG image, one frame per message.
# index.html shows each message as a picture, so you see an animation.
#
#   websocketd-py --port=8080 --binary --staticdir=examples/binary examples/binary/frames.py
#   websocketd-py --port=8080 --binary examples/binary/frames.py 5 0.1  # 5 frames, 0.1 s apart
#
# Arguments: COUNT (default 0 = forever) and DELAY in seconds (default 0.2).
#
# With --binary there are no "lines": whatever the server gets from one read
# of our stdout becomes one message. So each image is written with a single
# write and flushed at once, and is kept small (well under the 64 KiB a pipe
# holds) so it always arrives in one piece.
import math
import struct
import sys
import time
import zlib

SIZE = 32  # the image is SIZE x SIZE pixels; the page scales it up


def png(width, height, rows):
    """Build a PNG file (bytes) from rows of RGB bytes, using only the stdlib."""

    def chunk(kind, data):
        # Every PNG chunk: length, type, data, CRC of type+data.
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 for each row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def frame(t):
    """Frame number t: colourful moving waves."""
    rows = []
    for y in range(SIZE):
        row = bytearray()
        for x in range(SIZE):
            v = math.sin(x / 4 + t / 3) + math.sin(y / 5 - t / 4) + math.sin((x + y) / 6 + t / 5)
            row += bytes((int(127 + 120 * math.sin(v)),
                          int(127 + 120 * math.sin(v + 2)),
                          int(127 + 120 * math.sin(v + 4))))
        rows.append(bytes(row))
    return png(SIZE, SIZE, rows)


count = int(sys.argv[1]) if len(sys.argv) > 1 else 0
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2

out = sys.stdout.buffer  # the raw byte stream, not the text one
t = 0
while count == 0 or t < count:
    out.write(frame(t))  # one image, one write ...
    out.flush()          # ... sent right now, not kept in Python's buffer
    t += 1
    time.sleep(delay)
