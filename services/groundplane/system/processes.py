"""The whole system on one machine, every service its own process: ``groundplane up``'s default.

:class:`ProcessSystem` has the public surface ``groundplane up`` uses of
:class:`~groundplane.system.system.GroundplaneSystem` (``run``, ``stop``, ``wait_ready``,
``status``, ``refresh_counters``, ``stats``, the targets and metrics URLs), and assembles:

1. the **broker**, in this process as in-process (a private Mosquitto, or ``--broker``);
2. one shared **clock**: a :class:`~groundplane.kernel.clock.ClockSpec` taken once from the run's
   :class:`~groundplane.kernel.clock.SimulatedClock` and given to every child as ``--clock``
   (a restarted child rejoins the same time line);
3. a **free port** per child, chosen once up front and kept across restarts (so clients that
   know a target keep reaching the service after its restart);
4. the **children**, under a :class:`~groundplane.system.supervisor.Supervisor`, started in
   stages (:data:`START_STAGES`), each stage awaited ready (gRPC health ``readiness``) before
   the next: ``tracking``; ``links`` and the ``nodes`` shards (``ceil(satellites /
   NODES_PER_SHARD)`` of them, ``--shard i/n``); ``routing`` and ``handoff``; ``gateway``
   (:func:`child_specs` builds their command lines; the broker URL, which holds a password,
   goes in ``GROUNDPLANE_BROKER`` of their environment, and ``up``'s own ``GROUNDPLANE_*``
   variables are not passed on);
5. in this process: the synthetic **load** through the gateway's gRPC target, the **jobs**
   through the handoff service's gRPC (:class:`~groundplane.system.handoff.GrpcJobs`), and what
   the status line shows: nodes online from its own
   :class:`~groundplane.node.client.NodeDirectory` (MQTT), links up from the retained link
   states, satellites visible from the route table (``WatchRouteTable``), handoff counts from
   ``ListHandoffs``, duplicate job items from the nodes shards' ``--execution-log`` files.

Every file of the run is in its work folder (``config.workdir``, a temporary folder when None):
the children's logs (``processes/<child>.log``), the tracking catalog, the handoff store
(``handoff.sqlite``, or in ``config.handoff_dir``), the stations as a sites CSV, the execution
logs. :meth:`ProcessSystem.stop` stops the load and the jobs, closes this run's sessions, takes
the final counters, then the supervisor stops the children in reverse order (gateway first,
tracking last), then the broker.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from groundplane.gateway.auth import token_sha256
from groundplane.handoff.v1 import handoff_pb2, handoff_pb2_grpc
from groundplane.kernel.authz import ADMIN
from groundplane.kernel.clock import Clock, SimulatedClock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.kernel.pki import mint_local_pki
from groundplane.kernel.tls import TlsFiles, configure_process_tls, open_channel, process_tls
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.broker import (
    ROLE_GATEWAY,
    ROLE_HANDOFF,
    ROLE_LINKS,
    ROLE_ROUTING,
    SERVICE_USER,
    BrokerAddress,
    BrokerServerTls,
    BrokerTls,
    PrivateBroker,
    free_loopback_port,
    shard_username,
)
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node.client import ONLINE, NodeDirectory
from groundplane.node.shard import shard_members
from groundplane.orbit.sites import Site
from groundplane.routing.client import WatchedTableSource
from groundplane.scenario import DEFAULT_MODEL, DEFAULT_POLICY
from groundplane.system.handoff import ExecutionFiles, GrpcJobs, JobLoad
from groundplane.system.load import GroundLoad
from groundplane.system.report import RunStats, energy_counters
from groundplane.system.run import (
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    close_sessions,
    start_loads,
    wait_first_table,
)
from groundplane.system.supervisor import ChildSpec, RestartPolicy, Supervisor
from groundplane.system.system import MANAGER_WALL_S, Status, SystemConfig

log = structlog.get_logger("groundplane.system.processes")

NODES_PER_SHARD = 400
"""Node agents per ``serve nodes`` process."""
CHILD_READY_TIMEOUT_S = 120.0
"""Wall seconds a child may take to become ready (a nodes shard: all its agents born)."""
CHILD_DRAIN_GRACE_S = 2.0
"""``--drain-grace`` of every child."""
CHILD_STOP_GRACE_S = CHILD_DRAIN_GRACE_S + 8.0
"""Wall seconds from SIGTERM to SIGKILL: the drain and the process's own shutdown."""
CALL_TIMEOUT_S = 10.0
"""Wall seconds of one gRPC call of this process to a child."""
ENV_PREFIX = "GROUNDPLANE_"
BROKER_ENV = "GROUNDPLANE_BROKER"
"""``--broker`` of links, nodes, routing, handoff and gateway (other children have no such flag
and ignore it)."""
NODE_PASSWORD_ENV = "GROUNDPLANE_NODE_PASSWORD"
"""The node accounts' password on an existing broker (``--broker``), passed on to the nodes."""
START_STAGES = (
    ("tracking",),
    ("links", "nodes"),
    ("routing", "handoff"),
    ("gateway",),
    ("dashboard",),
)
"""Children start stage by stage, those of one stage at the same time, each stage once the one
before is ready: links and the nodes shards need tracking; routing and handoff need the nodes
(and links); the gateway needs routing and handoff; the dashboard (``up --dashboard``) watches
all of them. ``nodes`` stands for every shard. The stop
goes one child at a time, in the reverse order of the starts."""


