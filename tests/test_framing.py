"""Unit tests of websocketd_py/framing.py (SPEC §2, text mode and --passstderr).

Everything framing.py produces is decoded by two independent parsers, never by
framing.py itself:

- `websockets.frames.Frame.parse` checks each frame (unmasked, RSV bits, length),
  and each frame's bytes must equal websockets' own canonical serialisation,
  which catches a non-minimal or wrong length encoding at 125/126/65535/65536;
  every `feed()`/`finish()` result must hold whole frames only;
- wsproto's `FrameProtocol(client=True)` receives the whole stream as a browser
  would: it rejects invalid UTF-8 in text messages, a continuation frame with no
  message started, and a new message started while another is fragmented.
"""

import json
import random

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from wsproto.frame_protocol import FrameProtocol
from wsproto.frame_protocol import Opcode as WsprotoOpcode

from websocketd_py import framing
from websocketd_py.framing import LineFramer, frame, frame_header, split_lines

DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


# -- independent decoding ------------------------------------------------------------


def parse_frames(data):
    """Frames in `data` (websockets' parser); `data` must be whole, canonical frames."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    pos = 0
    while pos < len(data):
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
        try:
            while True:
                next(parser)
        except StopIteration as stop:
            parsed = stop.value
        assert parsed.opcode in DATA_OPCODES
        assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)
        canonical = parsed.serialize(mask=False, extensions=[])
        assert data[pos:pos + len(canonical)] == canonical, "non-canonical frame encoding"
        pos += len(canonical)
        frames.append(parsed)
    return frames


class Client:
    """Receives a server's frames as a client would, output by output."""

    def __init__(self):
        self.wsproto = FrameProtocol(client=True, extensions=[])
        self.frames = []        # websockets Frame objects, in order
        self.messages = []      # str (text) or bytes (binary), complete messages
        self.fragmented = []    # messages that came in more than one frame
        self._parts = []
        self._frames_in_message = 0
        self._in_message = False

    def receive(self, out):
        assert isinstance(out, bytes)
        frames = parse_frames(out)
        for parsed in frames:  # fragmentation rules, checked here as well as by wsproto
            if parsed.opcode is Opcode.CONT:
                assert self._in_message, "continuation frame with no message started"
            else:
                assert not self._in_message, "new message inside a fragmented one"
            self._in_message = not parsed.fin
        self.frames += frames
        self.wsproto.receive_bytes(out)
        for event in self.wsproto.received_frames():
            assert event.opcode in (WsprotoOpcode.TEXT, WsprotoOpcode.BINARY)
            self._parts.append(event.payload)
            self._frames_in_message += 1
            if event.message_finished:
                joined = ("" if isinstance(event.payload, str) else b"").join(self._parts)
                self.messages.append(joined)
                if self._frames_in_message > 1:
                    self.fragmented.append(joined)
                self._parts = []
                self._frames_in_message = 0

    def complete(self):
        assert not self._in_message and not self._parts, "a message was left unfinished"
        return self.messages


def run(chunks, finish=True, **framer_args):
    """Feed `chunks` to a new LineFramer, then finish(); the client that received it all."""
    framer = LineFramer(**framer_args)
    client = Client()
    for chunk in chunks:
        client.receive(framer.feed(chunk))
    if finish:
        client.receive(framer.finish())
        client.complete()
    return client


def messages(chunks, **framer_args):
    return run(chunks, **framer_args).messages


def json_data(client, stream="stdout"):
    """The `data` of each message of a --passstderr stream, checking each is whole JSON."""
    for parsed in client.frames:
        assert parsed.opcode is Opcode.TEXT and parsed.fin, "passstderr messages must not be fragmented"
    data = []
    for message in client.complete():
        assert isinstance(message, str)
        assert message.startswith('{"stream":%s,"data":"' % json.dumps(stream))
        assert not any(ord(c) < 0x20 for c in message), "raw control character in JSON"
        decoded = json.loads(message)  # strict: control characters must be escaped
        assert set(decoded) == {"stream", "data"} and decoded["stream"] == stream
        data.append(decoded["data"])
    return data


def expected_lines(data):
    """Reference model of SPEC §2 text mode for a whole output.

    Only a \\r right before a \\n goes; an unterminated last line keeps its own.
    """
    *lines, last = data.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if last:
        lines.append(last)
    return [line.decode("utf-8", "replace") for line in lines]


