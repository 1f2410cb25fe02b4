"""``groundplane serve nodes``: one shard of node agents over one MQTT connection.

::

    groundplane serve nodes --broker mqtt://gp-shard-0-of-2:PASS@127.0.0.1:1883 \\
        --tracking 127.0.0.1:50051 --shard 0/2 --model synth-7b:0.0005:0.01

Members: ``--satellites ID,ID,…`` names them; ``--shard I/N`` takes every N-th catalog id from
the tracking service's active elements (``TrackingService.ListElements``, fetched once at
start), sorted, starting at the I-th (0-based): shard I of N hosts ``sorted(ids)[I::N]``. The
assignment is stable for a given catalog and spreads each orbital plane over the shards.

The shard connects with ONE account, ``gp-shard-<shard_id>`` (``--shard-id``; by default taken
from the ``--broker`` URL's username, else ``I-of-N``), whose ACL allows exactly its members'
``gp/v1/node/<sat>/#`` and ``gp/v1/shard/<shard_id>/#`` (``PrivateBroker(shards=...)``). Its
liveness is the shard's retained status and Will on ``gp/v1/shard/<shard_id>/status``; each
member's status names the shard (docs/topics.md, "Nodes shards").

Backend: ``--backend synthetic`` (default) serves the ``--model`` synthetic models;
``--backend openai --base-url URL`` serves from any OpenAI-compatible server (vLLM, llama.cpp
server, ...) over one pooled HTTP client shared by the shard's members, ``--model NAME`` the names
it serves (default: the server's ``GET /models``). An API key comes from ``--api-key-env VAR`` or
``--api-key-file FILE``, never from the command line.

gRPC health on ``--port`` (default 50055; no service of its own): NOT_SERVING until every
member's birth is published. ``--metrics-port`` serves ``groundplane_nodes_agents``,
``groundplane_nodes_in_flight`` and ``groundplane_nodes_executions_total`` (with
``--backend openai`` also ``groundplane_nodes_backend_tokens_total{kind=prompt|completion}``,
the server's reported usage). SIGTERM: NOT_SERVING,
every agent drains (DRAINING, admitted work finished, OFFLINE), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.tls import open_channel
from groundplane.kernel.validation import finite_float
from groundplane.mqtt import topics
from groundplane.mqtt.broker import SERVICE_USER, SHARD_USER_PREFIX, BrokerAddress
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import (
    InferenceBackend,
    OpenAIBackend,
    SyntheticBackend,
    SyntheticModelSpec,
)
from groundplane.node.engine import Engine, EngineConfig
from groundplane.node.executions import ExecutionLogWriter, ExecutionRecorder
from groundplane.node.host import parse_model
from groundplane.node.power import ShardPower, energy_metrics, shard_power
from groundplane.node.shard import NodeShard, ShardConfig, shard_members
from groundplane.orbit.elements import ElementSet
from groundplane.scenario import DEFAULT_MODEL as BUILT_IN_MODEL
from groundplane.tracking.client import element_set_from_proto
from groundplane.tracking.v1 import tracking_pb2
from groundplane.tracking.v1.tracking_pb2_grpc import TrackingServiceStub

from . import inputs
from .process import (
    add_broker_argument,
    add_process_arguments,
    add_tracking_argument,
    broker_address,
    listen_address,
    process_clock,
    run_service,
)

log = structlog.get_logger("groundplane.cli.serve_nodes")

DEFAULT_PORT = 50055
DEFAULT_MODEL = (
    f"{BUILT_IN_MODEL.name}:{BUILT_IN_MODEL.prefill_s_per_token!r}:"
    f"{BUILT_IN_MODEL.decode_s_per_token!r}"
)
"""The built-in model's ``--model`` text (its answer length is the built-in one's too)."""
TRACKING_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0


def register(services: Any) -> None:
    nodes = services.add_parser(
        "nodes",
        help="a shard of node agents",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Members: --satellites, or --shard I/N of the tracking catalog (sorted ids, "
        "every N-th from the I-th). The broker account is gp-shard-<shard id>. "
        f"Times: {inputs.TIME_HELP}.",
    )
    add_broker_argument(nodes, "mqtt://gp-shard-<id>:PASSWORD@HOST:PORT, the shard's account")
    add_tracking_argument(
        nodes,
        "the tracking service whose catalog --shard divides (needed with --shard)",
        required=False,
    )
    members = nodes.add_mutually_exclusive_group(required=True)
    members.add_argument("--satellites", metavar="ID,ID,…", help="the satellites to host")
    members.add_argument(
        "--shard", metavar="I/N", help="host shard I (0-based) of N of the tracking catalog"
    )
    nodes.add_argument(
        "--shard-id",
        metavar="NAME",
        help="the shard's id (default: from the --broker username gp-shard-<id>, else I-of-N)",
    )
    nodes.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[:PREFILL_S[:DECODE_S]]",
        help=f"a synthetic model every node serves; repeatable (default {DEFAULT_MODEL}); with "
        "--backend openai: a model NAME the server serves (default: the server's GET /models)",
    )
    add_backend_arguments(nodes)
    nodes.add_argument("--slots", type=int, default=4, help="generation slots per node")
    nodes.add_argument(
        "--queue-limit", type=int, default=16, help="admitted requests waiting per node"
    )
    nodes.add_argument(
        "--load-interval",
        type=finite_float,
        default=1.0,
        metavar="S",
        help="wall seconds between load checks (a changed load is published then; an unchanged "
        "one every 10 intervals)",
    )
    nodes.add_argument(
        "--keepalive",
        type=int,
        default=30,
        metavar="S",
        help="MQTT keepalive of the shard's connection (the Will fires after ≈1.5×)",
    )
    nodes.add_argument(
        "--epoch-dir",
        type=Path,
        metavar="DIR",
        help="keep incarnation counters here (<sat>.epoch, shard-<id>.epoch); default: wall clock",
    )
    nodes.add_argument(
        "--execution-log",
        type=Path,
        metavar="FILE",
        help="append one JSON line per backend execution (request_id, satellite_id, "
        "wall_time_s); several shards may share the file",
    )
    nodes.add_argument(
        "--energy",
        action="store_true",
        help="model each node's power and heat (solar array, battery, radiator; node/energy.py) "
        "in simulated time and report it with the load (needs --tracking for the orbits)",
    )
    add_process_arguments(nodes, default_port=DEFAULT_PORT)
    nodes.set_defaults(handler=run_nodes)


BACKENDS = ("synthetic", "openai")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and the OpenAI-compatible server's flags."""
    group = parser.add_argument_group(
        "backend", "what answers: synthetic models (default) or an OpenAI-compatible server"
    )
    group.add_argument(
        "--backend", choices=BACKENDS, default="synthetic", help="the members' inference backend"
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="--backend openai: the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 "
        "(a URL without a path means its /v1)",
    )
    keys = group.add_mutually_exclusive_group()
    keys.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="--backend openai: the environment variable holding the server's API key",
    )
    keys.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="--backend openai: a file whose first line is the server's API key",
    )
    group.add_argument(
        "--backend-connect-timeout",
        type=finite_float,
        default=5.0,
        metavar="S",
        help="--backend openai: seconds to connect and send a request (5)",
    )
    group.add_argument(
        "--backend-read-timeout",
        type=finite_float,
        default=60.0,
        metavar="S",
        help="--backend openai: longest silence tolerated between two pieces of an answer (60)",
    )
    group.add_argument(
        "--backend-total-timeout",
        type=finite_float,
        default=600.0,
        metavar="S",
        help="--backend openai: longest whole answer, also cut at the request's deadline (600)",
    )


