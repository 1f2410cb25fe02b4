"""A private Mosquitto for one groundplane system, or the address of an existing broker.

:class:`PrivateBroker` writes a configuration into a working directory and runs ``mosquitto``:

* one listener on ``127.0.0.1`` and a free port, MQTT v5 clients (v3.1.1 is not refused by the
  broker, but every groundplane client connects with v5 so a denied publish shows its reason
  code), ``set_tcp_nodelay true`` so small messages are not held back by Nagle's algorithm;
* no anonymous access: a password file with one service account (``gp-service``, read and write
  under ``gp/v1/#``) and one account per node whose username is the satellite id; a pattern ACL
  lets node ``<sat>`` read and write ``gp/v1/node/<sat>/#`` and nothing else; optional read-only
  accounts (``readers``, named ``gp-…``) may subscribe to ``gp/v1/#`` and publish nowhere;
  optional **shard accounts** (``shards={shard_id: [sat, …]}``, username ``gp-shard-<shard_id>``,
  :func:`shard_username`) may read and write ``gp/v1/shard/<shard_id>/#`` and the node subtree
  ``gp/v1/node/<sat>/#`` of each of their members, and nothing else: one connection carries many
  node agents, and a shard still cannot speak for a satellite it does not host;
* its own session (process group): a terminal's Ctrl-C or a signal to the caller's process group
  does not reach it; the owner stops it (:meth:`PrivateBroker.stop`, or leaving the ``async with``)
  after the clients that use it;
* persistence on, saved every ``autosave_interval_s`` seconds (default 1 s). Mosquitto's
  default of 1800 s loses every queued QoS 1 message when the broker dies by SIGKILL; saving each
  second bounds the loss to what arrived in the last second, at the cost of rewriting the
  database file once a second while anything changes. ``autosave_on_changes`` instead saves after
  that many changes (1 = every change: no loss window, but a full database write per message).

:class:`BrokerAddress` is a parsed ``mqtt://user:password@host:port`` URL; use it to run against an
existing broker instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urlsplit

import structlog

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, Unavailable
from groundplane.kernel.lifetime import dying_with_parent
from groundplane.mqtt import topics

log = structlog.get_logger("groundplane.mqtt.broker")

SERVICE_USER = "gp-service"
SHARD_USER_PREFIX = "gp-shard-"
"""Usernames of shard accounts: ``gp-shard-<shard_id>`` (a ``gp-`` name: never a satellite id)."""
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BrokerTls:
    """A client's TLS files: the CA that signed the broker's certificate and, for a broker that
    requires one (``require_certificate``), this client's certificate and key. The certificate's
    common name is the account the broker knows the client as (``use_identity_as_username``)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument(
                "a broker TLS client certificate needs its key and the other way round, got "
                f"certificate {self.cert_file} and key {self.key_file}"
            )
        for name, path in (
            ("CA", self.ca_file),
            ("certificate", self.cert_file),
            ("key", self.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise InvalidArgument(f"broker TLS {name} file {str(path)!r} does not exist")


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for error messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rsplit("@", 1)[1]
    authority, slash, tail = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, _, hostport = authority.rpartition("@")
    user = userinfo.split(":", 1)[0]
    hidden = f"{user}:***" if ":" in userinfo else user
    return f"{scheme}://{hidden}@{hostport}{slash}{tail}"


@dataclass(frozen=True)
class BrokerAddress:
    """Where and as whom to connect (``tls``: over TLS, ``mqtts://``)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: BrokerTls | None = None

    @property
    def url(self) -> str:
        """``mqtt[s]://user:password@host:port`` (credentials URL-quoted when present; the TLS
        files are not part of the URL)."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        scheme = "mqtt" if self.tls is None else "mqtts"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def with_credentials(self, username: str, password: str) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password, self.tls)

    def with_tls(self, tls: BrokerTls | None) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, self.username, self.password, tls)

    def __repr__(self) -> str:  # never print a password into a log
        user = self.username or "-"
        scheme = "mqtt" if self.tls is None else "mqtts"
        return f"BrokerAddress({scheme}://{user}:***@{self.host}:{self.port})"

    @classmethod
    def from_url(cls, url: str, tls: BrokerTls | None = None) -> BrokerAddress:
        """Parse ``mqtt[s]://[user[:password]@]host[:port]``; teach what is wrong otherwise.

        ``mqtts`` needs ``tls`` (at least the CA file); errors never repeat a password.
        """
        shown = redacted_url(url)
        try:
            parts = urlsplit(url)
        except ValueError as bad:
            raise InvalidArgument(f"cannot read the broker URL {shown!r}: {bad}") from None
        if parts.scheme not in {"mqtt", "mqtts"}:
            raise InvalidArgument(
                f"expected a broker URL like mqtt://user:password@host:1883 or "
                f"mqtts://host:8883 (TLS), got scheme {parts.scheme!r} in {shown!r}"
            )
        if parts.scheme == "mqtts" and tls is None:
            raise InvalidArgument(
                f"{shown!r} is a TLS broker URL: give the CA (and the client certificate and "
                "key) with --broker-tls-ca/--broker-tls-cert/--broker-tls-key or "
                "GROUNDPLANE_BROKER_TLS_CA/_CERT/_KEY"
            )
        if parts.scheme == "mqtt" and tls is not None:
            raise InvalidArgument(
                f"broker TLS files were given but {shown!r} is a plaintext URL: write mqtts://"
            )
        if not parts.hostname:
            raise InvalidArgument(
                f"broker URL has no host: expected mqtt://host:port, got {shown!r}"
            )
        try:
            port = parts.port or (DEFAULT_PORT if tls is None else DEFAULT_TLS_PORT)
        except ValueError:
            raise InvalidArgument(
                f"broker URL port must be an integer 1-65535, got {shown!r}"
            ) from None
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise InvalidArgument(
                "broker URL takes no path, query or fragment: expected mqtt://host:port, "
                f"got {shown!r}"
            )
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, username, password, tls)


