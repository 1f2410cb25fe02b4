"""``groundplane up``: the whole system on one machine.

Broker (private Mosquitto unless ``--broker``), tracking, emulated links, node agents for every
satellite, routing, the handoff manager, the gateway and a synthetic ground-user load (stateless
requests, ``--sessions`` conversations through the gateway and the handoff manager, ``--jobs``
batch jobs through the manager), on one simulated clock. By default every service is a child
process (``groundplane serve …``) that ``up`` supervises: started in order and awaited ready,
restarted when it dies, stopped in reverse order (:mod:`groundplane.system.processes`);
``--in-process`` runs them all in this one process instead (:mod:`groundplane.system.system`).
With no files: the built-in scenario of :mod:`groundplane.scenario`, without sessions or jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import shlex
import signal
import socket
import sys
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from groundplane.dashboard.app import DashboardApp, DashboardSettings
from groundplane.gateway.servicer import SERVICE_NAME as GATEWAY_SERVICE
from groundplane.handoff.planner import HandoffSettings, PathPreference
from groundplane.handoff.servicer import SERVICE_NAME as HANDOFF_SERVICE
from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock, SimulatedClock
from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.validation import finite_float
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress
from groundplane.orbit.constellations import generate
from groundplane.routing.policy import PolicyKind, RoutingPolicy
from groundplane.routing.servicer import SERVICE_NAME as ROUTING_SERVICE
from groundplane.scenario import (
    DEFAULT_CONSTELLATION,
    DEFAULT_MIN_ELEVATION_DEG,
    DEFAULT_MODEL,
    DEFAULT_RATE_RPS,
    DEFAULT_SPEED,
    DEFAULT_TENANT,
    GroundUser,
    default_stations,
    default_tenants,
    default_users,
)
from groundplane.scenario import DEFAULT_POLICY as DEFAULT_ROUTING_POLICY
from groundplane.system.load import load_users, random_users
from groundplane.system.processes import CatalogSource, ProcessSystem
from groundplane.system.report import (
    EnergyCounters,
    Outcome,
    RunStats,
    write_summary,
    write_trace,
)
from groundplane.system.system import (
    DEFAULT_HANDOFF_MARGIN_S,
    DEFAULT_JOB_ITEMS,
    DEFAULT_MIN_DWELL_S,
    GroundplaneSystem,
    SystemConfig,
)
from groundplane.tracking.servicer import SERVICE_NAME as TRACKING_SERVICE

from . import environment, inputs
from .process import broker_url_refusal_without_file
from .serve_routing import routing_policy

NODE_PASSWORD_ENV = "GROUNDPLANE_NODE_PASSWORD"
DEMO_TOKEN_ENV = "GROUNDPLANE_DEMO_TOKEN"
MAX_LINK_TICKS_PER_WALL_S = 50.0
"""Link ticks are 1 simulated second, or longer so that at most this many run per wall second."""
MAX_ROUTE_TICKS_PER_WALL_S = 10.0
"""Route-table refreshes likewise (each samples visibility and pushes a table to the gateway)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TTY_STATUS_INTERVAL_S = 1.0
"""Default wall seconds between refreshes of the live status on a terminal."""
PIPE_STATUS_INTERVAL_S = 5.0
"""Default wall seconds between status lines when stdout is not a terminal (a log or a pipe)."""
READER_USER = "gp-watch"
"""The read-only broker account of ``--broker-dev-credentials``."""
SUCCESSOR_POLICIES = (PolicyKind.LONGEST_VISIBILITY, PolicyKind.MAX_ELEVATION)
"""Policies the handoff planner can rank pass windows by (the windows carry remaining visibility
and peak elevation; load and latency are not part of a pass window)."""


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the whole system on this machine",
        description="Start groundplane on one machine (broker, tracking, links, one node per "
        "satellite, routing, handoff, gateway) with a synthetic ground-user load: each service "
        "a supervised child process (restarted when it dies), or all in this process with "
        "--in-process. With no files: "
        f"{DEFAULT_CONSTELLATION}, {len(default_stations())} ground stations, "
        f"{len(default_users())} users in cities, {DEFAULT_RATE_RPS:g} requests/s.",
    )
    up.add_argument(
        "--energy",
        action="store_true",
        help="model every node's power and heat (solar array, battery, radiator) in simulated "
        "time; the status counts nodes in eclipse and the summary gains an energy section",
    )
    up.add_argument(
        "--policy",
        choices=[kind.value for kind in PolicyKind],
        default=DEFAULT_ROUTING_POLICY.kind.value,
        help="routing policy (default %(default)s); energy-aware: prefer sunlit, charged, cool "
        "nodes and never pick one whose battery would fall below its reserve (with --energy)",
    )
    source = up.add_mutually_exclusive_group()
    source.add_argument("--elements", action="append", metavar="FILE")
    source.add_argument("--constellation", metavar="SPEC", help=f"default {DEFAULT_CONSTELLATION}")
    up.add_argument("--stations", metavar="FILE", help="CSV id,name,lat,lon,alt_m")
    up.add_argument(
        "--min-elevation", type=finite_float, default=DEFAULT_MIN_ELEVATION_DEG, metavar="DEG"
    )
    environment.refuse_on_command_line(
        up.add_argument(
            "--broker",
            metavar="URL",
            help="use this broker (mqtt://user:pass@host:port; with a password only from "
            "GROUNDPLANE_BROKER) instead of a private Mosquitto; node accounts "
            f"<sat>/${NODE_PASSWORD_ENV} must exist there",
        ),
        broker_url_refusal_without_file,
    )
    token = up.add_mutually_exclusive_group()
    environment.refuse_on_command_line(
        token.add_argument(
            "--demo-token",
            metavar="TOKEN",
            help=f"the demo tenant's token, from {DEMO_TOKEN_ENV} only (never the command line); "
            "default: a new random token each run, printed in the banner",
        ),
        lambda _token: (
            "--demo-token: a token on the command line is visible to every user of the machine "
            f"(ps); set {DEMO_TOKEN_ENV}=TOKEN or pass --demo-token-file FILE"
        ),
    )
    token.add_argument(
        "--demo-token-file",
        metavar="FILE",
        help="a file holding the demo tenant's token (e.g. for reproducible docs)",
    )
    up.add_argument(
        "--broker-dev-credentials",
        action="store_true",
        help=f"add a read-only account ({READER_USER}: subscribe to {topics.PREFIX}/#, publish "
        "nothing) to the private broker and print a ready-to-paste mosquitto_sub command with "
        "its password",
    )
    up.add_argument("--start", metavar="ISO8601", help="simulated start (default: now)")
    up.add_argument(
        "--speed",
        type=finite_float,
        default=DEFAULT_SPEED,
        help=f"simulated s per wall s ({DEFAULT_SPEED:g})",
    )
    up.add_argument(
        "--duration",
        type=finite_float,
        metavar="SECONDS",
        help="wall seconds to run (default: until Ctrl-C)",
    )
    up.add_argument(
        "--users",
        metavar="FILE|N",
        help="CSV id,name,lat,lon,alt (header optional), or N random users (default: cities "
        "near the stations)",
    )
    up.add_argument(
        "--rate",
        type=finite_float,
        default=DEFAULT_RATE_RPS,
        metavar="RPS",
        help=f"stateless requests per wall second ({DEFAULT_RATE_RPS:g})",
    )
    up.add_argument(
        "--sessions",
        type=int,
        default=0,
        metavar="K",
        help="K continuous multi-turn sessions, each answer checked against the session context",
    )
    up.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="J",
        help="J batch jobs submitted to the handoff manager at start",
    )
    up.add_argument(
        "--job-items",
        type=int,
        default=DEFAULT_JOB_ITEMS,
        metavar="N",
        help=f"items (prompts) per job ({DEFAULT_JOB_ITEMS})",
    )
    up.add_argument(
        "--handoff-margin",
        type=finite_float,
        default=DEFAULT_HANDOFF_MARGIN_S,
        metavar="S",
        help="simulated seconds a session handoff ends before LOS, beyond the state transfer "
        f"({DEFAULT_HANDOFF_MARGIN_S:g})",
    )
    up.add_argument(
        "--min-dwell",
        type=finite_float,
        default=DEFAULT_MIN_DWELL_S,
        metavar="S",
        help="least simulated seconds a successor must stay in view after a handoff "
        f"({DEFAULT_MIN_DWELL_S:g})",
    )
    up.add_argument(
        "--successor-policy",
        choices=[kind.value for kind in SUCCESSOR_POLICIES],
        default=PolicyKind.LONGEST_VISIBILITY.value,
        help="how the successor pass is chosen (longest-visibility)",
    )
    up.add_argument(
        "--transfer-path",
        choices=[path.value for path in PathPreference],
        default=PathPreference.ISL_FIRST.value,
        help="model state transfers over an inter-satellite link when the two satellites see "
        "each other (isl-first), or always down and up through the ground (ground-only)",
    )
    up.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep the handoff store (handoff.sqlite) here (default: a temporary folder)",
    )
    up.add_argument(
        "--handoff-port", type=inputs.port, default=0, help="handoff gRPC port; 0 picks a free one"
    )
    up.add_argument("--summary", metavar="FILE", help="write the run's summary (JSON) here")
    up.add_argument("--trace", metavar="FILE", help="write one JSON line per request here")
    up.add_argument(
        "--status-interval",
        "--interval",
        dest="interval",
        type=finite_float,
        metavar="SECONDS",
        help="wall seconds between status updates (default: a live status refreshed every "
        f"{TTY_STATUS_INTERVAL_S:g} s on a terminal, otherwise one line every "
        f"{PIPE_STATUS_INTERVAL_S:g} s)",
    )
    up.add_argument(
        "--port", type=inputs.port, default=0, help="tracking gRPC port; 0 picks a free one"
    )
    up.add_argument(
        "--gateway-metrics-port",
        type=inputs.port,
        metavar="PORT",
        help="serve the gateway's Prometheus /metrics on loopback at PORT (0 picks a free one)",
    )
    up.add_argument(
        "--handoff-metrics-port",
        type=inputs.port,
        metavar="PORT",
        help="serve the handoff manager's Prometheus /metrics on loopback (0 picks a free one)",
    )
    up.add_argument(
        "--gateway-port", type=inputs.port, default=0, help="gateway gRPC port; 0 picks a free one"
    )
    up.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export every service's OpenTelemetry spans (and the load's) over OTLP/gRPC to "
        "this collector, e.g. http://127.0.0.1:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT if "
        "set, else no export; --trace records each request's trace id either way)",
    )
    up.add_argument(
        "--dashboard",
        type=dashboard_address,
        metavar="[HOST:]PORT",
        help="serve the live dashboard (a web page) on HOST (default 127.0.0.1) at PORT (0 picks "
        "a free one): a supervised `serve dashboard` child, or in this process with --in-process",
    )
    up.add_argument(
        "--http-port",
        type=inputs.port,
        metavar="PORT",
        help="also serve the gateway's OpenAI-compatible HTTP API on loopback at PORT (0 picks a "
        "free one) and print its base URL; the demo token is the API key; default: not served",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between every service: mint a throw-away CA and one certificate per "
        "service (and an 'admin' one for the CLI) in the run's folder (0600), and run every "
        "child with them (not with --in-process); the banner names the admin files",
    )
    up.add_argument(
        "--in-process",
        action="store_true",
        help="run every service in this one process (debugging, fast tests) instead of one "
        "supervised child process per service",
    )
    up.set_defaults(handler=run_up)


