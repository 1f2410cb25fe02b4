"""A throw-away certificate authority for a local system (``groundplane up --tls``).

:func:`mint_local_pki` makes a fresh CA (an EC P-256 key that lives only as long as the run's
state directory) and one certificate per identity, each naming the identity three ways:

* the URI SAN ``spiffe://groundplane.local/<name>`` (read first by
  :func:`~groundplane.kernel.tls.identity_of`),
* the DNS SAN ``<name>.groundplane.local`` and the common name ``<name>`` (Mosquitto's
  ``use_identity_as_username`` reads the common name),
* ``localhost`` and ``127.0.0.1``, so the certificate also serves on loopback, where every
  client of a local system dials.

Every file is written 0600 into a 0700 folder. Production certificates come from cert-manager
instead (docs/security.md); this is for one machine's run.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from groundplane.kernel.tls import TRUST_DOMAIN, TlsFiles

VALIDITY = timedelta(days=7)
"""How long the minted certificates are valid (a run of ``up`` is hours at most)."""


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def mint_local_pki(
    folder: Path, identities: Iterable[str], *, now: datetime
) -> dict[str, TlsFiles]:
    """A new CA in ``folder`` and a certificate for each of ``identities`` (valid from an hour
    before ``now`` for :data:`VALIDITY`), as :class:`TlsFiles` by identity."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    not_before = now.astimezone(UTC) - timedelta(hours=1)
    not_after = not_before + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "groundplane up local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.crt"
    _write_private(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    out: dict[str, TlsFiles] = {}
    for name in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/{name}"),
                        x509.DNSName(f"{name}.{TRUST_DOMAIN}"),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        files = TlsFiles(folder / f"{name}.crt", folder / f"{name}.key", ca_path)
        _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write_private(files.key, _key_pem(key))
        out[name] = files
    return out