def api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The OpenAI server's API key from ``--api-key-env`` (in ``environ``) or ``--api-key-file``
    (read here: call off the event loop)."""
    if args.api_key_env:
        key = environ.get(args.api_key_env, "").strip()
        if not key:
            raise InvalidArgument(
                f"--api-key-env {args.api_key_env}: that environment variable is not set or empty"
            )
        return key
    if args.api_key_file is not None:
        path: Path = args.api_key_file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise InvalidArgument(f"--api-key-file {path}: cannot read it ({error})") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise InvalidArgument(f"--api-key-file {path}: its first line is empty")
        return key
    return None


def check_backend_arguments(args: argparse.Namespace) -> None:
    """Refuse flags that do not fit ``--backend``."""
    if args.backend == "openai":
        if not args.base_url:
            raise InvalidArgument(
                "--backend openai needs --base-url URL (e.g. http://127.0.0.1:8000/v1)"
            )
        return
    given = [
        flag
        for flag, value in (
            ("--base-url", args.base_url),
            ("--api-key-env", args.api_key_env),
            ("--api-key-file", args.api_key_file),
        )
        if value is not None
    ]
    if given:
        raise InvalidArgument(
            f"{', '.join(given)} configure an OpenAI-compatible server: add --backend openai"
        )


async def openai_backend(args: argparse.Namespace, *, max_connections: int) -> OpenAIBackend:
    """The (not yet entered) OpenAI backend of ``--backend openai``."""
    key = await asyncio.to_thread(api_key, args, os.environ)
    return OpenAIBackend(
        args.base_url,
        list(dict.fromkeys(args.model)) or None,
        api_key=key,
        connect_timeout_s=args.backend_connect_timeout,
        read_timeout_s=args.backend_read_timeout,
        total_timeout_s=args.backend_total_timeout,
        max_connections=max_connections,
    )


async def shared_backend(
    args: argparse.Namespace, stack: AsyncExitStack, *, members: int
) -> OpenAIBackend | None:
    """``--backend openai``: one backend (one pool, a connection per generation slot of every
    member) for the whole shard, entered on ``stack``; None for synthetic models."""
    if args.backend != "openai":
        return None
    backend = await stack.enter_async_context(
        await openai_backend(args, max_connections=args.slots * members)
    )
    log.info("nodes_backend", backend="openai", url=backend.url, models=sorted(backend.models))
    return backend


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 0 ≤ I < N."""
    index_text, separator, count_text = text.partition("/")
    if not separator or not index_text.isdigit() or not count_text.isdigit():
        raise InvalidArgument(f"expected --shard I/N (e.g. 0/2), got {text!r}")
    index, count = int(index_text), int(count_text)
    if not 0 <= index < count:
        raise InvalidArgument(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return index, count


def parse_satellites(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise InvalidArgument(f"expected --satellites ID,ID,…, got {text!r}")
    return [topics.check_node_id(sat) for sat in ids]


def default_shard_id(address: BrokerAddress, shard: tuple[int, int] | None) -> str:
    username = address.username or ""
    if username.startswith(SHARD_USER_PREFIX):
        return username.removeprefix(SHARD_USER_PREFIX)
    if shard is not None:
        return f"{shard[0]}-of-{shard[1]}"
    return "nodes"


async def fetch_catalog_ids(target: str, timeout_s: float = TRACKING_TIMEOUT_S) -> list[str]:
    """The catalog ids of the tracking service's active elements (one ListElements call)."""
    async with open_channel(target) as channel:
        stub = TrackingServiceStub(channel)
        try:
            response = await stub.ListElements(
                tracking_pb2.ListElementsRequest(active_only=True),
                timeout=timeout_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"could not list the catalog of tracking at {target}: "
                f"{error.code().name} {error.details()}"
            ) from None
    return [record.element_set.catalog_id for record in response.records]


async def fetch_elements(target: str, timeout_s: float = TRACKING_TIMEOUT_S) -> list[ElementSet]:
    """The tracking service's active elements (one ListElements call), for the energy model."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = TrackingServiceStub(channel)
        try:
            response = await stub.ListElements(
                tracking_pb2.ListElementsRequest(active_only=True),
                timeout=timeout_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"could not list the elements of tracking at {target}: "
                f"{error.code().name} {error.details()}"
            ) from None
    return [element_set_from_proto(record.element_set) for record in response.records]


@dataclass(frozen=True)
class NodesSettings:
    """What ``serve nodes`` was asked to run (parsed, checked)."""

    broker: BrokerAddress
    shard_id: str
    satellites: tuple[str, ...] | None
    shard: tuple[int, int] | None
    tracking: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NodesSettings:
        broker = broker_address(args)
        shard = parse_shard(args.shard) if args.shard else None
        if shard is not None and not args.tracking:
            raise InvalidArgument("--shard I/N divides the tracking catalog: give --tracking")
        shard_id = topics.check_id("shard id", args.shard_id or default_shard_id(broker, shard))
        expected = SHARD_USER_PREFIX + shard_id
        # Over TLS the account is the client certificate's common name: the broker decides.
        if broker.tls is None and broker.username not in (expected, SERVICE_USER):
            raise InvalidArgument(
                f"shard {shard_id!r} connects as broker account {expected!r}, got username "
                f"{broker.username!r} in --broker"
            )
        satellites = tuple(parse_satellites(args.satellites)) if args.satellites else None
        if args.energy and not args.tracking:
            raise InvalidArgument("--energy needs the nodes' orbits: give --tracking")
        check_backend_arguments(args)
        return cls(broker, shard_id, satellites, shard, args.tracking)


class _ShardCollector(Collector):
    def __init__(
        self, shard: NodeShard, engines: dict[str, Engine], backend: OpenAIBackend | None
    ) -> None:
        self._shard = shard
        self._engines = engines
        self._backend = backend

    def collect(self) -> Any:
        labels = ["shard_id"]
        agents = GaugeMetricFamily("groundplane_nodes_agents", "node agents hosted", labels=labels)
        agents.add_metric([self._shard.shard_id], len(self._engines))
        loads = [engine.load() for engine in self._engines.values()]
        in_flight = GaugeMetricFamily(
            "groundplane_nodes_in_flight", "requests generating now", labels=labels
        )
        in_flight.add_metric([self._shard.shard_id], sum(load.in_flight for load in loads))
        executions = CounterMetricFamily(
            "groundplane_nodes_executions", "requests executed", labels=labels
        )
        executions.add_metric([self._shard.shard_id], sum(load.executed_total for load in loads))
        yield agents
        yield in_flight
        yield executions
        if self._shard.power is not None:
            yield from energy_metrics(self._shard.shard_id, self._shard.power)
        if self._backend is not None:
            tokens = CounterMetricFamily(
                "groundplane_nodes_backend_tokens",
                "tokens the OpenAI-compatible server reported (usage), by kind",
                labels=[*labels, "kind"],
            )
            usage = self._backend.usage
            tokens.add_metric([self._shard.shard_id, "prompt"], usage.prompt_tokens)
            tokens.add_metric([self._shard.shard_id, "completion"], usage.completion_tokens)
            yield tokens


@dataclass(frozen=True)
class RunningNodes:
    target: str
    shard: NodeShard
    metrics_url: str | None = None


def model_specs(texts: Sequence[str]) -> list[SyntheticModelSpec]:
    """The models of ``--model``; none given: the built-in model itself (with its answer length,
    which ``groundplane up``'s load predicts answers with), not a spec parsed from its name."""
    return [parse_model(text) for text in texts] if texts else [BUILT_IN_MODEL]


@asynccontextmanager
async def nodes_service(args: argparse.Namespace) -> AsyncIterator[RunningNodes]:
    """Start the shard (health NOT_SERVING until every member is born); drain on exit."""
    settings = NodesSettings.from_args(args)
    clock = process_clock(args)
    members = list(settings.satellites or ())
    if settings.shard is not None:
        assert settings.tracking is not None
        catalog = await fetch_catalog_ids(settings.tracking)
        members = shard_members(catalog, *settings.shard)
    if not members:
        raise InvalidArgument(
            f"shard {settings.shard_id!r} has no satellites (catalog too small for --shard?)"
        )
    specs = model_specs(args.model) if args.backend == "synthetic" else []
    engine_config = EngineConfig(slots=args.slots, queue_limit=args.queue_limit)
    agent_config = AgentConfig(keepalive_s=args.keepalive, load_interval_s=args.load_interval)
    epoch_dir: Path | None = args.epoch_dir
    if epoch_dir is not None:
        await asyncio.to_thread(epoch_dir.mkdir, parents=True, exist_ok=True)
    server = GrpcServer(
        [],
        address=listen_address(args),
        drain_grace_s=args.drain_grace,
        unready_delay_s=args.unready_delay,
        ready_at_start=False,
    )
    await server.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(server.stop)
        writer = (
            stack.enter_context(ExecutionLogWriter(args.execution_log, wall_time_s=time.time))
            if args.execution_log is not None
            else None
        )
        # Entered before the engines, so it closes after they drained.
        shared = await shared_backend(args, stack, members=len(members))
        engines: dict[str, Engine] = {}
        agents: list[NodeAgent] = []
        for sat in members:
            backend: InferenceBackend = (
                shared if shared is not None else SyntheticBackend(specs, clock)
            )
            if writer is not None:
                backend = ExecutionRecorder(backend, writer, sat)
            engine = await stack.enter_async_context(Engine(backend, clock, engine_config))
            engines[sat] = engine
            path = epoch_dir / f"{sat}.epoch" if epoch_dir is not None else None
            agents.append(
                NodeAgent(
                    sat,
                    settings.broker,
                    engine,
                    clock,
                    epochs=EpochSource(time.time_ns, path),
                    config=agent_config,
                )
            )
        shard = NodeShard(
            settings.shard_id,
            settings.broker,
            agents,
            clock,
            epochs=EpochSource(
                time.time_ns,
                epoch_dir / f"shard-{settings.shard_id}.epoch" if epoch_dir is not None else None,
            ),
            config=ShardConfig(keepalive_s=args.keepalive, load_interval_s=args.load_interval),
            power=await _power(args, settings, members, specs),
        )
        metrics_url = await _serve_metrics(args, stack, _ShardCollector(shard, engines, shared))
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(shard.run(), name=f"nodes-shard:{settings.shard_id}")
            ready = tasks.create_task(
                _ready_when_born(shard, server), name=f"nodes-ready:{settings.shard_id}"
            )
            log.info(
                "nodes_shard_starting",
                shard_id=settings.shard_id,
                members=len(members),
                first=members[0],
                last=members[-1],
            )
            try:
                yield RunningNodes(server.target, shard, metrics_url)
            finally:
                ready.cancel()
                await server.set_ready(False)
                shard.stop()
                await runner


async def _power(
    args: argparse.Namespace,
    settings: NodesSettings,
    members: Sequence[str],
    specs: Sequence[SyntheticModelSpec],
) -> ShardPower | None:
    """With ``--energy``: the members' energy model over their orbits from tracking."""
    if not args.energy:
        return None
    assert settings.tracking is not None
    elements = {e.catalog_id: e for e in await fetch_elements(settings.tracking)}
    model = specs[0].name if specs else ""
    return shard_power(elements, members, dict.fromkeys(members, model))


async def _serve_metrics(
    args: argparse.Namespace, stack: AsyncExitStack, collector: Collector
) -> str | None:
    """With ``--metrics-port``: serve ``collector`` on it (closed by ``stack``), return the URL."""
    if args.metrics_port is None:
        return None
    registry = CollectorRegistry()
    registry.register(collector)
    metrics = await stack.enter_async_context(
        MetricsServer(registry, host=args.host, port=args.metrics_port)
    )
    log.info("metrics_serving", url=metrics.url)
    return metrics.url


async def _ready_when_born(shard: NodeShard, server: GrpcServer) -> None:
    while True:
        try:
            epochs = await shard.wait_ready(READY_TIMEOUT_S)
            break
        except Unavailable as error:  # still NOT_SERVING; keep waiting (the broker may be away)
            log.warning("nodes_shard_not_ready", shard_id=shard.shard_id, error=error.message)
    await server.set_ready(True)
    log.info("nodes_shard_ready", shard_id=shard.shard_id, members=len(epochs))


def run_nodes(args: argparse.Namespace) -> int:
    return run_service("nodes", args, lambda: nodes_service(args))