def _reader_names(usernames: Iterable[str]) -> frozenset[str]:
    """The names of the read-only accounts, checked.

    A reader's name must start with ``gp-`` (like the service account) so it can never be a
    satellite id, and must not be the service account.
    """
    readers: set[str] = set()
    for username in usernames:
        topics.check_id("read-only account", username)
        if (
            not username.startswith(topics.SERVICE_USER_PREFIX)
            or username == SERVICE_USER
            or username.startswith(SHARD_USER_PREFIX)
        ):
            raise InvalidArgument(
                f"a read-only broker account's name must start with "
                f"{topics.SERVICE_USER_PREFIX!r} (so no satellite id can take it) and not be "
                f"{SERVICE_USER!r} or a shard account ({SHARD_USER_PREFIX}…), got {username!r}"
            )
        readers.add(username)
    return frozenset(readers)


def _reader_acl_text(readers: Iterable[str]) -> str:
    """ACL sections of the read-only accounts: read ``gp/v1/#``; write nowhere.

    The node pattern (``gp/v1/node/%u/#``) applies to every account, so each reader's own
    would-be node subtree is denied explicitly (Mosquitto checks a user's ``deny`` entries first).
    """
    return "".join(
        f"\n# read-only account (groundplane up --broker-dev-credentials)\n"
        f"user {username}\n"
        f"topic read {topics.PREFIX}/#\n"
        f"topic deny {topics.PREFIX}/node/{username}/#\n"
        for username in sorted(readers)
    )


def shard_username(shard_id: str) -> str:
    """The broker account of nodes shard ``shard_id``: ``gp-shard-<shard_id>``."""
    return SHARD_USER_PREFIX + topics.check_id("shard id", shard_id)