def splits(data, pieces):
    """Every way of cutting `data` into `pieces` consecutive chunks (empty chunks allowed)."""
    def cuts(start, left):
        if left == 1:
            yield [data[start:]]
            return
        for end in range(start, len(data) + 1):
            for rest in cuts(end, left - 1):
                yield [data[start:end]] + rest
    return cuts(0, pieces)


# -- line rules ------------------------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (b"hello\n", ["hello"]),
    (b"a\nb\nc\n", ["a", "b", "c"]),
    (b"a\r\nb\r\n", ["a", "b"]),
    (b"a\r\r\n", ["a\r"]),                   # only one \r is removed
    (b"\r\r\n", ["\r"]),
    (b"a\rb\n", ["a\rb"]),                   # a \r inside a line stays
    (b"\r\n", [""]),
    (b"\n", [""]),
    (b"\n\n\n", ["", "", ""]),               # empty lines are empty messages
    (b"a\n\nb\n", ["a", "", "b"]),
    (b"a\n\r\n\nb\n", ["a", "", "", "b"]),
    (b"tab\there \x00 nul\n", ["tab\there \x00 nul"]),
    (b"unterminated", ["unterminated"]),     # the last line comes with finish()
    (b"a\nlast", ["a", "last"]),
    (b"", []),
])
def test_line_rules(data, expected):
    assert messages([data]) == expected


def test_no_message_for_the_empty_rest_after_a_final_newline():
    framer = LineFramer()
    client = Client()
    client.receive(framer.feed(b"one\ntwo\n"))
    assert client.messages == ["one", "two"]
    assert framer.finish() == b""
    assert framer.finish() == b""


def test_finish_with_nothing_fed():
    assert LineFramer().finish() == b""
    assert LineFramer(stream="stdout").finish() == b""


def test_incomplete_line_is_held_until_newline_or_finish():
    framer = LineFramer()
    assert framer.feed(b"par") == b""
    assert framer.feed(b"tial") == b""
    assert framer.feed(b"") == b""
    client = Client()
    client.receive(framer.finish())
    assert client.complete() == ["partial"]


def test_one_feed_with_many_lines_is_one_buffer_of_whole_frames():
    framer = LineFramer()
    out = framer.feed(b"a\nbb\nccc\ndd")
    frames = parse_frames(out)
    assert [(f.opcode, f.fin, f.data) for f in frames] == [
        (Opcode.TEXT, True, b"a"), (Opcode.TEXT, True, b"bb"), (Opcode.TEXT, True, b"ccc")]
    assert [(f.opcode, f.data) for f in parse_frames(framer.finish())] == [(Opcode.TEXT, b"dd")]


def test_crlf_split_across_two_feeds():
    framer = LineFramer()
    client = Client()
    client.receive(framer.feed(b"abc\r"))
    assert client.messages == []
    client.receive(framer.feed(b"\ndef\r"))
    client.receive(framer.feed(b"\n"))
    client.receive(framer.finish())
    assert client.complete() == ["abc", "def"]


SAMPLE = b"ab\r\n\r\n\n\xc3\xa9x\r\r\ny\xe2\x82\xacz\xff\nlast"


def test_every_split_point_in_two_feeds():
    expected = expected_lines(SAMPLE)
    for chunks in splits(SAMPLE, 2):
        assert messages(chunks) == expected, chunks


def test_every_split_point_in_three_feeds():
    data = b"a\r\n\xe2\x82\xac\r\r\n\nb\xf0\x9f\x98\x80c"
    expected = expected_lines(data)
    for chunks in splits(data, 3):
        assert messages(chunks) == expected, chunks


def test_byte_by_byte():
    assert messages([bytes([b]) for b in SAMPLE]) == expected_lines(SAMPLE)
    assert messages([bytes([b]) for b in SAMPLE + b"\n"]) == expected_lines(SAMPLE + b"\n")


# -- payload lengths -------------------------------------------------------------------


LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 65537, 70000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("fragment_size", [65536, 1 << 20])
def test_text_payload_lengths(length, fragment_size):
    line = bytes(random.Random(length).choice(b"abcdefghij") for _ in range(length))
    client = run([line + b"\n"], fragment_size=fragment_size)
    assert client.complete() == [line.decode()]
    # A whole line in one read is one unfragmented frame, whatever its size.
    assert [(f.opcode, f.fin, len(f.data)) for f in client.frames] == [(Opcode.TEXT, True, length)]


