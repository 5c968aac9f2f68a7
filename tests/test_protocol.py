"""The client frame parser (protocol.py), fed by an independent encoder: wsproto's client side."""

import os
import struct
import zlib

import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from websocketd_py.compression import Inflater
from websocketd_py.protocol import (CLOSE, DATA, FAIL, INFLATE_BUDGET, PING, PONG,
                                    ClientFrameParser, unmask)


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


@pytest.mark.parametrize("length", [1, 3, 511, 512, 513, 70001])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_unmask_is_xor_with_the_repeated_mask(length, offset):
    """Both ways of unmasking (integer XOR below 512 bytes, XOR tables from there) are exact."""
    payload, mask = os.urandom(length), os.urandom(4)
    expected = bytes(byte ^ mask[(offset + i) % 4] for i, byte in enumerate(payload))
    assert unmask(payload, mask, offset) == expected


# -- permessage-deflate (an Inflater is given only when --compress negotiated it) ------------

def deflating_client(response="permessage-deflate"):
    """wsproto's client side with permessage-deflate agreed: an independent compressing encoder."""
    extension = PerMessageDeflate()
    extension.finalize(response)
    return FrameProtocol(client=True, extensions=[extension])


def inflating_parser(max_message_size=0, window_bits=15, no_context_takeover=False):
    return ClientFrameParser(max_message_size, Inflater(window_bits, no_context_takeover))


def feed_until_settled(parser, data):
    """Events for `data`, feeding nothing more while the parser is stalled (as `receive` does)."""
    events = parser.feed(data)
    while parser.stalled:
        events += parser.feed(b"")
    return events


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 13, 4096, 1 << 20])
def test_compressed_messages_survive_any_split_of_the_stream(piece):
    fp = deflating_client()
    big = os.urandom(70000)
    text = "héllo " * 2000
    stream = (fp.send_data(text, True) + fp.send_data(b"\x00bin", True) + fp.ping(b"p")
              + fp.send_data(big, False) + fp.send_data(b"tail", True) + fp.send_data("", True)
              + fp.send_data(text, True) + fp.close(1000, "bye"))
    parser = inflating_parser()
    events = []
    for i in range(0, len(stream), piece):
        events += feed_until_settled(parser, stream[i:i + piece])
    assert messages(events) == [(True, text.encode()), (False, b"\x00bin"), (PING, b"p"),
                                (False, big + b"tail"), (True, b""), (True, text.encode()),
                                (CLOSE, 1000, "bye")]


def test_uncompressed_messages_still_pass_when_compression_is_agreed():
    stream = client().send_data("plain", True) + deflating_client().send_data("packed", True)
    assert messages(inflating_parser().feed(stream)) == [(True, b"plain"), (True, b"packed")]


@pytest.mark.parametrize("frame", [
    masked(0x41, b"\x02\x00") + masked(0xC0, b"\x02\x00"),  # RSV1 on a continuation frame
    masked(0x40, b"\x02\x00"),                              # ... on a lone continuation
    masked(0xC9, b""),                                      # ... on a ping
    masked(0xC8, b""),                                      # ... on a close
    masked(0xA1, b"x"),                                     # RSV2
    masked(0x91, b"x"),                                     # RSV3
    masked(0xE1, b"x"),                                     # RSV1 with RSV2
])
def test_reserved_bits_beyond_rsv1_on_a_first_frame_fail_1002(frame):
    assert inflating_parser().feed(frame)[-1][:2] == (FAIL, 1002)


def test_data_that_does_not_inflate_fails_1002():
    assert inflating_parser().feed(masked(0xC1, b"\xff\xff\xff\xff"))[-1][:2] == (FAIL, 1002)


