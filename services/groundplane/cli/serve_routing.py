"""``groundplane serve routing``: the routing service as a process of its own.

Follows tracking's catalog over gRPC (``--tracking``, the ``WatchCatalog`` stream through
``tracking.client.CatalogFollower``), the node directory and the link states over MQTT
(``--broker``, a service account), and serves ``groundplane.routing.v1.RoutingService``
(:class:`~groundplane.routing.app.RoutingApp`) with health, reflection and, with
``--metrics-port``, Prometheus ``/metrics``. Readiness is SERVING once a catalog view, the route
table built from it and at least one node are in; SIGTERM drains and exits 0. The routing policy
is the one ``groundplane up`` uses (``RoutingService.SetRoutingPolicy`` changes it at run time).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.validation import finite_float
from groundplane.mqtt.client import MqttClient
from groundplane.routing.app import DEFAULT_PASS_HORIZON_S, DEFAULT_TICK_S, RoutingApp
from groundplane.routing.policy import PolicyKind, RoutingPolicy
from groundplane.scenario import DEFAULT_POLICY
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

DEFAULT_PORT = 50052


def register(services: Any) -> None:
    routing = services.add_parser(
        "routing",
        help="the routing service",
        description="Serve groundplane.routing.v1.RoutingService (route decisions, the route "
        "table stream, the policy) over tracking's catalog (--tracking), the node directory and "
        "the link states (--broker). Readiness: SERVING once a catalog view, a route table "
        "built from it and at least one node's status are in. SIGTERM: NOT_SERVING for "
        f"--unready-delay, drain, exit 0. Times: {inputs.TIME_HELP}.",
    )
    add_process_arguments(routing, default_port=DEFAULT_PORT)
    add_tracking_argument(
        routing, "the tracking service whose catalog (elements and sites) routing follows"
    )
    add_broker_argument(
        routing, "the MQTT broker, mqtt://user:password@host:port (a gp- service account)"
    )
    routing.add_argument(
        "--route-tick",
        type=finite_float,
        default=DEFAULT_TICK_S,
        metavar="S",
        help="simulated seconds between route tables sampled afresh (a node, link or catalog "
        "change rebuilds the table at once)",
    )
    routing.add_argument(
        "--pass-horizon",
        type=finite_float,
        default=DEFAULT_PASS_HORIZON_S,
        metavar="S",
        help="simulated seconds of upcoming passes predicted (again every half horizon and at "
        "every catalog change)",
    )
    routing.add_argument(
        "--policy",
        choices=[kind.value for kind in PolicyKind],
        default=DEFAULT_POLICY.kind.value,
        help="what routing ranks by (default %(default)s); energy-aware also excludes nodes "
        "whose battery would fall below its reserve before the request ends or the Sun returns",
    )
    routing.set_defaults(handler=run_routing)


def routing_policy(kind: str) -> RoutingPolicy:
    """The run's policy for ``--policy KIND``: the scenario default with that kind; a utility
    kind (weighted, energy-aware) gets its stickiness margin in utility units (0.25)."""
    chosen = PolicyKind(kind)
    if chosen is DEFAULT_POLICY.kind:
        return DEFAULT_POLICY
    stickiness = DEFAULT_POLICY.stickiness
    if stickiness is not None and chosen in (PolicyKind.WEIGHTED, PolicyKind.ENERGY_AWARE):
        stickiness = replace(stickiness, margin=0.25)
    return replace(DEFAULT_POLICY, kind=chosen, stickiness=stickiness)


def run_routing(args: argparse.Namespace) -> int:
    for flag, value in (("--route-tick", args.route_tick), ("--pass-horizon", args.pass_horizon)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgument(f"{flag} must be positive simulated seconds, got {value}")
    clock = process_clock(args)
    broker = broker_address(args)
    client_id = f"groundplane-routing-{socket.gethostname()}-{os.getpid()}"[:128]

    @asynccontextmanager
    async def body() -> AsyncIterator[RoutingApp]:
        follower = CatalogFollower(args.tracking)
        async with AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            following = tasks.create_task(follower.run(), name="routing-catalog-follower")
            stack.callback(following.cancel)
            client = await stack.enter_async_context(
                MqttClient(broker, client_id=client_id, clock=clock)
            )
            app = await stack.enter_async_context(
                RoutingApp(
                    follower,
                    client,
                    clock,
                    policy=routing_policy(args.policy),
                    tick_s=args.route_tick,
                    pass_horizon_s=args.pass_horizon,
                    address=listen_address(args),
                    drain_grace_s=args.drain_grace,
                    unready_delay_s=args.unready_delay,
                )
            )
            if args.metrics_port is not None:
                metrics = await stack.enter_async_context(
                    MetricsServer(app.metrics.registry, host=args.host, port=args.metrics_port)
                )
                print(f"routing metrics on {metrics.url}", flush=True)
            yield app

    return run_service("routing", args, body)