@pytest.mark.parametrize("length", [n for n in LENGTHS if n >= 2])
def test_text_payload_lengths_with_crlf_and_multibyte(length):
    # `length` bytes of payload ending in a 2-byte character, sent with \r\n
    line = b"x" * (length - 2) + "é".encode()
    client = run([line + b"\r\n", line], fragment_size=1 << 20)
    assert client.complete() == [line.decode(), line.decode()]
    assert [len(f.data) for f in client.frames] == [length, length]


@pytest.mark.parametrize("length", LENGTHS + [(1 << 16) * 3 + 5])
@pytest.mark.parametrize("opcode", [framing.OP_BINARY, framing.OP_TEXT, framing.OP_CONTINUATION])
@pytest.mark.parametrize("fin", [True, False])
def test_frame_and_frame_header(length, opcode, fin):
    payload = bytes(i % 251 for i in range(length))
    built = frame(opcode, payload, fin=fin)
    header = frame_header(opcode, length, fin)
    assert built == header + payload
    parsed, = parse_frames(built)
    assert (parsed.opcode, parsed.fin, parsed.data) == (Opcode(opcode), fin, payload)
    assert len(header) == (2 if length < 126 else 4 if length < 65536 else 10)


def test_frame_header_default_fin_and_huge_length():
    assert frame_header(framing.OP_BINARY, 5) == b"\x82\x05"
    assert frame_header(framing.OP_BINARY, 2**32 + 1) == b"\x82\x7f" + (2**32 + 1).to_bytes(8, "big")
    assert frame_header(framing.OP_TEXT, 2**63 - 1, fin=False) == b"\x01\x7f" + (2**63 - 1).to_bytes(8, "big")


def test_binary_frames_through_a_client():
    client = Client()
    payloads = [b"", b"\xff\xfe\x00", bytes(range(256)) * 300]
    for payload in payloads:
        client.receive(frame(framing.OP_BINARY, payload))
    client.receive(frame(framing.OP_BINARY, b"ab", fin=False)
                   + frame(framing.OP_CONTINUATION, b"cd", fin=False)
                   + frame(framing.OP_CONTINUATION, b"ef"))
    assert client.complete() == payloads + [b"abcdef"]


# -- UTF-8 repair ----------------------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (b"\xff\n", ["\ufffd"]),
    (b"a\xc3(b\n", ["a\ufffd(b"]),                    # a lead byte followed by ASCII
    (b"\xc0\xaf\n", ["\ufffd\ufffd"]),                 # overlong encoding
    (b"\xed\xa0\x80\n", ["\ufffd\ufffd\ufffd"]),         # an encoded surrogate
    (b"\xf4\x90\x80\x80\n", ["\ufffd" * 4]),             # above U+10FFFF
    (b"\x80\x80x\xbf\n", ["\ufffd\ufffdx\ufffd"]),        # lone continuation bytes
    (b"ok\n\xe2\x82\nalso ok \xe2\x82\xac\n\xf0\x9f\x98\n\xf0\x9f\x98\x80\n",
     ["ok", "\ufffd", "also ok \u20ac", "\ufffd", "\U0001f600"]),
    (b"valid \xc3\xa9\nbad \xfe\nvalid again\n", ["valid \xe9", "bad \ufffd", "valid again"]),
    (b"truncated at EOF \xe2\x82", ["truncated at EOF \ufffd"]),
    (b"\xff", ["\ufffd"]),
])
def test_invalid_utf8_is_replaced(data, expected):
    assert expected == expected_lines(data)  # the reference model agrees
    assert messages([data]) == expected
    for chunks in splits(data, 2):
        assert messages(chunks) == expected, chunks


def test_valid_multibyte_split_across_feeds_is_not_replaced():
    data = "é€😀\n".encode() + "😀x€\n".encode()
    for pieces in (2, 3):
        for chunks in splits(data, pieces):
            assert messages(chunks) == ["é€😀", "😀x€"], chunks


def test_multibyte_split_then_invalid_in_the_same_chunk():
    assert messages([b"\xe2\x82", b"\xac\xff\n\xc3", b"\xa9\n"]) == ["€\ufffd", "é"]