CHILD_ACCOUNTS = {
    "links": ROLE_LINKS,
    "routing": ROLE_ROUTING,
    "handoff": ROLE_HANDOFF,
    "gateway": ROLE_GATEWAY,
    "dashboard": SERVICE_USER,
}
"""The broker account (certificate common name) of each child over a TLS broker; nodes shard
``i`` is ``gp-shard-nodes-<i>``."""


@dataclass(frozen=True)
class BrokerTlsFiles:
    """The private broker over TLS: its own files, and each account's client certificate
    (``gp-service`` for ``up`` itself, every :data:`CHILD_ACCOUNTS` role, each shard's
    ``gp-shard-nodes-<i>``), e.g. minted by ``up --tls``."""

    server: BrokerServerTls
    clients: Mapping[str, BrokerTls]

    def for_children(self, shards: int) -> dict[str, BrokerTls]:
        """Each child's files by child name; InvalidArgument naming an account without any."""
        accounts = {**CHILD_ACCOUNTS}
        accounts.update({shard_id(i): shard_username(shard_id(i)) for i in range(shards)})
        missing = sorted({SERVICE_USER, *accounts.values()} - set(self.clients))
        if missing:
            raise InvalidArgument(
                f"the TLS broker needs a client certificate for each account; none for {missing}"
            )
        return {child: self.clients[account] for child, account in accounts.items()}


@dataclass(frozen=True)
class CatalogSource:
    """What tracking loads at start: a synthetic constellation or element files (as ``up``
    was given them; the satellites' ids are the same as in the elements ``up`` holds)."""

    constellation: str | None = None
    element_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.constellation is None) == (not self.element_files):
            raise InvalidArgument(
                "tracking needs either a constellation or element files, got "
                f"{self.constellation!r} and {list(self.element_files)}"
            )


@dataclass(frozen=True)
class ChildPorts:
    """Every child's gRPC port (and the optional metrics ports), fixed for the whole run."""

    tracking: int
    links: int
    nodes: tuple[int, ...]
    routing: int
    handoff: int
    gateway: int
    gateway_metrics: int | None = None
    handoff_metrics: int | None = None
    dashboard: int | None = None
    """The dashboard's health port (None: no dashboard)."""
    dashboard_web: int | None = None
    """The dashboard page's HTTP port."""
    gateway_http: int | None = None

    @classmethod
    def choose(
        cls,
        config: SystemConfig,
        shards: int,
        rng: random.Random | None = None,
        *,
        dashboard_web: int | None = None,
    ) -> ChildPorts:
        """The ports ``config`` names (tracking, handoff, gateway, metrics) and the dashboard's
        page (``dashboard_web``; None: no dashboard), free ones else (:func:`free_port`, all
        distinct)."""
        ports = _PortPicker(rng or random.Random())

        def port_of(address: str) -> int:
            port = int(address.rsplit(":", 1)[1])
            return port if port else ports.free()

        def metrics(port: int | None) -> int | None:
            return None if port is None else (port or ports.free())

        return cls(
            tracking=port_of(config.tracking_address),
            links=ports.free(),
            nodes=tuple(ports.free() for _ in range(shards)),
            routing=ports.free(),
            handoff=port_of(config.handoff_address),
            gateway=port_of(config.gateway_address),
            gateway_metrics=metrics(config.gateway_metrics_port),
            handoff_metrics=metrics(config.handoff_metrics_port),
            dashboard=None if dashboard_web is None else ports.free(),
            dashboard_web=metrics(dashboard_web),
            gateway_http=metrics(config.gateway_http_port),
        )


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_CHOSEN_PORT = 10_000


