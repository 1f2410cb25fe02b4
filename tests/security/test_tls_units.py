"""The pure parts of mutual TLS: identities from certificate names, the options, the policy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from groundplane.kernel.authz import DEFAULT_POLICY
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.pki import mint_local_pki
from groundplane.kernel.tls import TlsFiles, identity_of, is_loopback, warn_if_exposed


def test_identity_prefers_the_spiffe_uri_then_the_groundplane_dns_name_then_the_cn() -> None:
    """``spiffe://…/<name>`` names the identity before any DNS name; ``<name>.groundplane.local``
    before the common name; ``localhost`` and names under other domains name nobody."""
    assert identity_of(["localhost", "spiffe://groundplane.local/routing"], "x") == "routing"
    assert identity_of(["localhost", "gateway.groundplane.local"], "cn") == "gateway"
    assert identity_of(["a.b.groundplane.local", "example.org"], "cn") == "cn"
    assert identity_of(["localhost"], "") is None


def test_minted_certificates_name_their_identity_and_loopback(tmp_path: Path) -> None:
    """``up --tls``'s certificates carry the spiffe URI, the groundplane DNS name, the common
    name and 127.0.0.1, all under one CA; every file is 0600."""
    files = mint_local_pki(
        tmp_path / "tls", ["routing", "admin"], now=datetime(2026, 8, 15, tzinfo=UTC)
    )
    cert = x509.load_pem_x509_certificate(files["routing"].cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    names = sans.get_values_for_type(x509.DNSName)
    assert identity_of([*uris, *names]) == "routing"
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert files["routing"].ca == files["admin"].ca
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "tls").iterdir()} == {0o600}


def test_tls_options_come_all_three_or_none_and_bad_files_are_named(tmp_path: Path) -> None:
    """No option: plaintext (None); one or two: InvalidArgument naming the missing ones; a file
    that is not PEM: InvalidArgument naming its flag."""
    assert TlsFiles.from_options(None, None, None) is None
    with pytest.raises(InvalidArgument, match="missing --tls-key, --tls-ca"):
        TlsFiles.from_options("a.crt", None, None)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InvalidArgument, match=r"--tls-cert .*junk\.pem: expected a PEM file"):
        TlsFiles.from_options(junk, junk, junk)
    with pytest.raises(InvalidArgument, match=r"--tls-cert .*: cannot read it"):
        TlsFiles.from_options(tmp_path / "missing.crt", junk, junk)


def test_loopback_hosts_are_told_apart_from_exposed_ones() -> None:
    """127.0.0.0/8, ::1 and localhost listen only on this machine; 0.0.0.0 and names do not."""
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "[::]", "10.0.0.5", "tracking"))


def test_a_server_beyond_loopback_without_tls_warns_once() -> None:
    """Listening on 0.0.0.0 or a routable name without TLS logs one ``listening_without_tls``
    warning; loopback, or any host with TLS files, logs nothing."""
    files = TlsFiles(Path("c.crt"), Path("c.key"), Path("ca.crt"))
    with capture_logs() as logs:
        warn_if_exposed("0.0.0.0", None)
        warn_if_exposed("127.0.0.1", None)
        warn_if_exposed("0.0.0.0", files)
    assert [(e["event"], e["host"], e["log_level"]) for e in logs] == [
        ("listening_without_tls", "0.0.0.0", "warning")
    ]


def test_policy_admin_everywhere_and_unknown_methods_refused() -> None:
    """``admin`` may call any method, listed or not; an identity may call only what lists it,
    and a method the table does not know is refused to everyone else."""
    routing_set = "/groundplane.routing.v1.RoutingService/SetRoutingPolicy"
    assert DEFAULT_POLICY.allowed("admin", routing_set)
    assert DEFAULT_POLICY.allowed("admin", "/new.Service/Method")
    assert not DEFAULT_POLICY.allowed("gateway", routing_set)
    assert DEFAULT_POLICY.allowed("gateway", "/groundplane.routing.v1.RoutingService/Route")
    assert not DEFAULT_POLICY.allowed("gateway", "/new.Service/Method")
    assert DEFAULT_POLICY.allowed("tenant", "/grpc.health.v1.Health/Check")
    assert DEFAULT_POLICY.allowed("tenant", "/groundplane.gateway.v1.InferenceService/Infer")