# -- long lines: fragmented messages ----------------------------------------------------


def test_long_line_is_a_fragmented_message():
    client = run([b"a" * 25, b"b" * 5, b"c" * 20, b"d\n", b"next\n"], fragment_size=10)
    assert client.complete() == ["a" * 25 + "b" * 5 + "c" * 20 + "d", "next"]
    ops = [(f.opcode, f.fin) for f in client.frames]
    assert ops[0] == (Opcode.TEXT, False)
    assert ops[-2] == (Opcode.CONT, True)
    assert all(op == (Opcode.CONT, False) for op in ops[1:-2])
    assert len(ops) >= 4
    assert ops[-1] == (Opcode.TEXT, True)
    assert client.fragmented == ["a" * 25 + "b" * 5 + "c" * 20 + "d"]


def test_long_line_sent_while_it_arrives():
    framer = LineFramer(fragment_size=10)
    client = Client()
    client.receive(framer.feed(b"x" * 11))
    assert [(f.opcode, f.fin) for f in client.frames] == [(Opcode.TEXT, False)]
    client.receive(framer.feed(b"y" * 5))     # under fragment_size: held
    assert len(client.frames) == 1
    client.receive(framer.feed(b"y" * 6))
    assert [(f.opcode, f.fin) for f in client.frames[1:]] == [(Opcode.CONT, False)]
    client.receive(framer.finish())           # the rest at EOF, without \n
    assert client.frames[-1].opcode is Opcode.CONT and client.frames[-1].fin
    assert client.complete() == ["x" * 11 + "y" * 11]


def test_long_line_followed_by_lines_and_another_long_line_in_one_chunk():
    chunks = [b"L" * 30, b"M" * 3 + b"\nshort\n\nmid\r\n" + b"N" * 40, b"\r\n"]
    client = run(chunks, fragment_size=8)
    assert client.complete() == ["L" * 30 + "MMM", "short", "", "mid", "N" * 40]
    assert client.fragmented == ["L" * 30 + "MMM", "N" * 40]


def test_line_of_exactly_fragment_size_is_not_fragmented():
    client = run([b"z" * 10, b"\n"], fragment_size=10)
    assert client.complete() == ["z" * 10]
    assert len(client.frames) == 1


@pytest.mark.parametrize("line, expected", [
    (b"abcdefghij\r\n", "abcdefghij"),
    (b"abcdefghij\r\r\n", "abcdefghij\r"),
    (b"abc\rdefghij\r\n", "abc\rdefghij"),
    (b"\r\r\r\r\r\r\r\r\r\r\r\n", "\r" * 10),
])
def test_cr_at_a_fragment_boundary_is_still_stripped(line, expected):
    for fragment_size in range(1, 12):
        for pieces in (2, 3):
            for chunks in splits(line, pieces):
                client = run(chunks, fragment_size=fragment_size)
                assert client.complete() == [expected], (fragment_size, chunks)


def test_multibyte_char_split_at_a_fragment_boundary_survives():
    line = "é€😀a😀€é".encode()
    for fragment_size in range(1, len(line) + 1):
        for chunks in splits(line + b"\n", 2):
            client = run(chunks, fragment_size=fragment_size)
            assert client.complete() == [line.decode()], (fragment_size, chunks)
        # byte by byte forces a fragment at every possible position
        client = run([bytes([b]) for b in line], fragment_size=fragment_size)
        assert client.complete() == [line.decode()]


def test_invalid_utf8_in_a_long_line_is_replaced():
    line = b"ab\xffcd\xe2\x82ef\xc3" + b"\xa9gh\x80" * 5
    for fragment_size in (1, 2, 3, 5, 8):
        for chunks in splits(line + b"\r\n", 2):
            client = run(chunks, fragment_size=fragment_size)
            assert client.complete() == [line.decode("utf-8", "replace")], (fragment_size, chunks)


def test_long_line_ending_in_a_truncated_character_at_eof():
    line = b"x" * 20 + b"\xf0\x9f\x98"
    client = run([line], fragment_size=8)
    assert client.complete() == [line.decode("utf-8", "replace")]
    client = run([line, b"\n", b"\x98\x80\n"], fragment_size=8)   # no carry-over to the next line
    assert client.complete() == [line.decode("utf-8", "replace"), "\ufffd\ufffd"]