System = GroundplaneSystem | ProcessSystem
"""What ``up`` runs: every service in this process, or each in a child process."""


DASHBOARD_READY_TIMEOUT_S = 30.0
"""Wall seconds the in-process dashboard may take to hold tracking's catalog."""


def dashboard_address(text: str) -> tuple[str, int]:
    """argparse type of ``--dashboard [HOST:]PORT`` (host 127.0.0.1 when left out)."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    return host or "127.0.0.1", inputs.port(port_text)


def _users(value: str | None) -> list[GroundUser]:
    if value is None:
        return default_users()
    if value.isdigit():
        return random_users(int(value))
    return load_users(value)


def _config(args: argparse.Namespace, clock: Clock) -> tuple[SystemConfig, str, CatalogSource]:
    if args.elements:
        elements = inputs.load_elements(args.elements)
        scenario = ", ".join(args.elements)
        catalog = CatalogSource(element_files=tuple(str(Path(p).resolve()) for p in args.elements))
    else:
        spec = args.constellation or DEFAULT_CONSTELLATION
        elements = generate(spec, clock.now())
        scenario = spec
        catalog = CatalogSource(constellation=spec)
    stations = (
        inputs.load_sites_csv(args.stations, args.min_elevation, inputs.load_mask(None))
        if args.stations
        else default_stations(args.min_elevation)
    )
    node_password = None
    if args.broker is not None and args.broker_dev_credentials:
        raise InvalidArgument(
            "--broker-dev-credentials adds an account to the private broker, but --broker names "
            "an existing one: create a read-only account there yourself, or drop --broker"
        )
    if args.broker is not None:
        _check_broker_reachable(BrokerAddress.from_url(args.broker))
        node_password = os.environ.get(NODE_PASSWORD_ENV)
        if not node_password:
            raise InvalidArgument(
                f"--broker needs the node accounts' password in ${NODE_PASSWORD_ENV} (every "
                "satellite logs in as user <satellite id> with it), got none"
            )
    token = demo_token(args)
    tenants = default_tenants()
    tenants[DEFAULT_TENANT] = {**tenants[DEFAULT_TENANT], "tokens": [token]}
    speed = getattr(clock, "speed", 1.0)
    handoff = HandoffSettings(
        lead_margin_s=args.handoff_margin,
        min_dwell_s=args.min_dwell,
        policy=RoutingPolicy(kind=PolicyKind(args.successor_policy), stickiness=None),
        path_preference=PathPreference(args.transfer_path),
        energy_aware=args.energy and args.policy == PolicyKind.ENERGY_AWARE.value,
    )
    config = SystemConfig(
        elements=elements,
        stations=stations,
        users=_users(args.users),
        rate_rps=args.rate,
        sessions=args.sessions,
        jobs=args.jobs,
        job_items=args.job_items,
        handoff=handoff,
        handoff_dir=Path(args.data_dir) if args.data_dir else None,
        handoff_address=f"127.0.0.1:{args.handoff_port}",
        gateway_metrics_port=args.gateway_metrics_port,
        handoff_metrics_port=args.handoff_metrics_port,
        broker_url=args.broker,
        node_password=node_password,
        broker_reader=READER_USER if args.broker_dev_credentials else None,
        tenants=tenants,
        token=token,
        link_tick_s=max(1.0, speed / MAX_LINK_TICKS_PER_WALL_S),
        route_tick_s=max(1.0, speed / MAX_ROUTE_TICKS_PER_WALL_S),
        tracking_address=f"127.0.0.1:{args.port}",
        gateway_address=f"127.0.0.1:{args.gateway_port}",
        gateway_http_port=args.http_port,
        keep_trace=args.trace is not None,
        otlp_endpoint=args.otlp_endpoint,
        energy=args.energy,
        policy=routing_policy(args.policy),
    )
    return config, scenario, catalog


BROKER_CONNECT_TIMEOUT_S = 5.0
"""How long ``up --broker`` waits for a TCP connection to the broker before giving up."""


def _check_broker_reachable(address: BrokerAddress) -> None:
    """Fail fast, before anything starts, when nothing listens at the broker's address."""
    try:
        socket.create_connection(
            (address.host, address.port), timeout=BROKER_CONNECT_TIMEOUT_S
        ).close()
    except OSError as error:
        raise Unavailable(
            f"cannot reach the broker at {address.host}:{address.port} within "
            f"{BROKER_CONNECT_TIMEOUT_S:g} s ({error}); start it or fix --broker"
        ) from None


