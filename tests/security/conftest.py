"""Certificates for the mutual-TLS tests: a trustme CA, identities issued by it, PEM files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from groundplane.kernel.tls import TRUST_DOMAIN, TlsFiles

Issue = Callable[..., TlsFiles]


def write_identity(ca: trustme.CA, name: str, folder: Path) -> TlsFiles:
    """``name``'s certificate (SAN ``name.groundplane.local``, plus loopback so a server's
    certificate matches the address clients dial) and key, and ``ca``, as PEM files."""
    cert = ca.issue_cert(f"{name}.{TRUST_DOMAIN}", "127.0.0.1", "localhost")
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt")
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def issue(ca: trustme.CA, tmp_path: Path) -> Issue:
    """``issue("gateway")``: the files of identity ``gateway`` signed by the test CA."""

    def make(name: str, authority: trustme.CA | None = None) -> TlsFiles:
        signer = ca if authority is None else authority
        return write_identity(signer, name, tmp_path / f"{name}-{id(signer)}")

    return make
