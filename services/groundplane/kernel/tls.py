"""Mutual TLS for every gRPC server and client of groundplane.

A process that is given ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (:class:`TlsFiles`) serves
gRPC only to peers presenting a certificate signed by that CA (the handshake refuses anyone
else: the client sees UNAVAILABLE) and dials its own upstreams with the same certificate, so
every hop is encrypted and both ends know who the other is. The peer's identity is read from
its certificate (:func:`peer_identity`) and checked per method by
:mod:`groundplane.kernel.authz`.

Certificates are rotated in place (cert-manager rewrites the mounted Secret's files): the
server's credentials are ``grpc.dynamic_ssl_server_credentials`` whose fetcher, run by grpc
before every new handshake, re-reads the three files when any of their inodes, modification
times or sizes changed (:class:`ReloadingServerCertificates`). Established connections keep the
certificate they were set up with; new ones get the new certificate. Client credentials are
read when a channel is opened (:func:`open_channel`), so a service's reconnect after a rotation
presents the new client certificate.

A process configures its TLS once at start (:func:`configure_process_tls`, called by the CLI's
process runner, like logging): :class:`~groundplane.kernel.serving.GrpcServer` and
:func:`open_channel` use it unless given files explicitly. With none configured everything stays
plaintext (the embedded default, loopback only).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
import structlog

from groundplane.kernel.errors import InvalidArgument

log = structlog.get_logger("groundplane.tls")

TRUST_DOMAIN: Final = "groundplane.local"
"""Identities: ``spiffe://groundplane.local/<name>`` URIs or ``<name>.groundplane.local`` names."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one identity: its certificate (chain), its private key, and the CA that
    signs every peer it accepts."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_options(
        cls,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        ca: str | os.PathLike[str] | None,
    ) -> TlsFiles | None:
        """The files of ``--tls-cert/--tls-key/--tls-ca``: all three or none (InvalidArgument
        naming what is missing otherwise; a file that cannot be read is named too)."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if all(value is None or str(value) == "" for value in given.values()):
            return None
        missing = [flag for flag, value in given.items() if value is None or str(value) == ""]
        if missing:
            raise InvalidArgument(
                f"mutual TLS needs --tls-cert, --tls-key and --tls-ca together; missing "
                f"{', '.join(missing)}"
            )
        files = cls(Path(str(cert)), Path(str(key)), Path(str(ca)))
        files.read()  # fail at start, not at the first handshake
        return files

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, key, CA) as bytes; InvalidArgument naming an unreadable file."""
        out: list[bytes] = []
        for flag, path in (
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
            ("--tls-ca", self.ca),
        ):
            try:
                data = path.read_bytes()
            except OSError as error:
                raise InvalidArgument(f"{flag} {path}: cannot read it ({error.strerror})") from None
            if b"-----BEGIN " not in data:
                raise InvalidArgument(f"{flag} {path}: expected a PEM file, found no BEGIN line")
            out.append(data)
        return out[0], out[1], out[2]

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any of the files is rewritten: (inode, mtime_ns, size) of each
        (a Kubernetes Secret volume swaps a symlink to new files: a new inode)."""
        stamps: list[tuple[int, int, int]] = []
        for path in (self.cert, self.key, self.ca):
            try:
                stat = path.stat()
            except OSError:
                stamps.append((-1, -1, -1))
            else:
                stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)


class ReloadingServerCertificates:
    """The certificate-configuration fetcher of ``grpc.dynamic_ssl_server_credentials``.

    grpc calls it (from its own threads) before each new handshake; it returns a fresh
    configuration when the files' stamps changed since the last load, None (keep the current
    one) otherwise. A half-written rotation (unreadable or invalid files) keeps the current
    certificate and is logged once per stamp, so a server never stops serving over it.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self.reloads = 0
        self.initial = self._configuration()

    def _configuration(self) -> Any:
        cert, key, ca = self.files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> Any:
        stamp = self.files.stamp()
        with self._lock:
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                configuration = self._configuration()
            except InvalidArgument as error:
                log.warning("tls_reload_failed", error=error.message)
                return None
            self.reloads += 1
        log.info("tls_reloaded", cert=str(self.files.cert), reloads=self.reloads)
        return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from ``files.ca`` and reload."""
    fetcher = ReloadingServerCertificates(files)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client credentials presenting ``files.cert`` and trusting only ``files.ca``."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


_process: TlsFiles | None = None


def configure_process_tls(files: TlsFiles | None) -> None:
    """The TLS every server and channel of this process uses unless told otherwise."""
    global _process  # noqa: PLW0603 - process-wide configuration, set once at start like logging
    _process = files


def process_tls() -> TlsFiles | None:
    """What :func:`configure_process_tls` set (None: plaintext)."""
    return _process


class FromProcess:
    """The default of ``tls=`` arguments: this process's configuration."""


PROCESS: Final = FromProcess()


def resolve(tls: TlsFiles | FromProcess | None) -> TlsFiles | None:
    return _process if isinstance(tls, FromProcess) else tls


def open_channel(
    target: str,
    *,
    tls: TlsFiles | FromProcess | None = PROCESS,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target``: mutual TLS with ``tls`` (the process's by default),
    plaintext when there is none."""
    files = resolve(tls)
    if files is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(files), options=options)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, files: TlsFiles | None) -> None:
    """One warning line when a server listens beyond loopback without TLS."""
    if files is None and not is_loopback(host):
        log.warning(
            "listening_without_tls",
            host=host,
            hint="any process that reaches this address can call every method, writes "
            "included; pass --tls-cert/--tls-key/--tls-ca (docs/security.md)",
        )


def identity_of(sans: Sequence[str], common_name: str = "") -> str | None:
    """The groundplane identity a certificate names.

    ``spiffe://<trust domain>/<name>`` URIs name ``<name>`` (the last path segment); a DNS name
    ``<name>.groundplane.local`` names ``<name>``; otherwise the common name, when it is not
    empty. None when the certificate names no identity.
    """
    for san in sans:
        if san.startswith("spiffe://"):
            path = urlsplit(san).path.strip("/")
            if path:
                return path.rsplit("/", 1)[-1]
    suffix = "." + TRUST_DOMAIN
    for san in sans:
        if san.endswith(suffix) and "." not in san.removesuffix(suffix):
            return san.removesuffix(suffix)
    return common_name or None


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The identity of a TLS peer from ``ServicerContext.auth_context()``; None for a plaintext
    peer (no ``transport_security_type`` of ``ssl``)."""
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return None
    sans = [
        value.decode("utf-8", "replace")
        for value in auth_context.get("x509_subject_alternative_name", ())
    ]
    names = list(auth_context.get("x509_common_name", ()))
    common = names[0].decode("utf-8", "replace") if names else ""
    return identity_of(sans, common) or "(no identity)"