def test_ten_megabyte_line_in_64k_chunks_keeps_memory_bounded():
    fragment_size = 65536
    unit = "ab€😀é".encode()
    line = (unit * (10_000_000 // len(unit) + 1))[:10_000_000]
    line = line[:len(line.decode("utf-8", "ignore").encode())]  # whole characters only
    data = line + b"\r\nafter\n"
    framer = LineFramer(fragment_size=fragment_size)
    client = Client()
    for start in range(0, len(data), 65536):   # 64 KiB chunks cut characters anywhere
        out = framer.feed(data[start:start + 65536])
        assert len(framer.pending) <= 2 * fragment_size
        client.receive(out)
        # at most pending + one read, plus a character cut at the previous fragment
        assert all(len(f.data) <= 2 * fragment_size + 3 for f in parse_frames(out))
    client.receive(framer.finish())
    assert client.complete()[1:] == ["after"]
    assert len(client.messages) == 2
    assert client.messages[0] == line.decode()
    assert len(client.fragmented) == 1
    assert len(client.frames) >= len(data) // (2 * fragment_size + 3)  # sent as it arrives


# -- property-style: random outputs, random reads, random fragment sizes ----------------
# (seeded loops rather than hypothesis, which writes a .hypothesis/ cache into the repo)


ALPHABET = [b"a", b"b", b"\r", b"\n", b"\n", b"\xc3", b"\xa9", b"\xe2", b"\x82", b"\xac",
            b"\xf0", b"\x9f", b"\x98", b"\x80", b"\xff", b"\xc0", b"\xed", b"\xa0", b'"',
            b"\\", b"\x00", b"\x1f", "é".encode(), "€".encode(), "😀".encode()]


def _random_case(rng):
    data = b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(60)))
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(8)))
    chunks = [data[i:j] for i, j in zip([0] + cuts, cuts + [len(data)])]
    return data, chunks, rng.randrange(1, 12)


def test_random_outputs_text_mode():
    rng = random.Random(1234)
    for _ in range(1500):
        data, chunks, fragment_size = _random_case(rng)
        assert messages(chunks, fragment_size=fragment_size) == expected_lines(data), (
            chunks, fragment_size)


def test_random_outputs_passstderr_mode():
    rng = random.Random(4321)
    for _ in range(1500):
        data, chunks, fragment_size = _random_case(rng)
        expected = expected_lines(data)
        exact = json_data(run(chunks, stream="stdout"))
        assert exact == expected, chunks
        cut = json_data(run(chunks, stream="stdout", fragment_size=fragment_size))
        assert "".join(cut) == "".join(expected), (chunks, fragment_size)
        assert len(cut) >= len(expected)


# -- passstderr: JSON messages, never fragments -----------------------------------------


@pytest.mark.parametrize("line", [
    b"plain",
    b'say "hi"',
    b"back\\slash \\n \\u0000",
    b"controls \x00\x01\x08\t\x0b\x0c\x0e\x1b\x1f\x7f end",
    "non-ascii é € 😀 \u2028 \u2029 \ufeff".encode(),
    b"bad \xff \xc3( \xe2\x82 \xed\xa0\x80 bytes",
    b'"}, {"stream":"stderr","data":"injected',
    b"",
    b"cr inside \r here",
])
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_passstderr_json_messages(line, stream):
    client = run([line + b"\r\n", line + b"\n", line], stream=stream)
    expected = line.decode("utf-8", "replace")
    assert json_data(client, stream) == [expected] * (3 if line else 2)


def test_passstderr_exact_format():
    client = run([b'a"b\n'], stream="stdout")
    assert client.complete() == ['{"stream":"stdout","data":"a\\"b"}']


def test_passstderr_long_line_is_cut_into_whole_json_messages():
    line = ('x"\\\x01é€😀' * 20).encode() + b"\xff" + b"y" * 50
    for fragment_size in (1, 7, 16, 100):
        for chunks in ([line + b"\r\n"], [line[:33], line[33:90], line[90:], b"\r", b"\n"],
                       [bytes([b]) for b in line + b"\r\n"]):
            client = run(chunks + [b"next\n"], stream="stdout", fragment_size=fragment_size)
            data = json_data(client)
            assert data[-1] == "next"
            assert "".join(data[:-1]) == line.decode("utf-8", "replace")
            if len(chunks) > 1:
                assert len(data) > 2, "a long line arriving in pieces is cut"
            if len(chunks) > 5:  # byte by byte: each piece is one fragment_size of bytes,
                # plus a held-back \r and the bytes of a character cut at the previous piece
                assert all(len(piece) <= fragment_size + 4 for piece in data[:-1])


