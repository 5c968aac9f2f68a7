"""--compress: permessage-deflate (RFC 7692) end to end, and its negotiation table.

The echo tests use the `websockets` client's own permessage-deflate; the
tests that must see the bytes on the wire (RSV1, window sizes, no context
takeover, zip bombs) use a raw socket and zlib.
"""

import base64
import json
import os
import socket
import struct
import sys
import zlib

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from helpers import echo_through_binary_cat, parametrize_fast_first, receive_all
from websocketd_py import compression, framing

TAIL = b"\x00\x00\xff\xff"


def deflate(data):
    """`data` as one message's payload, compressed the way a client would (TAIL stripped)."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def client_frame(first_byte, payload):
    """A masked client frame; the zero mask keeps the payload as it is."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", n)
    return bytes([first_byte]) + length + b"\x00\x00\x00\x00" + payload


class RawClient:
    """A WebSocket client on a bare socket: the handshake, then frames as they are on the wire."""

    def __init__(self, port, extensions=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           f"Sec-WebSocket-Version: 13\r\n{offer}\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        self.extensions = headers.get("Sec-WebSocket-Extensions")

    def _fill(self):
        chunk = self.sock.recv(65536)
        assert chunk, "connection closed"
        self.buffer += chunk

    def _take(self, n):
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self):
        """(first byte, payload) of the next frame from the server."""
        first, length = self._take(2)
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return first, self._take(length)

    def close_code(self):
        """The code of the server's close frame, skipping the data frames before it."""
        while True:
            first, payload = self.frame()
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def close(self):
        try:
            self.sock.sendall(client_frame(0x88, struct.pack("!H", 1000)))
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def inflate_in_small_steps(payload, window_bits):
    """Inflate a message 64 bytes per zlib call, so that zlib checks every distance
    against the window (within one call, it may reach back into that call's output)."""
    inflater = zlib.decompressobj(wbits=-window_bits)
    out, data = b"", payload + TAIL
    while True:
        piece = inflater.decompress(data, 64)
        out += piece
        data = inflater.unconsumed_tail
        if not data and len(piece) < 64:
            return out


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


# -- negotiation ---------------------------------------------------------------------

def test_negotiated_only_with_compress(server):
    srv = server("--compress", "cat")
    with connect(srv.url(), compression="deflate") as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send("squeezed")
        assert ws.recv(timeout=10) == "squeezed"
    with connect(srv.url(), compression=None) as ws:  # no offer: no extension, still works
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


@pytest.mark.parametrize("offer, response", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits=11"),
    ("permessage-deflate; client_max_window_bits=9",
     "permessage-deflate; client_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits=15",
     "permessage-deflate; client_max_window_bits=11"),
    ('permessage-deflate; client_max_window_bits="10"',
     "permessage-deflate; client_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=15",
     "permessage-deflate; server_max_window_bits=11"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=8", None),      # zlib cannot: declined
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover"),           # ... the next offer is taken
    ("permessage-deflate; server_max_window_bits", None),        # needs a value
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; client_max_window_bits=09", None),
    ("permessage-deflate; server_no_context_takeover=1", None),  # takes no value
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
    ("permessage-deflate; mystery=1", None),
    ("x-webkit-deflate-frame", None),
    ("", None),
])
def test_negotiation_table(offer, response):
    agreement = compression.negotiate(offer)
    assert (agreement and agreement.response) == response


def test_agreement_holds_the_windows_and_takeovers():
    agreement = compression.negotiate("permessage-deflate; server_max_window_bits=9; "
                                      "client_max_window_bits=10; server_no_context_takeover")
    assert (agreement.server_window_bits, agreement.client_window_bits) == (9, 10)
    assert agreement.server_no_context_takeover and not agreement.client_no_context_takeover
    default = compression.negotiate("permessage-deflate")
    assert (default.server_window_bits, default.client_window_bits) == (
        compression.SERVER_WINDOW_BITS, 15)  # a client not asked may use the RFC's 32 KiB


@parametrize_fast_first("offer", [
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=8, permessage-deflate",
])
def test_the_handshake_answers_with_the_negotiated_value(server, offer):
    srv = server("--compress", "cat")
    client = RawClient(srv.port, offer)
    try:
        assert client.extensions == compression.negotiate(offer).response
    finally:
        client.close()


