"""The request target reaches programs decoded once, as UTF-8, in every mode (decoding.py).

A raw UTF-8 target (`/café`, as curl or a script may send it) and its
%-encoded form (`/caf%C3%A9`) give the same PATH_INFO; QUERY_STRING and
REQUEST_URI hold the bytes as sent. Raw sockets send the bytes exactly.
"""

import base64
import http.client
import io
import json
import os
import socket
import sys

import pytest

from helpers import read_until_eof
from websocketd_py.decoding import request_target

KEY = base64.b64encode(b"0123456789abcdef").decode()
#: Prints PATH_INFO, QUERY_STRING and REQUEST_URI as JSON, bytes as latin-1 code points.
SHOW = ("import json, os\n"
        "env = {k: os.environb.get(k.encode(), b'').decode('latin-1') "
        "for k in ('PATH_INFO', 'QUERY_STRING', 'REQUEST_URI', 'SCRIPT_NAME')}\n"
        "print(json.dumps(env))\n")
CAFE = "café".encode()  # the UTF-8 bytes


def utf8_as_latin1(text):
    """What a program that got `text`'s UTF-8 bytes shows through SHOW."""
    return text.encode().decode("latin-1")


def exchange(port, data):
    """Send `data` on a new connection, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_until_eof(sock)


class _Received:
    """Bytes received, as the socket http.client.HTTPResponse parses."""

    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def upgrade_request(target):
    return (b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n\r\n")


def first_text_message(reply):
    """The payload of the first (unmasked, short) text frame after the 101."""
    head, _, frames = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), reply[:200]
    assert frames[0] == 0x81, frames[:10]
    length = frames[1]
    if length == 126:
        length, start = int.from_bytes(frames[2:4], "big"), 4
    else:
        start = 2
    return frames[start:start + length]


@pytest.fixture
def show(tmp_path):
    program = tmp_path / "show.py"
    program.write_text(f"#!{sys.executable}\n" + SHOW)
    program.chmod(0o755)
    return program


@pytest.mark.parametrize("target", [b"/caf\xc3\xa9?q=caf\xc3\xa9", b"/caf%C3%A9?q=caf%C3%A9"])
def test_command_mode_path_info_is_the_utf8_path(server, show, target):
    srv = server(str(show))
    env = json.loads(first_text_message(exchange(srv.port, upgrade_request(target))))
    assert env["PATH_INFO"] == utf8_as_latin1("/café")
    assert env["QUERY_STRING"] == target.split(b"?")[1].decode("latin-1")
    assert env["REQUEST_URI"] == target.decode("latin-1")


@pytest.mark.parametrize("rest", [b"/caf\xc3\xa9", b"/caf%C3%A9"])
def test_dir_mode_path_info_after_the_script_is_the_utf8_path(server, show, tmp_path, rest):
    os.rename(show, tmp_path / "show")
    srv = server(f"--dir={tmp_path}")
    target = b"/show" + rest + b"?x=caf\xc3\xa9"
    env = json.loads(first_text_message(exchange(srv.port, upgrade_request(target))))
    assert env["SCRIPT_NAME"] == "/show"
    assert env["PATH_INFO"] == utf8_as_latin1("/café")
    assert env["QUERY_STRING"] == "x=caf\xc3\xa9"
    assert env["REQUEST_URI"] == target.decode("latin-1")


def test_a_script_named_in_utf8_is_found_under_dir(server, show, tmp_path):
    os.rename(show, tmp_path / "café")
    srv = server(f"--dir={tmp_path}")
    for target in (b"/caf\xc3\xa9", b"/caf%C3%A9"):
        env = json.loads(first_text_message(exchange(srv.port, upgrade_request(target))))
        assert env["SCRIPT_NAME"] == utf8_as_latin1("/café")


@pytest.mark.slow
@pytest.mark.parametrize("rest", [b"/caf\xc3\xa9", b"/caf%C3%A9"])
def test_cgi_path_info_is_the_utf8_path(server, tmp_path, rest):
    script = tmp_path / "show.py"
    script.write_text(f"#!{sys.executable}\n"
                      "import sys\nsys.stdout.write('Content-Type: text/plain\\r\\n\\r\\n')\n"
                      "sys.stdout.flush()\n" + SHOW)
    script.chmod(0o755)
    srv = server(f"--cgidir={tmp_path}")
    target = b"/show.py" + rest + b"?x=caf\xc3\xa9"
    reply = exchange(srv.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"Connection: close\r\n\r\n")
    response = http.client.HTTPResponse(_Received(reply))
    response.begin()
    assert response.status == 200, reply[:300]
    env = json.loads(response.read())
    assert env["PATH_INFO"] == utf8_as_latin1("/café")
    assert env["QUERY_STRING"] == "x=caf\xc3\xa9"
    assert env["REQUEST_URI"] == target.decode("latin-1")


@pytest.mark.slow
@pytest.mark.parametrize("target", [b"/caf\xc3\xa9.txt", b"/caf%C3%A9.txt"])
def test_static_files_named_in_utf8_are_served(server, tmp_path, target):
    (tmp_path / "café.txt").write_text("bonjour")
    srv = server(f"--staticdir={tmp_path}")
    reply = exchange(srv.port, b"GET " + target + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert reply.split(b"\r\n", 1)[0].split()[1] == b"200", reply[:200]
    assert reply.endswith(b"bonjour")


def test_redirects_keep_a_utf8_path_percent_encoded(server, tmp_path):
    port_socket = socket.socket()
    port_socket.bind(("127.0.0.1", 0))
    redirport = port_socket.getsockname()[1]
    port_socket.close()
    srv = server(f"--redirport={redirport}", "cat")
    reply = exchange(redirport, b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.0\r\nHost: h\r\n\r\n")
    location = [line for line in reply.split(b"\r\n") if line.lower().startswith(b"location:")]
    assert location == [f"Location: http://h:{srv.port}/caf%C3%A9?q=%C3%A9".encode()]


def test_decoding_undoes_werkzeug_once_and_cuts_the_absolute_form():
    sent = b"http://example.com/caf\xc3\xa9?q=%C3%A9&r=\xff"
    # werkzeug: the request line read as latin-1, encoded as UTF-8, read as latin-1 again
    environ = {"REQUEST_URI": sent.decode("latin-1").encode().decode("latin-1")}
    target = request_target(environ)
    assert target.uri == "/café?q=%C3%A9&r=\udcff"
    assert (target.raw_path, target.path, target.query) == ("/café", "/café", "q=%C3%A9&r=\udcff")


def test_frames_sent_with_the_handshake_are_not_lost(server):
    """A handshake and a frame in one packet, then a frame split across two sends."""
    srv = server("cat")

    def masked(text):
        payload = text.encode()
        mask = b"\x01\x02\x03\x04"
        return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
            b ^ mask[i % 4] for i, b in enumerate(payload))

    close = bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        late = masked("late")
        sock.sendall(upgrade_request(b"/") + masked("early") + late[:3])
        received = b""
        while b"early" not in received:
            received += sock.recv(65536)
        sock.sendall(late[3:])
        while b"late" not in received:
            received += sock.recv(65536)
        sock.sendall(close)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    frames = received.partition(b"\r\n\r\n")[2]
    assert frames.startswith(b"\x81\x05early\x81\x04late"), frames
    srv.wait_log(r"close:'1000' \| DISCONNECT")
