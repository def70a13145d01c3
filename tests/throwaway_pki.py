"""Throwaway certificate authorities and server certificates for tests, made in memory with ``cryptography``
and written as PEM files: a test's own CA that a client is told to trust, another CA (a man in the middle's)
that it is not, and server certificates for exactly the names a test chooses (so a certificate for another
name than the one a client dials can be shown to be refused). Keys are EC P-256; nothing outlives the test's
folder.
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))


@dataclass(frozen=True)
class Authority:
    """A CA: its key and self-signed certificate; ``ca_file`` is the certificate as PEM on disk."""
    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ca_file: Path

    def issue(self, folder: Path, stem: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server certificate for exactly ``dns`` and ``ips`` (as subjectAltName), signed by this CA, and a
        server context presenting it (leaf then this CA's certificate, as a server sends its chain)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        leaf = (_validity(x509.CertificateBuilder())
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])]))
                .issuer_name(self.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        chain, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + self.certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        return context


def authority(folder: Path, name: str) -> Authority:
    """A fresh CA named ``name`` whose certificate is written to ``<folder>/<name>-ca.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    certificate = (_validity(x509.CertificateBuilder()).subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    ca_file = folder / f"{name}-ca.pem"
    ca_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, certificate, ca_file)