def _shard_members(shards: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Each shard's members, checked: valid ids, no satellite in two shards."""
    members: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for shard_id, sats in shards.items():
        shard_username(shard_id)
        checked = tuple(sorted({topics.check_node_id(sat) for sat in sats}))
        for sat in checked:
            if sat in owner:
                raise InvalidArgument(
                    f"satellite {sat!r} is in shard {owner[sat]!r} and in shard {shard_id!r}; "
                    "a satellite belongs to one shard"
                )
            owner[sat] = shard_id
        members[shard_id] = checked
    return members


def _shard_acl_text(shards: Mapping[str, tuple[str, ...]]) -> str:
    """ACL sections of the shard accounts: their shard topic and their members' node subtrees.

    As for readers, the account's own would-be node subtree (the ``%u`` pattern) is denied.
    """
    sections = []
    for shard_id in sorted(shards):
        username = shard_username(shard_id)
        lines = [
            f"\n# nodes shard {shard_id}: its status and its {len(shards[shard_id])} members",
            f"user {username}",
            f"topic deny {topics.PREFIX}/node/{username}/#",
            f"topic readwrite {topics.PREFIX}/shard/{shard_id}/#",
            *(f"topic readwrite {topics.PREFIX}/node/{sat}/#" for sat in shards[shard_id]),
        ]
        sections.append("\n".join(lines) + "\n")
    return "".join(sections)


@dataclass(frozen=True)
class BrokerServerTls:
    """The private broker's TLS files: the CA whose certificates it accepts from clients, and its
    own certificate (for ``127.0.0.1``) and key. With them its one listener speaks TLS only,
    requires a client certificate signed by that CA and takes the certificate's common name as
    the client's account (Mosquitto ``require_certificate``, ``use_identity_as_username``)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


ROLE_LINKS = "gp-links"
ROLE_ROUTING = "gp-routing"
ROLE_HANDOFF = "gp-handoff"
ROLE_GATEWAY = "gp-gateway"
ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    # The link emulator: hears every transmission, delivers on the far side, owns link state.
    ROLE_LINKS: (
        ("read", f"{topics.PREFIX}/ground/+/tx/#"),
        ("read", f"{topics.PREFIX}/node/+/tx/#"),
        ("write", f"{topics.PREFIX}/node/+/rx/#"),
        ("write", f"{topics.PREFIX}/ground/+/rx/#"),
        ("write", f"{topics.PREFIX}/link/#"),
        ("write", f"{topics.PREFIX}/isl/#"),
    ),
    # Routing: who is alive, how loaded, which links are up; it publishes nothing.
    ROLE_ROUTING: (
        ("read", topics.NODE_STATUS_FILTER),
        ("read", topics.NODE_LOAD_FILTER),
        ("read", topics.SHARD_STATUS_FILTER),
        ("read", topics.LINK_STATE_FILTER),
    ),
    # Handoff: liveness (its NodeDirectory), and requests to the nodes through the stations
    # with their replies.
    ROLE_HANDOFF: (
        ("read", topics.NODE_STATUS_FILTER),
        ("read", topics.NODE_LOAD_FILTER),
        ("read", topics.SHARD_STATUS_FILTER),
        ("write", f"{topics.PREFIX}/ground/+/tx/#"),
        ("read", f"{topics.PREFIX}/ground/+/rx/#"),
    ),
    # The gateway: as handoff, and the link states it watches. Replies are read under every
    # ground/+/rx/#: a requester's instance id is its own choice, not known to the ACL.
    ROLE_GATEWAY: (
        ("read", topics.NODE_STATUS_FILTER),
        ("read", topics.NODE_LOAD_FILTER),
        ("read", topics.SHARD_STATUS_FILTER),
        ("read", topics.LINK_STATE_FILTER),
        ("write", f"{topics.PREFIX}/ground/+/tx/#"),
        ("read", f"{topics.PREFIX}/ground/+/rx/#"),
    ),
}
"""The least-privilege service accounts of a TLS broker (a client certificate's common name
selects one); ``gp-service`` keeps read and write under ``gp/v1/#`` for tools and ``up``."""

_NODE_GRANTS = (
    ("write", "tx/#"),
    ("readwrite", "status"),
    ("write", "load"),
    ("read", "rx/#"),
)
"""What a node may do under its own ``gp/v1/node/<sat>/`` on a TLS broker: transmit, announce its
status (and read it back, to notice a late Will), report its load, hear what the links deliver
to it. It cannot read its own transmissions or forge a delivery to itself."""


def _tls_acl_text(shards: Mapping[str, tuple[str, ...]], readers: Iterable[str]) -> str:
    """The ACL of a TLS broker: per-role service accounts, nodes, shards, readers."""
    lines = [
        "# generated by groundplane.mqtt.broker (TLS: the account is the certificate's CN)",
        f"user {SERVICE_USER}",
        f"topic readwrite {topics.PREFIX}/#",
    ]
    for role, grants in ROLES.items():
        lines += ["", f"user {role}", f"topic deny {topics.PREFIX}/node/{role}/#"]
        lines += [f"topic {access} {topic}" for access, topic in grants]
    lines += ["", "# every other account is a node whose CN is its satellite id"]
    lines += [f"pattern {access} {topics.PREFIX}/node/%u/{rest}" for access, rest in _NODE_GRANTS]
    for shard_id in sorted(shards):
        username = shard_username(shard_id)
        lines += [
            "",
            f"# nodes shard {shard_id}: its status and its {len(shards[shard_id])} members",
            f"user {username}",
            f"topic deny {topics.PREFIX}/node/{username}/#",
            f"topic readwrite {topics.PREFIX}/shard/{shard_id}/#",
        ]
        for sat in shards[shard_id]:
            lines += [
                f"topic {access} {topics.PREFIX}/node/{sat}/{rest}" for access, rest in _NODE_GRANTS
            ]
    return "\n".join(lines) + "\n" + _reader_acl_text(readers)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise FailedPrecondition(
            "the 'mosquitto' binary is not on PATH; install Mosquitto 2.x "
            "(e.g. apt-get install mosquitto) or pass --broker mqtt://… for an existing broker"
        )
    return found


async def _reap(process: asyncio.subprocess.Process) -> None:
    """SIGKILL a child process (if still running) and wait for it, so none is left behind."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await process.wait()


async def _accepts(host: str, port: int, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class PrivateBroker:
    """A Mosquitto process owned by this object, on 127.0.0.1 and a fixed free port.

    Use as ``async with PrivateBroker(nodes=["25544"]) as broker:``; ``broker.address`` is the
    service account, ``broker.node_address("25544")`` a node's. :meth:`kill` (SIGKILL) and
    :meth:`start` again reuse the port, the credentials and the persistence database.
    """

    def __init__(  # noqa: PLR0913 - every Mosquitto setting the tests and services vary, by keyword
        self,
        *,
        nodes: Iterable[str] = (),
        port: int | None = None,
        workdir: Path | None = None,
        autosave_interval_s: int = 1,
        autosave_on_changes: bool = False,
        max_queued_messages: int = 10_000,
        readers: Iterable[str] = (),
        shards: Mapping[str, Iterable[str]] | None = None,
        tls: BrokerServerTls | None = None,
        identities: Mapping[str, BrokerTls] | None = None,
    ) -> None:
        if autosave_interval_s < 1:
            raise InvalidArgument(
                f"autosave_interval_s must be >= 1 (seconds, or changes with "
                f"autosave_on_changes), got {autosave_interval_s}"
            )
        self._readers = _reader_names(readers)
        self._own_workdir = workdir is None
        self._workdir = (
            Path(tempfile.mkdtemp(prefix="gp-mosquitto-")) if workdir is None else workdir
        )
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._port = port if port is not None else free_loopback_port()
        self._autosave_interval_s = autosave_interval_s
        self._autosave_on_changes = autosave_on_changes
        self._max_queued_messages = max_queued_messages
        self._passwords: dict[str, str] = {SERVICE_USER: secrets.token_urlsafe(18)}
        for node in nodes:
            self._passwords[topics.check_node_id(node)] = secrets.token_urlsafe(18)
        for reader in self._readers:
            self._passwords[reader] = secrets.token_urlsafe(18)
        self._shards = _shard_members(shards or {})
        for shard_id in self._shards:
            self._passwords[shard_username(shard_id)] = secrets.token_urlsafe(18)
        self._tls = tls
        self._identities = dict(identities or {})
        if self._identities and tls is None:
            raise InvalidArgument("client identities (certificates) need tls=BrokerServerTls(...)")
        self._process: asyncio.subprocess.Process | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def address(self) -> BrokerAddress:
        """The service account (read and write under ``gp/v1/#``)."""
        return self._account(SERVICE_USER, self._passwords[SERVICE_USER])

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def tls(self) -> BrokerServerTls | None:
        """The TLS files when the broker speaks TLS (None: plaintext with passwords)."""
        return self._tls

    def _account(self, username: str, password: str) -> BrokerAddress:
        """The address of an account: its password, or over TLS its certificate files (given
        as ``identities``, keyed by account; the certificate's common name must be it)."""
        if self._tls is None:
            return BrokerAddress(self.host, self._port, username, password)
        client = self._identities.get(username)
        if client is None:
            raise FailedPrecondition(
                f"the broker speaks TLS and has no client certificate for account {username!r}; "
                f"pass identities={{{username!r}: BrokerTls(...)}} (accounts with certificates: "
                f"{sorted(self._identities)}), or use tls_address(BrokerTls(...))"
            )
        return self.tls_address(client)

    def tls_address(self, client: BrokerTls) -> BrokerAddress:
        """A client of the TLS broker: the account is ``client``'s certificate common name."""
        if self._tls is None:
            raise FailedPrecondition(
                "this broker speaks plaintext with passwords; pass tls=BrokerServerTls(...) "
                "to PrivateBroker for certificate logins"
            )
        return BrokerAddress(self.host, self._port, tls=client)

    def refused_handshakes_total(self) -> int:
        """TLS connections the broker refused so far, counted from its log: an ``OpenSSL
        Error`` line or a ``Client connection from … failed: …`` line each (no certificate, a
        certificate of another CA, a plaintext client on the TLS port: ``wrong version
        number``). A TCP connection closed before any TLS byte (``unexpected eof``, as the start
        probe does) is not counted. A refused publish is logged by Mosquitto only at ``debug``
        level (not enabled: one line per packet); the client counts it
        (:attr:`~groundplane.mqtt.client.MqttClient.refused_publishes_total`)."""
        path = self._workdir / "mosquitto.log"
        if not path.exists():
            return 0
        return sum(
            1
            for line in path.read_text(errors="replace").splitlines()
            if ("OpenSSL Error" in line or "Client connection from" in line)
            and "unexpected eof" not in line
        )

    def node_address(self, node_id: str) -> BrokerAddress:
        """The account of node ``node_id`` (only ``gp/v1/node/<node_id>/#``)."""
        password = self._passwords.get(node_id)
        if password is None or node_id.startswith(topics.SERVICE_USER_PREFIX):
            known = sorted(
                n for n in self._passwords if not n.startswith(topics.SERVICE_USER_PREFIX)
            )
            raise InvalidArgument(
                f"no broker account for node {node_id!r}; nodes with accounts: {known} "
                "(a node gets an account when its id is in PrivateBroker(nodes=...))"
            )
        return self._account(node_id, password)

    def shard_address(self, shard_id: str) -> BrokerAddress:
        """The account of nodes shard ``shard_id`` (its members' node topics and its own)."""
        if shard_id not in self._shards:
            raise InvalidArgument(
                f"no broker account for shard {shard_id!r}; shards with accounts: "
                f"{sorted(self._shards)} (pass shards={{shard_id: [sats]}} to PrivateBroker)"
            )
        username = shard_username(shard_id)
        return self._account(username, self._passwords[username])

    def shard_members(self, shard_id: str) -> tuple[str, ...]:
        """The satellites shard ``shard_id`` may speak for (sorted)."""
        self.shard_address(shard_id)
        return self._shards[shard_id]

    def reader_address(self, username: str) -> BrokerAddress:
        """A read-only account given as ``readers``: subscribe to ``gp/v1/#``, publish nothing."""
        if username not in self._readers:
            raise InvalidArgument(
                f"no read-only broker account {username!r}; read-only accounts: "
                f"{sorted(self._readers)} (pass readers=[...] to PrivateBroker)"
            )
        return self._account(username, self._passwords[username])

    # -- configuration ---------------------------------------------------------------------------

    def _config_text(self) -> str:
        user = pwd.getpwuid(os.geteuid()).pw_name
        persistence = self._workdir / "data"
        lines = [
            "# generated by groundplane.mqtt.broker; edits are overwritten",
            "per_listener_settings false",
            f"user {user}",
            f"listener {self._port} 127.0.0.1",
            "protocol mqtt",
            "set_tcp_nodelay true",
            "allow_anonymous false",
            *self._tls_lines(),
            f"acl_file {self._workdir / 'acl'}",
            "persistence true",
            f"persistence_location {persistence}/",
            f"autosave_interval {self._autosave_interval_s}",
            f"autosave_on_changes {'true' if self._autosave_on_changes else 'false'}",
            f"max_queued_messages {self._max_queued_messages}",
            "max_inflight_messages 100",
            f"log_dest file {self._workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        return "\n".join(lines) + "\n"

    def _tls_lines(self) -> list[str]:
        if self._tls is None:
            return [f"password_file {self._workdir / 'passwords'}"]
        return [
            f"cafile {self._tls.ca_file}",
            f"certfile {self._tls.cert_file}",
            f"keyfile {self._tls.key_file}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
        ]

    def _acl_text(self) -> str:
        if self._tls is not None:
            return _tls_acl_text(self._shards, self._readers)
        return (
            (
                "# generated by groundplane.mqtt.broker\n"
                f"user {SERVICE_USER}\n"
                f"topic readwrite {topics.PREFIX}/#\n"
                "\n"
                "# every other account is a node whose username is its satellite id\n"
                f"pattern readwrite {topics.PREFIX}/node/%u/#\n"
            )
            + _reader_acl_text(self._readers)
            + _shard_acl_text(self._shards)
        )

    async def _write_password_file(self) -> None:
        path = self._workdir / "passwords"
        text = "".join(f"{user}:{password}\n" for user, password in self._passwords.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        tool = shutil.which("mosquitto_passwd")
        if tool is None:
            raise FailedPrecondition(
                "the 'mosquitto_passwd' tool is not on PATH (it ships with the mosquitto package)"
            )
        process = await asyncio.create_subprocess_exec(
            tool,
            "-U",
            str(path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for us must not kill it mid-write
        )
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                _, stderr = await process.communicate()
        except BaseException:  # timed out or cancelled: never leave the tool running
            await _reap(process)
            raise
        if process.returncode != 0:
            raise FailedPrecondition(
                f"mosquitto_passwd -U failed ({process.returncode}): {stderr.decode().strip()}"
            )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        path = self._workdir / "mosquitto.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start Mosquitto and return once it accepts TCP connections on its port."""
        if self.running:
            return
        (self._workdir / "data").mkdir(exist_ok=True)
        (self._workdir / "mosquitto.conf").write_text(self._config_text())
        (self._workdir / "acl").write_text(self._acl_text())
        if self._tls is None:
            await self._write_password_file()
        self._process = await asyncio.create_subprocess_exec(
            # Ends with this process even when it is killed -9 (no orphan broker).
            *dying_with_parent([_mosquitto_binary(), "-c", str(self._workdir / "mosquitto.conf")]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground process group)
            # reaches only our process, which stops its services first and the broker last.
            start_new_session=True,
        )
        process = self._process
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline:
                if process.returncode is not None:
                    raise Unavailable(
                        f"mosquitto exited with {process.returncode} while starting on port "
                        f"{self._port}; log tail:\n{self.log_tail()}"
                    )
                if await _accepts(self.host, self._port, timeout_s=0.5):
                    log.info("broker_started", port=self._port, pid=process.pid)
                    return
                await asyncio.sleep(0.02)
            raise Unavailable(
                f"mosquitto did not accept connections on 127.0.0.1:{self._port} within "
                f"{timeout_s} s; log tail:\n{self.log_tail()}"
            )
        except BaseException:  # failed, timed out or cancelled: never orphan mosquitto
            await _reap(process)
            raise

    async def kill(self) -> None:
        """SIGKILL the broker (no final save: what was not autosaved is lost)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.kill()
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await process.wait()
        log.info("broker_killed", port=self._port)

    async def stop(self) -> None:
        """SIGTERM the broker (it saves its database) and wait; SIGKILL after a timeout."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            await self.kill()
        log.info("broker_stopped", port=self._port)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:  # __aexit__ will not run: remove what this object created
            self._remove_own_workdir()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            self._remove_own_workdir()

    def _remove_own_workdir(self) -> None:
        """Delete the working directory if this object made it (a temporary directory)."""
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