def demo_token(args: argparse.Namespace) -> str:
    """The demo tenant's token: ``--demo-token-file``, ``$GROUNDPLANE_DEMO_TOKEN``, or 32 random
    bytes (URL-safe base64) drawn for this run."""
    if args.demo_token_file is not None:
        token = inputs.read_text(args.demo_token_file).strip()
        if not token:
            raise InvalidArgument(f"--demo-token-file {args.demo_token_file}: the file is empty")
        return token
    if args.demo_token:
        return str(args.demo_token)
    return secrets.token_urlsafe(32)


IN_PROCESS_ONLY = (
    ("--successor-policy", "successor_policy", PolicyKind.LONGEST_VISIBILITY.value),
    ("--transfer-path", "transfer_path", PathPreference.ISL_FIRST.value),
)
"""Options the handoff process (``serve handoff``) has no flag for yet: other than their defaults
they need ``--in-process``."""


def _check_in_process_only(args: argparse.Namespace) -> None:
    if args.in_process:
        return
    for flag, name, default in IN_PROCESS_ONLY:
        if getattr(args, name) != default:
            raise InvalidArgument(
                f"{flag} {getattr(args, name)} applies only with --in-process: the handoff "
                f"process (groundplane serve handoff) runs with {flag} {default}"
            )