@pytest.mark.parametrize("response", [
    "permessage-deflate",
    "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
])
def test_deflated_frames_decode_with_an_independent_client(response):
    """wsproto's client inflates what the Deflater makes of framing's frames, fragments included."""
    agreement = compression.negotiate(response)
    deflater = compression.Deflater(agreement.server_window_bits,
                                    agreement.server_no_context_takeover)
    framer = framing.LineFramer(fragment_size=1000)
    long_line = "".join(f"word{i} " for i in range(2000))
    wire = b"".join(deflater.compress_frames(frames) for frames in (
        framer.feed(b"short\n\nsame same same\n"), framer.feed(long_line[:3000].encode()),
        framer.feed(long_line[3000:].encode() + b"\nlast\n"),
        framing.frame(framing.OP_BINARY, bytes(5000))))
    extension = PerMessageDeflate()
    extension.finalize(response)
    client = FrameProtocol(client=True, extensions=[extension])
    client.receive_bytes(wire)
    received, current = [], []
    for frame in client.received_frames():
        current.append(frame.payload)
        if frame.message_finished:
            received.append((frame.opcode, current[0][:0].join(current)))
            current = []
    assert received == [(Opcode.TEXT, "short"), (Opcode.TEXT, ""), (Opcode.TEXT, "same same same"),
                        (Opcode.TEXT, long_line), (Opcode.TEXT, "last"),
                        (Opcode.BINARY, bytes(5000))]


# -- echo with compression on ---------------------------------------------------------

def test_text_echo_small_and_one_mebibyte(server):
    srv = server("--compress", "cat")
    big = base64.b64encode(os.urandom(786432)).decode()  # 1 MiB line, fragmented on the way back
    assert len(big) == 1024 * 1024
    with connect(srv.url(), compression="deflate", max_size=None) as ws:
        for text in ("a", "héllo wörld", "", "x" * 5000, big, "after"):
            ws.send(text)
            assert ws.recv(timeout=20) == text


@pytest.mark.slow
def test_binary_echo_small_and_one_mebibyte(server):
    srv = server("--compress", "--binary", "cat")
    with connect(srv.url(), compression="deflate", max_size=None) as ws:
        for payload in (b"\x00\x01\x02", os.urandom(1000), bytes(1024 * 1024),
                        os.urandom(1024 * 1024)):
            assert echo_through_binary_cat(ws, payload) == payload


# The offers of Autobahn's cases 13.1-13.7 (whose JSON payloads hold newlines, which
# text mode splits), plus a client that asks for a small window itself.
OFFERS = {
    "13.1": [{"client_no_context_takeover": True, "client_max_window_bits": True}],
    "13.2": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_no_context_takeover": True}],
    "13.3": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_max_window_bits": 9}],
    "13.4": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_max_window_bits": 15}],
    "13.5": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_no_context_takeover": True, "server_max_window_bits": 9}],
    "13.6": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_no_context_takeover": True, "server_max_window_bits": 15}],
    "13.7": [{"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_no_context_takeover": True, "server_max_window_bits": 9},
             {"client_no_context_takeover": True, "client_max_window_bits": True,
              "server_no_context_takeover": True},
             {"client_no_context_takeover": True, "client_max_window_bits": True}],
    "small client window": [{"client_max_window_bits": 9}],
    "bare": [{}],
}


