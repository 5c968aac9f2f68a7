"""--ssl, --sslcert, --sslkey, --sslca: wss and https on one listener, lazy handshakes,
client certificates (SPEC §5)."""

import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.sync.client import connect

from certificates import Authority
from helpers import children_of, parametrize_fast_first

UPGRADE = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture
def ca(tmp_path):
    return Authority(tmp_path)


@pytest.fixture
def tls_flags(ca):
    cert, key = ca.issue("server", "localhost")
    return ("--ssl", f"--sslcert={cert}", f"--sslkey={key}")


def client_context(ca, certificate=None):
    """A client context trusting `ca` (checking the name 127.0.0.1), optionally with a cert."""
    context = ssl.create_default_context(cafile=ca.cert_path)
    if certificate:
        context.load_cert_chain(*certificate)
    return context


def test_wss_echo_through_cat_with_https_on_in_the_environment(server, ca, tls_flags):
    srv = server(*tls_flags, "sh", "-c", 'echo "HTTPS=$HTTPS"; exec cat')
    srv.wait_log(r"Starting WebSocket server   : wss://127\.0\.0\.1:\d+/$")
    with connect(srv.url(scheme="wss"), ssl=client_context(ca), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "HTTPS=on"
        ws.send("hello over TLS")
        assert ws.recv(timeout=10) == "hello over TLS"
    srv.wait_log(r"ACCESS \| http .* url:'https://127\.0\.0\.1:\d+/' .*\| 101 Switching Protocols")


@pytest.mark.slow
def test_without_ssl_there_is_no_https_variable(server):
    srv = server("sh", "-c", 'echo "HTTPS=${HTTPS-unset}"')
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "HTTPS=unset"


@pytest.mark.slow
def test_devconsole_is_served_over_https_on_the_same_port(server, ca, tls_flags):
    srv = server(*tls_flags, "--devconsole", "cat")
    srv.wait_log(r"Developer console +: https://127\.0\.0\.1:\d+/$")
    with urllib.request.urlopen(srv.url(scheme="https"), context=client_context(ca),
                                timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read().lower()


@pytest.mark.slow
def test_silent_clients_do_not_stall_other_handshakes(server, ca, tls_flags):
    srv = server(*tls_flags, "cat")
    silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
    try:
        started = time.monotonic()
        with connect(srv.url(scheme="wss"), ssl=client_context(ca), open_timeout=5) as ws:
            ws.send("not stalled")
            assert ws.recv(timeout=5) == "not stalled"
        assert time.monotonic() - started < 2.0
        for sock in silent:  # still connected: no data and no end of stream yet
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.slow
def test_plain_http_on_the_tls_port_is_logged_and_the_server_carries_on(server, ca, tls_flags):
    srv = server(*tls_flags, "cat")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(UPGRADE.encode())
        sock.settimeout(10)
        try:
            assert not sock.recv(4096).startswith(b"HTTP/1.1 101")
        except ConnectionResetError:
            pass
    srv.wait_log(r"ERROR  \| tls .* plain HTTP to a TLS port")
    with connect(srv.url(scheme="wss"), ssl=client_context(ca), open_timeout=10) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=10) == "still serving"
    assert not [line for line in srv.stderr_lines if "Traceback" in line]


def refused_at_tls_level(port, context):
    """True when the server ends the TLS connection without answering the HTTP upgrade."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(UPGRADE.encode())
                return sock.recv(4096) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True


def test_sslca_refuses_clients_without_a_certificate_from_that_ca(server, ca, tls_flags, tmp_path):
    srv = server(*tls_flags, f"--sslca={ca.cert_path}", "cat")
    rogue_ca = Authority(tmp_path, "rogue CA")
    rogue = rogue_ca.issue("rogue", "mallory", server=False)

    assert refused_at_tls_level(srv.port, client_context(ca))
    srv.wait_log(r"ERROR  \| tls .* sent no certificate")
    assert refused_at_tls_level(srv.port, client_context(ca, rogue))
    srv.wait_log(r"ERROR  \| tls .* not signed by the --sslca CA "
                 r"\(OpenSSL: unable to get local issuer certificate\)$")
    assert children_of(srv.proc.pid) == []

    alice = ca.issue("alice", "alice", server=False)
    with connect(srv.url(scheme="wss"), ssl=client_context(ca, alice), open_timeout=10) as ws:
        ws.send("with a good certificate")
        assert ws.recv(timeout=10) == "with a good certificate"


def test_sslca_logs_what_openssl_said_about_a_certificate_refused_for_another_reason(
        server, ca, tls_flags):
    """A certificate from the CA whose empty subject and issuer make OpenSSL take it for a
    self-signed one is refused for that reason, not as "not signed by the --sslca CA"."""
    srv = server(*tls_flags, f"--sslca={ca.cert_path}", "cat")
    nameless = ca.issue_nameless("nameless")
    assert refused_at_tls_level(srv.port, client_context(ca, nameless))
    srv.wait_log(r"ERROR  \| tls .* \| TLS handshake failed: the client certificate was "
                 r"refused \(OpenSSL: self-signed certificate\)$")
    assert not [line for line in srv.lines if "not signed by" in line], srv.log_text()
    assert children_of(srv.proc.pid) == []


def start_failure(*flags):
    """Run websocketd-py expecting it not to start: (exit status, stderr lines)."""
    result = subprocess.run([sys.executable, "-m", "websocketd_py", "--port=0",
                             "--address=127.0.0.1", *flags, "cat"],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stderr.splitlines()


@parametrize_fast_first("case, expected", [
    ("missing cert", "cannot read --sslcert="),
    ("missing key", "cannot read --sslkey="),
    ("key of another certificate", "is not the private key of --sslcert="),
    ("key given as the certificate", "holds no PEM certificate"),
    ("certificate given as the key", "holds no PEM private key"),
    ("encrypted key", "is protected by a passphrase"),
    ("CA file without a certificate", "holds no PEM CA certificate"),
    ("missing CA file", "cannot read --sslca="),
])
def test_unusable_tls_files_give_one_clear_line(ca, tmp_path, case, expected):
    cert, key = ca.issue("server", "localhost")
    other_cert, other_key = ca.issue("other", "other")
    flags = {
        "missing cert": (str(tmp_path / "nope.crt"), key),
        "missing key": (cert, str(tmp_path / "nope.key")),
        "key of another certificate": (cert, other_key),
        "key given as the certificate": (key, key),
        "certificate given as the key": (cert, cert),
        "encrypted key": (cert, _encrypted_copy(key, tmp_path)),
        "CA file without a certificate": (cert, key, key),
        "missing CA file": (cert, key, str(tmp_path / "nope-ca.pem")),
    }[case]
    args = ["--ssl", f"--sslcert={flags[0]}", f"--sslkey={flags[1]}"]
    if len(flags) == 3:
        args.append(f"--sslca={flags[2]}")
    status, stderr = start_failure(*args)
    assert status == 1
    assert len(stderr) == 1 and stderr[0].startswith("websocketd-py: ") and expected in stderr[0]


def _encrypted_copy(key_path, directory):
    from cryptography.hazmat.primitives import serialization
    with open(key_path, "rb") as file:
        key = serialization.load_pem_private_key(file.read(), password=None)
    path = directory / "encrypted.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    return str(path)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")
def test_ssl_without_a_tcp_listener_is_a_usage_error(ca, tls_flags, tmp_path):
    result = subprocess.run([sys.executable, "-m", "websocketd_py", *tls_flags,
                             f"--unixsocket={tmp_path / 'ws.sock'}", "cat"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--ssl needs a TCP listener" in result.stderr