def run_up(args: argparse.Namespace) -> int:
    if args.duration is not None and not args.duration > 0:
        raise InvalidArgument(f"--duration must be positive wall seconds, got {args.duration}")
    if args.interval is not None and not args.interval > 0:
        raise InvalidArgument(
            f"--status-interval must be positive wall seconds, got {args.interval}"
        )
    if args.rate < 0 or args.sessions < 0 or args.jobs < 0:
        raise InvalidArgument(
            f"--rate, --sessions and --jobs must be ≥ 0, got {args.rate}, {args.sessions} and "
            f"{args.jobs}"
        )
    for flag, value in (("--handoff-margin", args.handoff_margin), ("--min-dwell", args.min_dwell)):
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(f"{flag} must be simulated seconds ≥ 0, got {value}")
    if args.job_items < 1:
        raise InvalidArgument(f"--job-items must be ≥ 1, got {args.job_items}")
    _check_in_process_only(args)
    if args.tls and args.in_process:
        raise InvalidArgument(
            "--tls runs each service as its own process with its own certificate; drop "
            "--in-process (the in-process system is plaintext, in one process)"
        )
    configure_logging("json", level="WARNING")
    clock = inputs.make_clock(args.start, args.speed)
    config, scenario, catalog = _config(args, clock)
    system: System = (
        GroundplaneSystem(config, clock)
        if args.in_process
        else ProcessSystem(config, clock, catalog, dashboard=args.dashboard, tls=args.tls)
    )
    print(
        f"groundplane up: {len(config.elements)} satellites ({scenario}), "
        f"{len(config.stations)} stations, min elevation {args.min_elevation:g}°, "
        f"{len(config.users)} users, {args.rate:g} requests/s, {args.sessions} sessions, "
        f"{args.jobs} jobs of {args.job_items} items, "
        f"speed {getattr(clock, 'speed', 1.0):g}×",
        flush=True,
    )
    # Traced when exporting, and with --trace (each record carries its request's trace id).
    with tracing.configured(
        "groundplane-up", otlp_endpoint=args.otlp_endpoint, always=args.trace is not None
    ):
        asyncio.run(_run(system, args))
    if args.summary:
        write_summary(Path(args.summary), system.stats)
    if args.trace:
        write_trace(Path(args.trace), system.stats.trace)
    print(_final(system), flush=True)
    print("groundplane up: stopped cleanly", flush=True)
    return 0