@parametrize_fast_first("offers", OFFERS.values(), ids=OFFERS.keys())
def test_echo_under_each_parameter_set(server, offers):
    srv = server("--compress", "cat")
    factories = [ClientPerMessageDeflateFactory(**offer) for offer in offers]
    phrase = " ".join(f"item{i}" for i in range(300))  # repeats far beyond a 512-byte window
    with connect(srv.url(), extensions=factories, compression=None, max_size=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        for size in (16, 64, 256, 1024, 4096, 16384, 65536, 131072):
            text = (phrase * (size // len(phrase) + 1))[:size]
            for _ in range(3):
                ws.send(text)
                assert ws.recv(timeout=20) == text


@pytest.mark.slow
def test_passstderr_messages_are_compressed_too(server):
    srv = server("--compress", "--passstderr", "sh", "-c",
                 "echo out; echo err >&2; head -c 100000 /dev/zero | tr '\\0' y; echo")
    with connect(srv.url(), compression="deflate", max_size=None) as ws:
        messages, code, _ = receive_all(ws)
    parsed = [json.loads(message) for message in messages]
    assert {"stream": "stdout", "data": "out"} in parsed
    assert {"stream": "stderr", "data": "err"} in parsed
    long_line = "".join(m["data"] for m in parsed if set(m["data"]) == {"y"})
    assert long_line == "y" * 100000
    assert code == 1000


# -- what goes on the wire --------------------------------------------------------------

def test_server_frames_are_compressed_rsv1_on_the_first_frame_only(server):
    srv = server("--compress", sys.executable, "-c", "print('hello ' * 50); print('z' * 200000)")
    client = RawClient(srv.port, "permessage-deflate")
    try:
        inflater = zlib.decompressobj(wbits=-15)
        first, payload = client.frame()
        assert first == 0xC1  # FIN, RSV1, text
        assert inflater.decompress(payload + TAIL) == b"hello " * 50
        assert len(payload) < 50
        first, payload = client.frame()
        assert first == 0x41  # RSV1, text, not FIN: a long line is sent in fragments
        line = inflater.decompress(payload)
        while not first & 0x80:
            first, payload = client.frame()
            assert first & 0x7F == 0x00  # continuations: no RSV1
            line += inflater.decompress(payload + TAIL if first & 0x80 else payload)
        assert line == b"z" * 200000
        assert client.close_code() == 1000
    finally:
        client.close()


@pytest.mark.slow
def test_server_no_context_takeover_makes_each_message_stand_alone(server):
    program = (sys.executable, "-c", "print('same words again ' * 20)\n" * 2)
    for offer, stands_alone in (("permessage-deflate; server_no_context_takeover", True),
                                ("permessage-deflate", False)):
        srv = server("--compress", *program)
        client = RawClient(srv.port, offer)
        try:
            payloads = [client.frame()[1], client.frame()[1]]
        finally:
            client.close()
        fresh = zlib.decompressobj(wbits=-15)
        try:
            second = fresh.decompress(payloads[1] + TAIL)
        except zlib.error:
            second = None  # it points back into the first message
        assert (second == b"same words again " * 20) == stands_alone


@pytest.mark.slow
def test_server_max_window_bits_is_honoured(server):
    line = os.urandom(600).hex() * 2  # the repeat is 1200 bytes back: outside a 512-byte window
    srv = server("--compress", "echo", line)
    client = RawClient(srv.port, "permessage-deflate; server_max_window_bits=9")
    try:
        assert client.extensions == "permessage-deflate; server_max_window_bits=9"
        _, payload = client.frame()
    finally:
        client.close()
    assert inflate_in_small_steps(payload, 9) == line.encode()  # zlib.error if it reached further


# -- limits and errors ---------------------------------------------------------------

def test_zip_bomb_over_maxframesize_closes_1009_without_inflating_it(server):
    srv = server("--compress", "--binary", "cat")
    bomb = deflate(bytes(50 * 1024 * 1024))  # 50 MiB of zeros in about 50 KiB
    assert len(bomb) < 100_000
    before = peak_rss_kib(srv.proc.pid)
    client = RawClient(srv.port, "permessage-deflate")
    try:
        client.sock.sendall(client_frame(0xC2, bomb))
        code = client.close_code()
    finally:
        client.close()
    assert code == 1009
    assert peak_rss_kib(srv.proc.pid) - before < 16 * 1024


@pytest.mark.slow
def test_zip_bomb_without_size_limit_is_inflated_in_bounded_pieces(server):
    """--maxframesize=0: all 50 MiB reach the program, yet the server never holds them."""
    size = 50 * 1024 * 1024
    srv = server("--compress", "--binary", "--maxframesize=0", "sh", "-c",
                 f"head -c {size} | wc -c")
    bomb = deflate(bytes(size))
    before = peak_rss_kib(srv.proc.pid)
    client = RawClient(srv.port, "permessage-deflate")
    try:
        client.sock.sendall(client_frame(0xC2, bomb))
        first, payload = client.frame()
        assert first == 0xC2
        count = zlib.decompressobj(wbits=-15).decompress(payload + TAIL)
        assert count.strip() == str(size).encode()
        assert client.close_code() == 1000
    finally:
        client.close()
    assert peak_rss_kib(srv.proc.pid) - before < 16 * 1024


def test_invalid_utf8_inside_a_compressed_text_message_gets_1007(server):
    srv = server("--compress", "cat")
    client = RawClient(srv.port, "permessage-deflate")
    try:
        client.sock.sendall(client_frame(0xC1, deflate(b"ok \xff\xfe")))
        assert client.close_code() == 1007
    finally:
        client.close()


@pytest.mark.slow
def test_data_that_does_not_inflate_gets_1002(server):
    srv = server("--compress", "cat")
    client = RawClient(srv.port, "permessage-deflate")
    try:
        client.sock.sendall(client_frame(0xC1, b"\xff\xff\xff\xff"))
        assert client.close_code() == 1002
    finally:
        client.close()


@parametrize_fast_first("flags", [(), ("--compress",)])
def test_rsv1_without_negotiation_gets_1002(server, flags):
    srv = server(*flags, "cat")
    client = RawClient(srv.port)  # no offer
    try:
        assert client.extensions is None
        client.sock.sendall(client_frame(0xC1, deflate(b"hello")))
        assert client.close_code() == 1002
    finally:
        client.close()
