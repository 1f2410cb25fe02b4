"""``groundplane serve handoff``: the handoff manager as its own process.

Serves ``groundplane.handoff.v1.HandoffService`` (sessions, turns, jobs, handoff events) with
gRPC health and reflection. The satellites and ground sites come from tracking's
``WatchCatalog`` stream (``--tracking``, :class:`groundplane.tracking.client.CatalogFollower`);
the nodes are reached over MQTT on ``--broker``; sessions, turns and jobs persist in ``--db``, so
the process restarted on the same file resumes them. Readiness is NOT_SERVING until the store is
restored, a first pass prediction exists and a node has been heard
(:mod:`groundplane.handoff.app`). SIGTERM: NOT_SERVING for ``--unready-delay``, in-flight turns
drain within ``--drain-grace``, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from groundplane.handoff.app import HandoffApp, HandoffAppSettings
from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.planner import HandoffSettings
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_float
from groundplane.system.system import (
    DEFAULT_HANDOFF_MARGIN_S,
    DEFAULT_MIN_DWELL_S,
    MANAGER_WALL_S,
)
from groundplane.tracking.client import CatalogFollower

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

DEFAULT_PORT = 50053
MIN_OPERATION_S = 10.0
"""Least simulated seconds one node attempt or state export/import may take."""


def register(services: Any) -> None:
    """Add ``handoff`` to the ``serve`` subcommands."""
    parser = services.add_parser(
        "handoff",
        help="the handoff manager (sessions and jobs across passes)",
        description="Serve groundplane.handoff.v1.HandoffService: sessions and jobs that "
        "outlive a satellite pass, handed over between nodes before LOS. Satellites and sites "
        "come from --tracking, nodes are reached over --broker, state persists in --db. "
        "Readiness is NOT_SERVING until the store is restored, passes are predicted and a node "
        "is heard. SIGTERM: NOT_SERVING for --unready-delay, drain, exit 0. "
        f"Times: {inputs.TIME_HELP}.",
    )
    add_process_arguments(parser, default_port=DEFAULT_PORT)
    add_tracking_argument(
        parser, "the tracking service whose catalog (WatchCatalog) gives satellites and sites"
    )
    add_broker_argument(parser)
    parser.add_argument(
        "--db",
        required=True,
        metavar="FILE",
        help="SQLite file of sessions, turns, jobs and handoff events (kept across restarts)",
    )
    parser.add_argument(
        "--lead-margin",
        type=finite_float,
        default=DEFAULT_HANDOFF_MARGIN_S,
        metavar="S",
        help="simulated seconds a handoff finishes before LOS beyond the modelled transfer",
    )
    parser.add_argument(
        "--min-dwell",
        type=finite_float,
        default=DEFAULT_MIN_DWELL_S,
        metavar="S",
        help="least simulated seconds a successor must stay in view after a handoff",
    )
    parser.add_argument(
        "--operation-wall",
        type=finite_float,
        default=MANAGER_WALL_S,
        metavar="S",
        help="wall seconds one node attempt or state export/import may take (at least "
        f"{MIN_OPERATION_S:g} simulated seconds)",
    )
    parser.add_argument(
        "--energy-aware",
        action="store_true",
        help="respect the nodes' reported energy: no successor or job node that is throttled or "
        "would reach its battery reserve before sunlight; job items wait (up to half an hour) "
        "for a sunlit node",
    )
    parser.set_defaults(handler=run_handoff)


def handoff_settings(args: argparse.Namespace, speed: float) -> HandoffAppSettings:
    """The app's settings from the parsed flags; InvalidArgument naming a bad one."""
    if not (math.isfinite(args.operation_wall) and args.operation_wall > 0):
        raise InvalidArgument(
            f"--operation-wall must be positive seconds, got {args.operation_wall}"
        )
    operation_s = max(MIN_OPERATION_S, args.operation_wall * speed)
    return HandoffAppSettings(
        broker=broker_address(args),
        db_path=args.db,
        grpc_address=listen_address(args),
        manager=ManagerConfig(
            settings=HandoffSettings(
                lead_margin_s=args.lead_margin,
                min_dwell_s=args.min_dwell,
                energy_aware=args.energy_aware,
            ),
            turn_attempt_s=operation_s,
            operation_s=operation_s,
        ),
        metrics_host=args.host,
        metrics_port=args.metrics_port,
        drain_grace_s=args.drain_grace,
        unready_delay_s=args.unready_delay,
    )


def run_handoff(args: argparse.Namespace) -> int:
    clock = process_clock(args)
    settings = handoff_settings(args, clock.speed)

    @contextlib.asynccontextmanager
    async def body() -> AsyncIterator[HandoffApp]:
        follower = CatalogFollower(args.tracking)
        async with asyncio.TaskGroup() as tasks:
            following = tasks.create_task(follower.run(), name="handoff-catalog-follower")
            try:
                async with HandoffApp(settings, clock, follower) as app:
                    if app.metrics_url is not None:
                        print(f"handoff metrics on {app.metrics_url}", flush=True)
                    yield app
            finally:
                following.cancel()

    return run_service("handoff", args, body)