def test_passstderr_memory_bounded_with_a_long_line():
    fragment_size = 4096
    line = ("é€😀ab\"\\" * 100_000).encode()
    framer = LineFramer(fragment_size=fragment_size, stream="stdout")
    client = Client()
    for start in range(0, len(line), 4096):
        client.receive(framer.feed(line[start:start + 4096]))
        assert len(framer.pending) <= 2 * fragment_size
    client.receive(framer.feed(b"\n"))
    client.receive(framer.finish())
    assert "".join(json_data(client)) == line.decode()


# -- an unterminated last line keeps its \r, however it was framed ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [None, "stdout"])
def test_unterminated_last_line_ending_in_cr_does_not_depend_on_length(stream):
    line = b"abcdefgh\r"
    results = set()
    for fragment_size in (4, 65536):
        client = run([line], fragment_size=fragment_size, stream=stream)
        if stream is None:
            results.add("".join(client.complete()))
        else:
            results.add("".join(json_data(client)))
    assert len(results) == 1, results


# -- split_lines (stderr logging) -----------------------------------------------------------


@pytest.mark.parametrize("pending, chunk, lines, rest", [
    (b"", b"", [], b""),
    (b"", b"abc", [], b"abc"),
    (b"", b"a\nb\r\nc", [b"a", b"b"], b"c"),
    (b"ab", b"c\n", [b"abc"], b""),
    (b"ab\r", b"\nx", [b"ab"], b"x"),
    (b"", b"a\r\r\n", [b"a\r"], b""),
    (b"", b"\n\n", [b"", b""], b""),
    (b"", b"\r\n", [b""], b""),
    (b"", b"a\rb\n", [b"a\rb"], b""),
    (b"", b"\xff\xc3\n", [b"\xff\xc3"], b""),   # bytes are left alone
])
def test_split_lines(pending, chunk, lines, rest):
    assert split_lines(pending, chunk) == (lines, rest)


def test_split_lines_cuts_pending_at_the_limit():
    assert split_lines(b"", b"x" * 10, limit=4) == ([b"xxxx", b"xxxx"], b"xx")
    assert split_lines(b"", b"x" * 4, limit=4) == ([], b"xxxx")      # exactly the limit: held
    assert split_lines(b"xxx", b"yy", limit=4) == ([b"xxxy"], b"y")
    assert split_lines(b"", b"a\n" + b"x" * 9, limit=4) == ([b"a", b"xxxx", b"xxxx"], b"x")


def test_split_lines_pending_stays_bounded():
    pending = b""
    logged = []
    for _ in range(50):
        lines, pending = split_lines(pending, b"q" * 3000, limit=4096)
        logged += lines
        assert len(pending) <= 4096
    assert all(len(line) == 4096 for line in logged)
    assert b"".join(logged) + pending == b"q" * 150_000


def test_split_lines_default_limit_is_64k():
    lines, pending = split_lines(b"", b"x" * 65537)
    assert lines == [b"x" * 65536] and pending == b"x"


def test_split_lines_cut_piece_keeps_a_trailing_cr():
    lines, pending = split_lines(b"", b"aaa\rbbbb", limit=4)
    assert b"".join(lines) + pending == b"aaa\rbbbb"


def test_a_waiting_line_is_flushed_as_a_prompt_keeping_back_a_cr_and_a_cut_utf8_sequence():
    text = framing.OP_TEXT
    framer = LineFramer(stream="stdout")
    assert framer.feed(b"Name? \xc3") == b""
    assert framer.flush_partial() == frame(text, b'{"stream":"prompt","data":"Name? "}')
    assert framer.feed(b"\xa9\r") == b""
    assert framer.flush_partial() == frame(text, '{"stream":"prompt","data":"é"}'.encode())
    assert framer.feed(b"\n") == frame(text, b'{"stream":"stdout","data":""}')
    plain = LineFramer()
    plain.feed(b"Guess: ")
    assert plain.flush_partial() == frame(text, b"Guess: ")
    assert plain.flush_partial() == b""
