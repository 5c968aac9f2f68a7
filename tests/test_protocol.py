"""The client frame parser (protocol.py), fed by an independent encoder: wsproto's client side."""

import os
import struct

import pytest
from wsproto.frame_protocol import FrameProtocol

from websocketd_py.protocol import CLOSE, DATA, FAIL, PING, PONG, ClientFrameParser, unmask


def client():
    return FrameProtocol(client=True, extensions=[])


def masked(first_byte, payload, length_field=None, mask=b"\x01\x02\x03\x04"):
    """A hand-made client frame, for the shapes wsproto refuses to produce."""
    n = len(payload)
    if length_field is None:
        length_field = bytes([0x80 | n]) if n < 126 else (
            bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536
            else bytes([0x80 | 127]) + struct.pack("!Q", n))
    return bytes([first_byte]) + length_field + mask + unmask(payload, mask)


def messages(events):
    """Whole messages (is_text, payload) reassembled from DATA events; other events as they are."""
    out, current = [], b""
    for event in events:
        if event[0] == DATA:
            current += event[2]
            if event[3]:
                out.append((event[1], current))
                current = b""
        else:
            out.append(event)
    return out


def feed_in_pieces(parser, data, size):
    events = []
    for i in range(0, len(data), size):
        events += parser.feed(data[i:i + size])
    return events


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 13, 4096, 1 << 20])
def test_messages_survive_any_split_of_the_stream(piece):
    fp = client()
    big = os.urandom(70000)
    stream = (fp.send_data("héllo", True) + fp.send_data(b"\x00bin", True) + fp.ping(b"p")
              + fp.send_data(big, True) + fp.send_data("", True) + fp.pong(b"q")
              + fp.close(1000, "bye"))
    events = messages(feed_in_pieces(ClientFrameParser(), stream, piece))
    assert events == [(True, "héllo".encode()), (False, b"\x00bin"), (PING, b"p"), (False, big),
                      (True, b""), (PONG, b"q"), (CLOSE, 1000, "bye")]


@pytest.mark.parametrize("length", [0, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding(length):
    payload = b"a" * length
    events = messages(ClientFrameParser().feed(client().send_data(payload, True)))
    assert events == [(False, payload)]


def test_fragmented_text_with_a_character_split_between_frames():
    text = "añb".encode()
    stream = masked(0x01, text[:2]) + masked(0x89, b"") + masked(0x80, text[2:])
    assert messages(ClientFrameParser().feed(stream)) == [(PING, b""), (True, text)]


def test_large_frame_is_streamed_not_buffered():
    data = client().send_data(b"x" * 1_000_000, True)
    parser = ClientFrameParser()
    events = parser.feed(data[:100_000])
    assert events and events[0][0] == DATA and not events[0][3]
    assert len(parser._pending) < 16


@pytest.mark.parametrize("frame, code", [
    (masked(0x81, b"\xff\xfe"), 1007),                        # invalid UTF-8
    (masked(0x81, b"ok \xed\xa0\x80"), 1007),                  # encoded surrogate
    (masked(0xC1, b"x"), 1002),                               # RSV1 without an extension
    (masked(0x83, b"x"), 1002),                               # reserved opcode 3
    (masked(0x8B, b""), 1002),                                # reserved control opcode 11
    (masked(0x09, b""), 1002),                                # fragmented ping
    (masked(0x89, b"p" * 126), 1002),                         # ping over 125 bytes
    (masked(0x80, b"x"), 1002),                               # continuation with no message
    (masked(0x01, b"a") + masked(0x81, b"b"), 1002),          # new message inside another
    (masked(0x88, b"\x03"), 1002),                            # 1-byte close payload
    (masked(0x88, struct.pack("!H", 1005)), 1002),            # close code never sent
    (masked(0x88, struct.pack("!H", 999)), 1002),
    (masked(0x88, struct.pack("!H", 2000)), 1002),
    (masked(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),  # close reason not UTF-8
    (bytes([0x81, 0x01]) + b"x", 1002),                       # unmasked client frame
])
def test_protocol_violations_fail_with_the_right_code(frame, code):
    events = ClientFrameParser().feed(frame)
    assert events[-1][0] == FAIL and events[-1][1] == code


def test_invalid_utf8_fails_fast_before_the_message_ends():
    parser = ClientFrameParser()
    assert parser.feed(masked(0x01, b"good"))[0][0] == DATA
    assert parser.feed(masked(0x00, b"\xc0\xaf"))[-1][:2] == (FAIL, 1007)


def test_size_limit_is_checked_from_the_header():
    parser = ClientFrameParser(max_message_size=10)
    header_only = client().send_data(b"y" * 11, True)[:6]
    assert parser.feed(header_only) == [(FAIL, 1009, "message over 10 bytes")]
    fp = client()
    fragmented = fp.send_data(b"a" * 6, False) + fp.send_data(b"b" * 6, True)
    events = ClientFrameParser(max_message_size=10).feed(fragmented)
    assert events[-1][:2] == (FAIL, 1009)


def test_valid_close_codes_and_empty_close():
    for code in (1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999):
        assert ClientFrameParser().feed(client().close(code, "r")) == [(CLOSE, code, "r")]
    assert ClientFrameParser().feed(masked(0x88, b"")) == [(CLOSE, 1005, "")]


def test_nothing_after_close():
    parser = ClientFrameParser()
    parser.feed(client().close(1000))
    assert parser.feed(client().send_data("late", True)) == []


def test_unmask_with_offset_matches_whole_unmask():
    payload, mask = os.urandom(37), b"\x11\x22\x33\x44"
    whole = unmask(payload, mask)
    assert unmask(payload[:5], mask) + unmask(payload[5:], mask, 5 % 4) == whole