async def _run(system: System, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    # Ctrl-C, a stop, or the terminal closing: the children (the private Mosquitto) sit in their
    # own sessions, so only this process gets the signal and it stops them in order.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, system.stop)
    try:
        await system.run(lambda _running: _supervise(system, args))
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _supervise(system: System, args: argparse.Namespace) -> None:
    """Announce the addresses, show the status every interval, stop at ``--duration``.

    On a terminal the status is a live block rewritten in place; otherwise (a log, a pipe) it is
    one line per interval, every ``PIPE_STATUS_INTERVAL_S`` by default.
    """
    async with AsyncExitStack() as stack:
        dashboard_url = (
            system.dashboard_url
            if isinstance(system, ProcessSystem)
            else await _dashboard_in_process(stack, system, args.dashboard)
            if args.dashboard is not None
            else None
        )
        banner = _banner(system, existing_broker=args.broker is not None)
        if dashboard_url is not None:
            banner += f"\n  dashboard {dashboard_url}  live web page"
        print(banner, flush=True)
        await _show_status(system, args)


async def _dashboard_in_process(
    stack: AsyncExitStack, system: GroundplaneSystem, where: tuple[str, int]
) -> str:
    """``--dashboard`` with ``--in-process``: the dashboard app in this process, stopped with the
    status loop (before the services it watches)."""
    host, port = where
    app = await stack.enter_async_context(
        DashboardApp(
            DashboardSettings(
                tracking_target=system.tracking_target,
                routing_target=system.routing_target,
                handoff_target=system.handoff_target,
                gateway_target=system.gateway_target,
                broker=system.broker_address,
                web_host=host,
                web_port=port,
                model=system.config.model.name,
                unready_delay_s=0.0,
            ),
            system.clock,
        )
    )
    await app.wait_ready(DASHBOARD_READY_TIMEOUT_S)
    return app.url


async def _show_status(system: System, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    end = None if args.duration is None else loop.time() + args.duration
    tty = sys.stdout.isatty()
    interval_s = args.interval or (TTY_STATUS_INTERVAL_S if tty else PIPE_STATUS_INTERVAL_S)
    while True:
        wait_s = interval_s if end is None else min(interval_s, end - loop.time())
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        await system.refresh_counters()
        if tty:
            sys.stdout.write("\x1b[s\x1b[J" + _render(system) + "\x1b[u")
        else:
            sys.stdout.write(_status_line(system) + "\n")
        sys.stdout.flush()
        if end is not None and loop.time() >= end:
            if tty:
                sys.stdout.write("\x1b[J")
            system.stop()
            return


def _banner(system: System, *, existing_broker: bool) -> str:
    """Every service's address, how to call the gateway, and how to watch the broker."""
    user = system.config.users[0]
    token = system.config.token
    broker = system.broker_address
    assert broker is not None
    where = "existing broker" if existing_broker else "private Mosquitto"
    lines = [
        f"  broker    {broker.host}:{broker.port}  MQTT ({where}), topics {topics.PREFIX}/#",
        f"  tracking  {system.tracking_target}  gRPC {TRACKING_SERVICE}",
        f"  routing   {system.routing_target}  gRPC {ROUTING_SERVICE}",
        f"  handoff   {system.handoff_target}  gRPC {HANDOFF_SERVICE}",
        f"  gateway   {system.gateway_target}  gRPC {GATEWAY_SERVICE}, tenant "
        f"{DEFAULT_TENANT!r}, token {token}",
        f"  try       GROUNDPLANE_TOKEN={token} groundplane infer --gateway "
        f"{system.gateway_target} --lat {user.lat_deg:g} --lon {user.lon_deg:g} "
        f'--model {DEFAULT_MODEL.name} "hello"',
    ]
    if system.gateway_http_url is not None:
        lines.append(
            f"  openai    {system.gateway_http_url}  OpenAI-compatible HTTP API: "
            f'OpenAI(base_url="{system.gateway_http_url}", api_key="{token}")'
        )
    tls = system.tls_files if isinstance(system, ProcessSystem) else None
    plaintext = "-plaintext" if tls is None else "-cacert CA -cert CERT -key KEY"
    lines += [
        f"  inspect   gRPC server reflection is on: grpcurl {plaintext} ADDRESS list (grpcurl is "
        "a separate download, not in Debian), or the Python snippet in docs/cli.md",
    ]
    for name, url in (
        ("gateway", system.gateway_metrics_url),
        ("handoff", system.handoff_metrics_url),
    ):
        if url is not None:
            lines.append(f"  metrics   {url}  Prometheus ({name})")
    if tls is not None:
        admin = tls["admin"]
        lines.append(
            f"  mtls      every gRPC hop mutual TLS; as admin add --tls-cert {admin.cert} "
            f"--tls-key {admin.key} --tls-ca {admin.ca}"
        )
    if isinstance(system, ProcessSystem) and system.plan is not None:
        lines.append(
            f"  processes {len(system.supervisor.names if system.supervisor else [])} children, "
            f"logs in {system.plan.workdir / 'processes'}/<child>.log"
        )
    if isinstance(system.clock, SimulatedClock):
        lines.append(
            f"  clock     --clock '{system.clock.spec()}'  (this run's simulated time, for "
            "`groundplane serve tracking|hil`)"
        )
    reader = system.reader_address
    if reader is not None:
        lines.append(f"  watch     {mosquitto_sub_command(reader)}")
    elif not existing_broker:
        lines.append(
            "  watch     restart with --broker-dev-credentials for a read-only broker login"
        )
    return "\n".join(lines)


def mosquitto_sub_command(reader: BrokerAddress) -> str:
    """A shell command that prints every groundplane message the ``reader`` account may read."""
    return shlex.join(
        [
            "mosquitto_sub",
            "-h",
            reader.host,
            "-p",
            str(reader.port),
            "-u",
            reader.username or "",
            "-P",
            reader.password or "",
            "-t",
            f"{topics.PREFIX}/#",
            # Payloads are protobuf (binary): topic and size; -v prints them raw, %x in hex.
            "-F",
            "%t %l bytes",
        ]
    )


def clock_stamp(now: datetime, clock: Clock) -> str:
    """``now`` to the second, marked as simulated time with its speed, or as real UTC."""
    text = f"{now:%Y-%m-%dT%H:%M:%S}Z"
    if isinstance(clock, SimulatedClock):
        return f"sim {text} ({clock.speed:g}×)"
    return f"utc {text}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def _reasons(stats: RunStats) -> str:
    """``3 no satellite in view of …; 1 …`` (most frequent first), empty when none."""
    return "; ".join(
        f"{count} {reason}" for reason, count in stats.unavailable_reasons.most_common()
    )


def _status_line(system: System) -> str:
    """The status as one line (for logs and pipes)."""
    status = system.status()
    stats = status.stats
    out = stats.outcomes
    unavailable = out[Outcome.REJECTED_UNAVAILABLE]
    why = f" ({_reasons(stats)})" if unavailable else ""
    parts = [
        f"{clock_stamp(system.clock.now(), system.clock)}  requests {stats.submitted}: "
        f"{out[Outcome.OK]} ok, {out[Outcome.FAILED]} failed, {unavailable} unavailable{why}, "
        f"{out[Outcome.REJECTED_OVERLOAD]} overload, p50 {_ms(stats.p50_ms())}",
        f"nodes {status.online_nodes} online, {status.visible_nodes} visible",
        f"links {status.links_up} up",
    ]
    if system.config.sessions:
        sessions = stats.sessions
        parts.append(
            f"sessions {sessions.turns} turns, {sessions.failed_turns} failed, "
            f"{sessions.context_mismatches} mismatches"
        )
    if system.config.jobs:
        jobs = stats.jobs
        parts.append(f"jobs {jobs.completed_items}/{jobs.items} items")
    if stats.energy is not None:
        parts.append(_energy_status(stats.energy))
    handoffs = stats.handoffs
    parts.append(
        f"handoffs {handoffs.planned} planned, {handoffs.completed} completed, "
        f"{handoffs.failed} failed"
    )
    if stats.processes.restarts:
        parts.append(f"processes {stats.processes.restarts} restarts")
    return "; ".join(parts)


def _render(system: System) -> str:
    status = system.status()
    stats = status.stats
    out = stats.outcomes
    sessions = stats.sessions
    lines = [
        f"{clock_stamp(system.clock.now(), system.clock)}  requests {stats.submitted} submitted, "
        f"{out[Outcome.OK]} ok, {out[Outcome.FAILED]} failed, "
        f"{out[Outcome.REJECTED_UNAVAILABLE]} unavailable, "
        f"{out[Outcome.REJECTED_OVERLOAD]} overload, p50 {_ms(stats.p50_ms())}",
    ]
    if out[Outcome.REJECTED_UNAVAILABLE]:
        lines.append(f"  unavailable: {_reasons(stats)}")
    lines.append(
        f"  nodes {status.online_nodes} online, {status.visible_nodes} visible; "
        f"links {status.links_up} up"
    )
    if system.config.sessions:
        lines.append(
            f"  sessions {sessions.turns} turns, {sessions.failed_turns} failed, "
            f"{sessions.context_mismatches} context mismatches"
        )
    if system.config.jobs:
        jobs = stats.jobs
        lines.append(
            f"  jobs {jobs.completed_items}/{jobs.items} items done, "
            f"{jobs.duplicate_items} executed twice"
        )
    if stats.energy is not None:
        lines.append(f"  {_energy_status(stats.energy)}")
    handoffs = stats.handoffs
    lines.append(
        f"  handoffs {handoffs.planned} planned, {handoffs.completed} completed, "
        f"{handoffs.failed} failed, {handoffs.checkpointed} checkpointed, "
        f"{handoffs.resumed} resumed"
    )
    if stats.processes.restarts:
        restarted = ", ".join(f"{n} {k}" for n, k in stats.processes.by_service.items() if k)
        lines.append(f"  processes {stats.processes.restarts} restarts ({restarted})")
    return "\n".join(lines) + "\n"


def _energy_status(energy: EnergyCounters) -> str:
    return (
        f"energy {energy.in_eclipse} of {energy.nodes} nodes in eclipse, "
        f"{energy.battery_wh_drawn / 1000.0:.1f} kWh from batteries, min SoC "
        f"{energy.min_soc:.0%}, {energy.nodes_below_reserve} below reserve"
    )


def _final(system: System) -> str:
    full = system.stats.summary()
    summary = full["requests"]
    latency = summary["latency_ms"]
    sessions, jobs, handoffs = full["sessions"], full["jobs"], full["handoffs"]
    unavailable = (
        f"groundplane up: unavailable: {_reasons(system.stats)}\n"
        if summary["rejected_unavailable"]
        else ""
    )
    return (
        f"groundplane up: {summary['submitted']} requests, {summary['succeeded']} ok, "
        f"{summary['failed']} failed, {summary['rejected_unavailable']} unavailable, "
        f"{summary['rejected_overload']} overload; latency p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms\n"
        f"{unavailable}"
        f"groundplane up: sessions {sessions['turns']} turns, {sessions['failed_turns']} failed, "
        f"{sessions['context_mismatches']} context mismatches; jobs "
        f"{jobs['completed_items']}/{jobs['items']} items, {jobs['duplicate_items']} duplicates; "
        f"handoffs {handoffs['planned']} planned, {handoffs['completed']} completed, "
        f"{handoffs['failed']} failed"
        f"{_restarts(full['processes']) if isinstance(system, ProcessSystem) else ''}"
        + (
            f"\ngroundplane up: {_energy_status(system.stats.energy)}, "
            f"{system.stats.energy.served_in_eclipse} requests served in eclipse, "
            f"{system.stats.energy.thermal_throttle_s:.0f} node-seconds throttled"
            if system.stats.energy is not None
            else ""
        )
    )


def _restarts(processes: dict[str, Any]) -> str:
    """``\ngroundplane up: processes 1 restart (routing 1)`` for a multi-process run."""
    restarted = ", ".join(f"{name} {n}" for name, n in processes["by_service"].items() if n)
    count = processes["restarts"]
    return (
        f"\ngroundplane up: processes {count} restart{'' if count == 1 else 's'}"
        f"{f' ({restarted})' if restarted else ''}"
    )