def ephemeral_ports(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of ephemeral ports (32768-60999 when it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _PortPicker:
    """Free loopback ports below the ephemeral range, each once.

    A port is chosen at the start and bound by its child later (after other children started,
    and again after every restart). A port from the ephemeral range (what binding port 0 gives)
    can meanwhile become the local end of any outgoing connection on the machine, and the
    child's bind then fails; ports below the range are only ever taken by explicit binds.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._taken: set[int] = set()
        low, _high = ephemeral_ports()
        self._range = (LOWEST_CHOSEN_PORT, low) if low - LOWEST_CHOSEN_PORT >= 1000 else None

    def free(self) -> int:
        if self._range is not None:
            for _ in range(200):
                port = self._rng.randrange(*self._range)
                if port not in self._taken and _bindable(port):
                    self._taken.add(port)
                    return port
        port = free_loopback_port()  # no room below the ephemeral range: take one in it
        self._taken.add(port)
        return port


@dataclass(frozen=True)
class ProcessPlan:
    """Everything the children's command lines are made of."""

    workdir: Path
    broker_url: str
    catalog: CatalogSource
    sites_csv: Path
    min_elevation_deg: float
    satellites: int
    ports: ChildPorts
    clock_spec: str | None
    """``--clock`` of every child; None: real time."""
    handoff_db: Path
    link_tick_s: float = 1.0
    route_tick_s: float = 1.0
    pass_horizon_s: float = 4 * 3600.0
    lead_margin_s: float = 5.0
    min_dwell_s: float = 30.0
    operation_wall_s: float = MANAGER_WALL_S
    model: str | None = None
    """``--model`` of the nodes; None: their default, the built-in model."""
    load_interval_s: float = 2.0
    default_deadline_s: float = 10.0
    shard_broker_urls: tuple[str, ...] | None = None
    """Each nodes shard's own broker URL (its shard account), by shard index; None: the
    service account's ``broker_url`` for every shard."""
    tenants_file: Path | None = None
    """``--tenants`` of the gateway (JSON); None: the gateway's demo tenant."""
    dashboard_host: str = "127.0.0.1"
    """Where the dashboard's page listens (``up --dashboard HOST:PORT``)."""
    env: dict[str, str] | None = None
    """The children's environment, to which ``GROUNDPLANE_BROKER`` is added (None: ``up``'s own
    without its ``GROUNDPLANE_*`` variables, :func:`child_environment`)."""
    program: tuple[str, ...] = (sys.executable, "-m", "groundplane.cli.main")
    otlp_endpoint: str | None = None
    """``--otlp-endpoint`` of every child; None: none (they may still read OTEL_* variables)."""
    tls: Mapping[str, TlsFiles] | None = None
    """Each service's certificate by identity (``up --tls``: mutual TLS between every child);
    None: plaintext on loopback."""
    energy: bool = False
    """``--energy`` of the nodes shards (``up --energy``)."""
    routing_policy: str | None = None
    """``--policy`` of routing; None: its default."""
    broker_tls: Mapping[str, BrokerTls] | None = None
    """Over a TLS broker (``mqtts://`` URLs): each child's client certificate files by child
    name (``links``, ``nodes-0``, ``routing``, …; the certificate's common name is the child's
    account, e.g. ``gp-links``, ``gp-shard-nodes-0``), passed in the child's
    ``GROUNDPLANE_BROKER_TLS_CA``/``_CERT``/``_KEY``. None: a plaintext broker."""

    @property
    def shards(self) -> int:
        return shard_count(self.satellites)

    def execution_log(self, shard: int) -> Path:
        return self.workdir / f"executions-{shard}.jsonl"

    @property
    def execution_logs(self) -> list[Path]:
        return [self.execution_log(i) for i in range(self.shards)]


def shard_id(index: int) -> str:
    """``--shard-id`` of nodes shard ``index`` (its broker account is ``gp-shard-<id>``)."""
    return f"nodes-{index}"


def shard_count(satellites: int) -> int:
    """Nodes shards for ``satellites`` agents (at least one)."""
    return max(1, math.ceil(satellites / NODES_PER_SHARD))


def _target(port: int) -> str:
    return f"127.0.0.1:{port}"


def start_stages(specs: Sequence[ChildSpec]) -> list[list[ChildSpec]]:
    """``specs`` grouped by :data:`START_STAGES` (a child's service is its name before ``-``)."""
    stage_of = {service: index for index, stage in enumerate(START_STAGES) for service in stage}
    stages: list[list[ChildSpec]] = [[] for _ in START_STAGES]
    for spec in specs:
        service = spec.name.split("-", 1)[0]
        if service not in stage_of:
            raise InvalidArgument(f"no start stage for child {spec.name!r}")
        stages[stage_of[service]].append(spec)
    return [stage for stage in stages if stage]


def child_specs(plan: ProcessPlan) -> list[ChildSpec]:
    """The children of ``plan`` in start order, with the flags of ``groundplane serve``."""
    ports = plan.ports
    tracking, routing, handoff = (
        _target(ports.tracking),
        _target(ports.routing),
        _target(ports.handoff),
    )

    # The broker URL carries the service account's password: in the environment (readable by
    # this user only), not on a command line every user of the machine can read.
    env = plan.env if plan.env is not None else child_environment(os.environ)

    def spec(
        name: str, service: str, port: int, *flags: str, broker_url: str = plan.broker_url
    ) -> ChildSpec:
        common = ["--host", "127.0.0.1", "--port", str(port)]
        if plan.clock_spec is not None:
            common += ["--clock", plan.clock_spec]
        common += [
            "--unready-delay",
            "0",
            "--drain-grace",
            f"{CHILD_DRAIN_GRACE_S:g}",
            "--log-format",
            "json",
        ]
        if plan.otlp_endpoint is not None:
            common += ["--otlp-endpoint", plan.otlp_endpoint]
        return ChildSpec(
            name=name,
            argv=[*plan.program, "serve", service, *common, *flags],
            health_target=_target(port),
            env={
                **env,
                BROKER_ENV: broker_url,
                **tls_environment(plan.tls, service),
                **broker_tls_environment(plan, name),
            },
            ready_timeout_s=CHILD_READY_TIMEOUT_S,
            stop_grace_s=CHILD_STOP_GRACE_S,
        )

    catalog = (
        ["--constellation", plan.catalog.constellation]
        if plan.catalog.constellation is not None
        else [arg for path in plan.catalog.element_files for arg in ("--elements", path)]
    )
    specs = [
        spec(
            "tracking",
            "tracking",
            ports.tracking,
            "--db",
            str(plan.workdir / "tracking.sqlite3"),
            *catalog,
            "--sites",
            str(plan.sites_csv),
            "--min-elevation",
            f"{plan.min_elevation_deg:g}",
        ),
        spec(
            "links",
            "links",
            ports.links,
            "--tracking",
            tracking,
            "--link-tick",
            f"{plan.link_tick_s:g}",
        ),
    ]
    for shard, port in enumerate(ports.nodes):
        specs.append(
            spec(
                shard_id(shard),
                "nodes",
                port,
                "--tracking",
                tracking,
                "--shard",
                f"{shard}/{len(ports.nodes)}",
                "--shard-id",
                shard_id(shard),
                *([] if plan.model is None else ["--model", plan.model]),
                "--load-interval",
                f"{plan.load_interval_s:g}",
                *(["--energy"] if plan.energy else []),
                "--epoch-dir",
                str(plan.workdir / "epochs"),
                "--execution-log",
                str(plan.execution_log(shard)),
                broker_url=(
                    plan.broker_url
                    if plan.shard_broker_urls is None
                    else plan.shard_broker_urls[shard]
                ),
            )
        )
    specs += [
        spec(
            "routing",
            "routing",
            ports.routing,
            "--tracking",
            tracking,
            "--route-tick",
            f"{plan.route_tick_s:g}",
            "--pass-horizon",
            f"{plan.pass_horizon_s:g}",
            *([] if plan.routing_policy is None else ["--policy", plan.routing_policy]),
        ),
        spec(
            "handoff",
            "handoff",
            ports.handoff,
            "--tracking",
            tracking,
            "--db",
            str(plan.handoff_db),
            "--lead-margin",
            f"{plan.lead_margin_s:g}",
            "--min-dwell",
            f"{plan.min_dwell_s:g}",
            "--operation-wall",
            f"{plan.operation_wall_s:g}",
            *(["--energy-aware"] if plan.routing_policy == "energy-aware" else []),
            *_metrics_flag(ports.handoff_metrics),
        ),
        spec(
            "gateway",
            "gateway",
            ports.gateway,
            "--routing",
            routing,
            "--handoff",
            handoff,
            "--instance-id",
            "gw-up",
            "--default-deadline",
            f"{plan.default_deadline_s:g}",
            *([] if plan.tenants_file is None else ["--tenants", str(plan.tenants_file)]),
            *_metrics_flag(ports.gateway_metrics),
            *([] if ports.gateway_http is None else ["--http-listen", _target(ports.gateway_http)]),
        ),
    ]
    if ports.dashboard is not None and ports.dashboard_web is not None:
        specs.append(
            spec(
                "dashboard",
                "dashboard",
                ports.dashboard,
                "--tracking",
                tracking,
                "--routing",
                routing,
                "--handoff",
                handoff,
                "--gateway",
                _target(ports.gateway),
                "--web-host",
                plan.dashboard_host,
                "--web-port",
                str(ports.dashboard_web),
            )
        )
    return specs


def tls_environment(tls: Mapping[str, TlsFiles] | None, identity: str) -> dict[str, str]:
    """``GROUNDPLANE_TLS_CERT``/``_KEY``/``_CA`` of ``identity``'s files (empty without TLS)."""
    if tls is None:
        return {}
    files = tls[identity]
    return {
        f"{ENV_PREFIX}TLS_CERT": str(files.cert),
        f"{ENV_PREFIX}TLS_KEY": str(files.key),
        f"{ENV_PREFIX}TLS_CA": str(files.ca),
    }


TLS_IDENTITIES = ("tracking", "links", "nodes", "routing", "handoff", "gateway", "dashboard")
"""The identities ``up --tls`` mints a certificate for (one per service; ``admin`` besides)."""


BROKER_TLS_ENV = (
    "GROUNDPLANE_BROKER_TLS_CA",
    "GROUNDPLANE_BROKER_TLS_CERT",
    "GROUNDPLANE_BROKER_TLS_KEY",
)


def broker_tls_environment(plan: ProcessPlan, child: str) -> dict[str, str]:
    """``GROUNDPLANE_BROKER_TLS_*`` of ``child`` (empty for a plaintext broker and for a child
    without files, e.g. tracking, which has no broker: one that needs them and got none stops at
    start with ``mqtts://`` URL's error naming the options)."""
    tls = None if plan.broker_tls is None else plan.broker_tls.get(child)
    if tls is None:
        return {}
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    return {name: str(path) for name, path in zip(BROKER_TLS_ENV, files, strict=True) if path}


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``up``'s environment without its ``GROUNDPLANE_*`` variables: those are ``up``'s own
    options, and every child would read them as its own (``GROUNDPLANE_PORT``, …)."""
    return {key: value for key, value in environ.items() if not key.startswith(ENV_PREFIX)}


def _metrics_flag(port: int | None) -> list[str]:
    return [] if port is None else ["--metrics-port", str(port)]


def model_flag(config: SystemConfig) -> str | None:
    """``--model`` of the nodes: none for the built-in model (their default, whose answer
    length the load predicts), else ``NAME:PREFILL_S:DECODE_S`` (the flag carries no answer
    length: the nodes use the default range)."""
    model = config.model
    if model == DEFAULT_MODEL:
        return None
    return f"{model.name}:{model.prefill_s_per_token!r}:{model.decode_s_per_token!r}"


def write_sites_csv(path: Path, stations: Sequence[Site]) -> None:
    """The stations as ``id,name,lat,lon,alt_m`` (what ``serve tracking --sites`` reads).

    A CSV has no horizon masks and one minimum elevation (``--min-elevation``) for all.
    """
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "name", "lat", "lon", "alt_m"])
        for site in stations:
            writer.writerow(
                [site.id, site.name, repr(site.lat_deg), repr(site.lon_deg), repr(site.alt_m)]
            )


def write_tenants_json(path: Path, tenants: Mapping[str, Mapping[str, object]]) -> None:
    """The gateway's tenants (``serve gateway --tenants``), created readable by this user only,
    with each clear token replaced by its SHA-256 (``token_sha256``): the gateway needs only the
    digests, so no clear token is written to disk."""
    hashed: dict[str, dict[str, object]] = {}
    for tenant_id, entry in tenants.items():
        tokens = entry.get("tokens", [])
        digests = list(entry.get("token_sha256", []))  # type: ignore[call-overload]  # checked by the gateway
        if isinstance(tokens, list):
            digests += [token_sha256(str(token)) for token in tokens]
        hashed[tenant_id] = {
            **{k: v for k, v in entry.items() if k != "tokens"},
            "token_sha256": digests,
        }
    path.unlink(missing_ok=True)  # a new file: O_CREAT's mode applies only to a new one
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(hashed, indent=2) + "\n")


class ProcessSystem:
    """One running multi-process system; :meth:`run` serves until :meth:`stop` (or a child is
    given up on: :class:`~groundplane.system.supervisor.ChildFailedError` out of :meth:`run`)."""

    def __init__(  # noqa: PLR0913 - the options after `*` are by keyword, each with a default
        self,
        config: SystemConfig,
        clock: Clock,
        catalog: CatalogSource,
        *,
        restart_policy: RestartPolicy | None = None,
        program: Sequence[str] | None = None,
        dashboard: tuple[str, int] | None = None,
        tls: bool = False,
        broker_tls: BrokerTlsFiles | None = None,
    ) -> None:
        """``program`` is what runs ``serve SERVICE …`` (default: this Python's groundplane);
        ``dashboard`` (host, port; 0 picks a free one) adds a ``serve dashboard`` child;
        ``tls`` mints a throw-away CA and a certificate per child in the run's folder, runs
        every child with mutual TLS, and this process's own calls with the ``admin`` identity
        (:attr:`tls_files`); ``broker_tls`` runs the private broker over TLS, each child
        logging in with its own certificate (:data:`CHILD_ACCOUNTS`)."""
        if broker_tls is not None and config.broker_url is not None:
            raise InvalidArgument(
                "broker TLS files are for the private broker; an existing broker (--broker) "
                "takes mqtts:// with GROUNDPLANE_BROKER_TLS_* instead"
            )
        self.config = config
        self.clock = clock
        self.catalog = catalog
        self.stats = RunStats(keep_trace=config.keep_trace)
        self.stations = tuple(config.stations)
        self.satellite_ids = [e.catalog_id for e in config.elements]
        self.directory = NodeDirectory()
        self.links_up: set[tuple[str, str]] = set()
        self.broker_address: BrokerAddress | None = None
        self.reader_address: BrokerAddress | None = None
        self.supervisor: Supervisor | None = None
        self.plan: ProcessPlan | None = None
        self.tables: WatchedTableSource | None = None
        self.load: GroundLoad | None = None
        self.jobs: JobLoad | None = None
        self.run_id = uuid.uuid4().hex[:8]
        """Distinguishes this run's session and job ids from earlier runs on the same store."""
        self._restart_policy = restart_policy
        self._program = tuple(program) if program is not None else None
        self._dashboard = dashboard
        self._broker_tls = broker_tls
        self._child_tls: dict[str, BrokerTls] | None = None
        self._shard_urls: tuple[str, ...] | None = None
        self._handoff: handoff_pb2_grpc.HandoffServiceAsyncStub | None = None
        self._handoff_after_id = 0
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._run_task: asyncio.Task[object] | None = None
        self._cancelled_start = False
        self._tls = tls
        self.tls_files: dict[str, TlsFiles] | None = None
        """Every identity's certificate files while running with ``tls`` (None otherwise)."""

    # -- what is running ----------------------------------------------------------------------

    def _ports(self) -> ChildPorts:
        if self.plan is None:
            raise RuntimeError("the system is not running")
        return self.plan.ports

    @property
    def tracking_target(self) -> str:
        return _target(self._ports().tracking)

    @property
    def routing_target(self) -> str:
        return _target(self._ports().routing)

    @property
    def handoff_target(self) -> str:
        return _target(self._ports().handoff)

    @property
    def gateway_target(self) -> str:
        return _target(self._ports().gateway)

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard page (``up --dashboard``), None without one."""
        port = self._ports().dashboard_web if self.plan is not None else None
        if port is None or self.plan is None:
            return None
        host = self.plan.dashboard_host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"

    @property
    def gateway_http_url(self) -> str | None:
        """The gateway's OpenAI base URL when ``config.gateway_http_port`` is set."""
        port = self._ports().gateway_http if self.plan is not None else None
        return None if port is None else f"http://{_target(port)}/v1"

    @property
    def gateway_metrics_url(self) -> str | None:
        port = self._ports().gateway_metrics if self.plan is not None else None
        return None if port is None else f"http://127.0.0.1:{port}/metrics"

    @property
    def handoff_metrics_url(self) -> str | None:
        port = self._ports().handoff_metrics if self.plan is not None else None
        return None if port is None else f"http://127.0.0.1:{port}/metrics"

    def status(self) -> Status:
        table = self.tables.current() if self.tables is not None else None
        visible = (
            {p.satellite_id for s in table.stations for p in s.paths}
            if table is not None
            else set()
        )
        online = sum(1 for view in self.directory.nodes() if view.state == ONLINE)
        return Status(self.stats, len(visible), len(self.links_up), online)

    async def refresh_counters(self) -> None:
        """Bring the handoff, job and process counters of :attr:`stats` up to date."""
        self._count_processes()
        if self._handoff is not None:
            await self._count_handoffs(self._handoff)
        if self.jobs is not None:
            await self.jobs.update()
        if self.config.energy:
            self.stats.energy = energy_counters(self.directory)

    async def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    def stop(self) -> None:
        """Stop the run: at once while it is still starting (a child may take minutes to be
        ready), else after the load, the jobs and the children have stopped in order."""
        self._stop.set()
        task = self._run_task
        if not self._ready.is_set() and task is not None and not self._cancelled_start:
            self._cancelled_start = True
            task.cancel()

    # -- assembly -----------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[ProcessSystem], Awaitable[None]] | None = None) -> None:
        """Start everything, call ``on_ready`` (a task of the group), serve until stopped.

        A child that fails to start, or is given up on, ends the run with its
        :class:`~groundplane.system.supervisor.ChildFailedError` (not wrapped in a group).
        """
        self._run_task = asyncio.current_task()
        try:
            await self._run(on_ready)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancelled_start and task is not None and task.uncancel() == 0:
                log.info("system_stopped_while_starting")
                return
            raise
        except BaseExceptionGroup as group:
            failures = _leaves(group)
            first = failures[0] if failures else None
            if isinstance(first, GroundplaneError) and all(
                isinstance(e, GroundplaneError | asyncio.CancelledError) for e in failures
            ):
                raise first from group
            raise

    async def _run(self, on_ready: Callable[[ProcessSystem], Awaitable[None]] | None) -> None:
        config = self.config
        async with AsyncExitStack() as stack:
            workdir = config.workdir
            if workdir is None:
                workdir = Path(tempfile.mkdtemp(prefix="groundplane-up-"))
                stack.push(_drop_unless_failed(workdir))
            workdir.mkdir(parents=True, exist_ok=True)
            if self._tls:
                self.tls_files = mint_local_pki(
                    workdir / "tls", [*TLS_IDENTITIES, ADMIN], now=datetime.now(UTC)
                )
                # This process's calls (health watches, route table, handoff, load) as admin.
                stack.callback(configure_process_tls, process_tls())
                configure_process_tls(self.tls_files[ADMIN])
            broker = await self._broker(stack)
            plan = self._plan(workdir, broker, config.node_password if config.broker_url else None)
            self.plan = plan

            observer = await stack.enter_async_context(
                MqttClient(broker, client_id=f"groundplane-up-{self.run_id}", clock=self.clock)
            )
            await observer.wait_connected(STARTUP_TIMEOUT_S)
            await self.directory.attach(observer)
            await observer.subscribe(topics.LINK_STATE_FILTER, self._on_link_state)

            # Runs after the supervisor stopped every child: its restart counts are final.
            stack.callback(self._count_processes)
            supervisor = await stack.enter_async_context(
                Supervisor(workdir / "processes", policy=self._restart_policy)
            )
            self.supervisor = supervisor
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            background: list[asyncio.Task[None]] = []
            stack.callback(lambda: [task.cancel() for task in background])

            for stage in start_stages(child_specs(plan)):
                async with asyncio.TaskGroup() as starting:
                    for child in stage:
                        starting.create_task(supervisor.start(child), name=f"up-start:{child.name}")
            tables = WatchedTableSource(self.routing_target)
            self.tables = tables
            background.append(tasks.create_task(tables.run(), name="up-route-table-watch"))
            # Routing's table (as this process follows it) serves the model.
            await wait_first_table(tables, config.model.name, "this process")

            channel = await stack.enter_async_context(open_channel(self.handoff_target))
            handoff: handoff_pb2_grpc.HandoffServiceAsyncStub = handoff_pb2_grpc.HandoffServiceStub(
                channel
            )
            self._handoff_after_id = await _last_event_id(handoff)
            self._handoff = handoff
            # Before the children stop: the final handoff counts, this run's sessions closed.
            stack.push_async_callback(self._stop_handoff, handoff)

            self.load, self.jobs = start_loads(
                stack,
                tasks,
                config,
                self.clock,
                self.stats,
                run_id=self.run_id,
                gateway_target=self.gateway_target,
                job_service=GrpcJobs(handoff, timeout_s=CALL_TIMEOUT_S),
                executions=ExecutionFiles(plan.execution_logs),
            )
            self._ready.set()
            log.info("system_ready", children=supervisor.names)
            if on_ready is not None:
                background.append(tasks.create_task(self._call(on_ready), name="system-on-ready"))
            await self._stop.wait()
            log.info("system_stopping")

    async def _call(self, on_ready: Callable[[ProcessSystem], Awaitable[None]]) -> None:
        await on_ready(self)

    async def _broker(self, stack: AsyncExitStack) -> BrokerAddress:
        """A private Mosquitto (stopped by ``stack``, after the children) or ``--broker``; the
        service account."""
        config = self.config
        if config.broker_url is not None:
            self.broker_address = BrokerAddress.from_url(config.broker_url)
            return self.broker_address
        readers = () if config.broker_reader is None else (config.broker_reader,)
        # One account per nodes shard (``gp-shard-nodes-<i>``: its members' topics), with the
        # members ``serve nodes --shard i/n`` computes from the same catalog.
        count = shard_count(len(self.satellite_ids))
        shards = {
            shard_id(index): shard_members(self.satellite_ids, index, count)
            for index in range(count)
        }
        tls = self._broker_tls
        broker = await stack.enter_async_context(
            PrivateBroker(
                nodes=self.satellite_ids,
                workdir=config.workdir,
                readers=readers,
                shards=shards,
                tls=None if tls is None else tls.server,
                identities=None if tls is None else tls.clients,
            )
        )
        if tls is not None:
            self._child_tls = tls.for_children(count)
        if config.broker_reader is not None:
            self.reader_address = broker.reader_address(config.broker_reader)
        self._shard_urls = tuple(broker.shard_address(shard_id(i)).url for i in range(count))
        self.broker_address = broker.address
        return broker.address

    def _plan(self, workdir: Path, broker: BrokerAddress, node_password: str | None) -> ProcessPlan:
        config = self.config
        sites_csv = workdir / "sites.csv"
        write_sites_csv(sites_csv, self.stations)
        shards = shard_count(len(self.satellite_ids))
        handoff_dir = config.handoff_dir or workdir
        handoff_dir.mkdir(parents=True, exist_ok=True)
        clock_spec = str(self.clock.spec()) if isinstance(self.clock, SimulatedClock) else None
        tenants_file = workdir / "tenants.json"
        write_tenants_json(tenants_file, config.tenants)
        env = child_environment(os.environ)
        if node_password is not None:
            env[NODE_PASSWORD_ENV] = node_password
        program: dict[str, Any] = {} if self._program is None else {"program": self._program}
        return ProcessPlan(
            workdir=workdir,
            broker_url=broker.url,
            catalog=self.catalog,
            sites_csv=sites_csv,
            min_elevation_deg=min(s.min_elevation_deg for s in self.stations),
            satellites=len(self.satellite_ids),
            ports=ChildPorts.choose(
                config,
                shards,
                dashboard_web=None if self._dashboard is None else self._dashboard[1],
            ),
            dashboard_host="127.0.0.1" if self._dashboard is None else self._dashboard[0],
            clock_spec=clock_spec,
            handoff_db=handoff_dir / "handoff.sqlite",
            link_tick_s=config.link_tick_s,
            route_tick_s=config.route_tick_s,
            pass_horizon_s=config.pass_horizon_s,
            lead_margin_s=config.handoff.lead_margin_s,
            min_dwell_s=config.handoff.min_dwell_s,
            operation_wall_s=MANAGER_WALL_S,
            model=model_flag(config),
            load_interval_s=config.load_interval_wall_s,
            default_deadline_s=config.gateway_deadline_wall_s,
            tenants_file=tenants_file,
            shard_broker_urls=self._shard_urls,
            broker_tls=self._child_tls,
            env=env,
            otlp_endpoint=config.otlp_endpoint,
            tls=self.tls_files,
            energy=config.energy,
            routing_policy=(None if config.policy == DEFAULT_POLICY else config.policy.kind.value),
            **program,
        )

    # -- counters -----------------------------------------------------------------------------

    def _count_processes(self) -> None:
        supervisor = self.supervisor
        if supervisor is not None:
            self.stats.processes.restarts = supervisor.restarts
            self.stats.processes.by_service = supervisor.by_service

    async def _count_handoffs(self, handoff: handoff_pb2_grpc.HandoffServiceAsyncStub) -> None:
        """Count the handoff events after the last counted one (none while handoff restarts)."""
        try:
            while True:
                response = await handoff.ListHandoffs(
                    handoff_pb2.ListHandoffsRequest(
                        after_event_id=self._handoff_after_id, limit=10_000
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
                if not response.events:
                    return
                for event in response.events:
                    self.stats.handoffs.count(event.state)
                self._handoff_after_id = response.events[-1].event_id
        except grpc.aio.AioRpcError as error:
            log.warning("handoff_counts_unavailable", code=error.code().name)

    async def _on_link_state(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        state = link_pb2.LinkState()
        try:
            state.ParseFromString(message.payload)
        except DecodeError:
            log.warning("link_state_rejected", topic=message.topic)
            return
        if state.link_id.startswith("isl:"):
            return
        key = (state.station_id, state.satellite_id)
        if state.up:
            self.links_up.add(key)
        else:
            self.links_up.discard(key)

    # -- start and stop -----------------------------------------------------------------------

    async def _stop_handoff(self, handoff: handoff_pb2_grpc.HandoffServiceAsyncStub) -> None:
        """Close this run's sessions (fencing them on their nodes), take the final counts."""
        ours = (f"load-{self.run_id}-session-{index}" for index in range(self.config.sessions))
        await close_sessions(ours, lambda session_id: _close_session(handoff, session_id))
        await self.refresh_counters()
        self._handoff, self.jobs = None, None


def _drop_unless_failed(
    workdir: Path,
) -> Callable[[type[BaseException] | None, BaseException | None, Any], bool]:
    """An exit callback removing the run's temporary work folder, kept when the run failed
    (the children's logs are there)."""

    def exit_(exc_type: type[BaseException] | None, _exc: BaseException | None, _tb: Any) -> bool:
        if exc_type is None or issubclass(exc_type, asyncio.CancelledError):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log.warning("workdir_kept", workdir=str(workdir))
        return False

    return exit_


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of ``group`` and of the groups inside it, depth first."""
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves


async def _last_event_id(handoff: handoff_pb2_grpc.HandoffServiceAsyncStub) -> int:
    """The id of the last handoff event recorded so far (0: none), so the run counts its own."""
    after = 0
    while True:
        response = await handoff.ListHandoffs(
            handoff_pb2.ListHandoffsRequest(after_event_id=after, limit=10_000),
            timeout=CALL_TIMEOUT_S,
        )
        if not response.events:
            return after
        after = response.events[-1].event_id


async def _close_session(
    handoff: handoff_pb2_grpc.HandoffServiceAsyncStub, session_id: str
) -> None:
    try:
        await handoff.CloseSession(
            handoff_pb2.CloseSessionRequest(session_id=session_id), timeout=STOP_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            log.warning("handoff_close_failed", session_id=session_id, code=error.code().name)
