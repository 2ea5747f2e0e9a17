"""The lab's self-signed TLS certificate, and its thumbprints as vSphere prints them."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vcbproxy.vsphere.session import pretty_thumbprint


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """Create (once) a certificate for 127.0.0.1/localhost; a restarted lab keeps its identity."""
    cert_file, key_file = directory / "lab-cert.pem", directory / "lab-key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    # EC keys generate in milliseconds, which keeps `lab serve` well under its 2 s start budget.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vcbproxy lab"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def thumbprint(cert_file: Path, algorithm: str) -> str:
    """Colon-separated uppercase hex of the DER certificate, the form vSphere shows."""
    der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())
    return pretty_thumbprint(hashlib.new(algorithm, der).hexdigest())


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
