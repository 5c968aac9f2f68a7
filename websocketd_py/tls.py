"""--ssl: the TLS context from --sslcert/--sslkey/--sslca, and the handshake of each connection.

werkzeug's own `ssl_context` wraps the listening socket, so the handshake runs
inside accept(): one client that connects and sends nothing stops every other
client from being accepted. Here the listeners accept plain sockets and
`handshake()` runs in the connection's own thread, with a time limit: the
time left of the request head's (`server.HEAD_TIMEOUT` from accept).
"""

import socket
import ssl
import time

#: The least time a handshake gets (a socket timeout of 0 would make it non-blocking).
_MOMENT = 0.001


class TLSFileError(Exception):
    """A certificate, key or CA file that cannot be used: one line naming it."""


class _EncryptedKey(Exception):
    """The key file asked for a passphrase (we never prompt for one)."""


class _TLSSocket(ssl.SSLSocket):
    """An SSLSocket whose shutdown() keeps the TLS layer.

    `ssl.SSLSocket.shutdown` drops its TLS object before shutting the socket
    down, so a send racing with it from another thread (a session's writer
    while the reader aborts the connection) could go out in cleartext. Here
    such a send fails like any send on a shut-down socket.
    """

    def shutdown(self, how):
        socket.socket.shutdown(self, how)


def server_context(certfile, keyfile, cafile=None):
    """The SSLContext for the TCP listeners; TLSFileError if a file is missing or wrong.

    With `cafile`, clients must present a certificate signed by that CA.
    """
    for flag, path in (("sslcert", certfile), ("sslkey", keyfile), ("sslca", cafile)):
        if path is not None:
            _check_readable(flag, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslsocket_class = _TLSSocket
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certfile, keyfile, password=_refuse_passphrase)
    except _EncryptedKey:
        raise TLSFileError(f"--sslkey={keyfile} is protected by a passphrase; give an "
                           f"unencrypted key (openssl pkey -in {keyfile} -out key.pem)") from None
    except ssl.SSLError as error:
        raise TLSFileError(_explain_chain_error(error, certfile, keyfile)) from None
    if cafile is not None:
        try:
            context.load_verify_locations(cafile=cafile)
        except ssl.SSLError:
            raise TLSFileError(f"--sslca={cafile} holds no PEM CA certificate") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _check_readable(flag, path):
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise TLSFileError(f"cannot read --{flag}={path}: {error.strerror or error}") from None


def _refuse_passphrase():
    raise _EncryptedKey()


def _explain_chain_error(error, certfile, keyfile):
    if error.reason == "KEY_VALUES_MISMATCH":
        return f"--sslkey={keyfile} is not the private key of --sslcert={certfile}"
    if not _holds(certfile, b"-----BEGIN CERTIFICATE-----"):
        return f"--sslcert={certfile} holds no PEM certificate"
    if not _holds(keyfile, b"PRIVATE KEY-----"):
        return f"--sslkey={keyfile} holds no PEM private key"
    return f"cannot use --sslcert={certfile} with --sslkey={keyfile}: {error}"


def _holds(path, marker):
    with open(path, "rb") as file:
        return marker in file.read()


def handshake(sock, context, log, remote, deadline):
    """The TLS socket over a freshly accepted `sock`, or None after a handshake that
    failed or was not done by `deadline` (a `time.monotonic()` value).

    Runs in the connection's own thread. A failure is logged (ERROR when the
    client spoke something else than TLS or was refused, DEBUG when it just
    went away or stayed silent) and the connection closed, without a traceback.
    """
    tls_sock = None
    try:
        tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls_sock.settimeout(max(deadline - time.monotonic(), _MOMENT))  # for all of it
        tls_sock.do_handshake()
        return tls_sock
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, socket.timeout) as error:
        log.write("debug", "tls", f"TLS handshake not completed: {error}", (("remote", remote),))
    except OSError as error:
        log.write("error", "tls", f"TLS handshake failed: {_explain_handshake_error(error)}",
                  (("remote", remote),))
    (tls_sock or sock).close()
    return None


_HANDSHAKE_REASONS = {
    "HTTP_REQUEST": "the client sent plain HTTP to a TLS port (use https:// or wss://)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (--sslca requires one)",
}
#: OpenSSL verify results that mean "no issuer in --sslca" (X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
#: _UNABLE_TO_GET_ISSUER_CERT_LOCALLY, _UNABLE_TO_VERIFY_LEAF_SIGNATURE).
_NOT_FROM_THE_CA = frozenset((2, 20, 21))


def _explain_handshake_error(error):
    """One line for a failed handshake; a refused client certificate says what OpenSSL said."""
    if isinstance(error, ssl.SSLCertVerificationError):
        openssl_said = f"(OpenSSL: {error.verify_message})"
        if error.verify_code in _NOT_FROM_THE_CA:
            return f"the client certificate is not signed by the --sslca CA {openssl_said}"
        return f"the client certificate was refused {openssl_said}"
    return _HANDSHAKE_REASONS.get(getattr(error, "reason", None), str(error))