def test_invalid_utf8_inside_a_compressed_text_message_fails_1007():
    compressor = zlib.compressobj(wbits=-15)
    bad = (compressor.compress(b"ok \xff") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert inflating_parser().feed(masked(0xC1, bad))[-1][:2] == (FAIL, 1007)


def test_a_zip_bomb_is_inflated_a_bounded_piece_per_feed():
    size = 20 * INFLATE_BUDGET
    bomb = deflating_client().send_data(bytes(size), True)
    parser = inflating_parser()
    events = parser.feed(bomb)
    total = 0
    while True:
        assert sum(len(event[2]) for event in events) <= INFLATE_BUDGET
        total += sum(len(event[2]) for event in events)
        if not parser.stalled:
            break
        events = parser.feed(b"")
    assert total == size and events[-1][3]  # everything, and the message ended once


def test_inflated_size_over_the_limit_fails_1009_before_it_is_all_inflated():
    bomb = deflating_client().send_data(bytes(100 * INFLATE_BUDGET), True)
    assert len(bomb) < 200_000  # within twice the limit on the wire
    events = inflating_parser(max_message_size=100_000).feed(bomb)
    assert events == [(FAIL, 1009, "message over 100000 bytes once inflated")]


def test_compressed_size_may_exceed_the_limit_a_little_but_not_twice():
    incompressible = os.urandom(10000)
    frame = deflating_client().send_data(incompressible, True)
    assert len(frame) - 8 > 10000  # the payload, without the 8-byte header
    assert messages(inflating_parser(max_message_size=10000).feed(frame)) == [
        (False, incompressible)]
    empty_blocks = b"\x00\x00\x00\xff\xff" * 50  # valid deflate that inflates to nothing
    assert messages(inflating_parser(max_message_size=125).feed(masked(0xC2, empty_blocks))) == [
        (False, b"")]
    assert inflating_parser(max_message_size=124).feed(masked(0xC2, empty_blocks))[-1][:2] == (
        FAIL, 1009)  # 250 bytes on the wire: over twice the limit


def test_client_no_context_takeover_inflates_each_message_afresh():
    fp = deflating_client("permessage-deflate; client_no_context_takeover")
    stream = fp.send_data("again and again", True) + fp.send_data("again and again", True)
    parser = inflating_parser(no_context_takeover=True)
    assert messages(parser.feed(stream)) == [(True, b"again and again")] * 2
    assert parser._inflater._zlib is None  # nothing kept between messages


def test_a_message_ending_with_a_final_deflate_block_starts_a_fresh_context():
    finished = [zlib.compressobj(wbits=-15) for _ in range(2)]
    stream = b"".join(masked(0xC1, c.compress(b"one " * 10) + c.flush()) for c in finished)
    assert messages(inflating_parser().feed(stream)) == [(True, b"one " * 10)] * 2
    c = zlib.compressobj(wbits=-15)
    after_final = masked(0xC1, c.compress(b"x") + c.flush() + b"junk")
    assert inflating_parser().feed(after_final)[-1][:2] == (FAIL, 1002)


# -- protocol.Connection: the close state and what goes out -------------------------------

def test_connection_close_is_sent_once_and_records_the_first_code():
    from websocketd_py.protocol import Connection
    connection = Connection()
    assert connection.close_code is None
    assert connection.close(1000, "bye") == b"\x88\x05\x03\xe8bye"
    assert connection.close(1011, "again") == b""
    assert connection.close_code == 1000
    assert (connection.data(b"\x81\x00"), connection.pong(b"x"), connection.ping()) == (
        None, b"", b"")


def test_connection_records_a_clients_close_and_a_broken_stream():
    from websocketd_py.protocol import Connection
    connection = Connection()
    events = connection.receive_data(masked(0x88, struct.pack("!H", 1001) + b"gone"))
    assert events == [(CLOSE, 1001, "gone")] and connection.close_code == 1001
    assert connection.close(1001, "gone") == b"\x88\x06\x03\xe9gone"
    broken = Connection()
    broken.receive_eof()
    assert broken.close_code == 1006


def test_connection_compresses_what_it_sends_when_deflate_was_agreed():
    from websocketd_py.compression import negotiate
    from websocketd_py.framing import frame
    from websocketd_py.protocol import Connection
    agreement = negotiate("permessage-deflate")
    out = Connection(agreement=agreement).data(frame(0x1, b"hello hello hello"))
    assert out[0] == 0xC1  # FIN, RSV1 (compressed), text
    inflated = zlib.decompressobj(-15).decompress(out[2:] + b"\x00\x00\xff\xff")
    assert inflated == b"hello hello hello"
    assert Connection().data(b"\x81\x02hi") == b"\x81\x02hi"
