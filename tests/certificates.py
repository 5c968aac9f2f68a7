"""Test certificates made on the fly: a CA, server certificates for 127.0.0.1, client ones.

Needs the `cryptography` package; a test that asks for an `Authority` without it is skipped.
"""

import datetime
import ipaddress

import pytest

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    x509 = None


class Authority:
    """A throwaway CA that writes PEM files into `directory`."""

    def __init__(self, directory, name="websocketd-py test CA"):
        if x509 is None:
            pytest.skip("the TLS tests need the cryptography package")
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.cert_path = self._write(f"{name.replace(' ', '-')}.pem",
                                     self._cert_pem(self.certificate))

    def issue(self, stem, common_name, server=True):
        """Write `stem`.crt and `stem`.key for a server (127.0.0.1, ::1, localhost) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        # The key identifiers: Python 3.13's default context verifies strictly (RFC 5280).
        builder = (
            _builder(subject, self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{stem}.crt", self._cert_pem(certificate)),
                self._write(f"{stem}.key", key_pem))

    def issue_nameless(self, stem):
        """Write `stem`.crt and `stem`.key for a client certificate signed by this CA but
        with an empty subject and issuer: OpenSSL takes it for a self-signed one."""
        key = ec.generate_private_key(ec.SECP256R1())
        nobody = x509.Name([])
        certificate = _builder(nobody, nobody, key.public_key()).sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{stem}.crt", self._cert_pem(certificate)),
                self._write(f"{stem}.key", key_pem))

    @staticmethod
    def _cert_pem(certificate):
        return certificate.public_bytes(serialization.Encoding.PEM)

    def _write(self, name, data):
        path = self.directory / name
        path.write_bytes(data)
        return str(path)


def _builder(subject, issuer, public_key):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)))
