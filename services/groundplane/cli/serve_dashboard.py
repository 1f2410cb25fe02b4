"""``groundplane serve dashboard``: the live dashboard as a process of its own.

One web page (``http://WEB_HOST:WEB_PORT/``) over the services' contracts: tracking's catalog
(``--tracking``, ``WatchCatalog``), routing's table (``--routing``, ``WatchRouteTable``), the
handoff feed (``--handoff``, ``WatchHandoffs``), the gateway's finished calls (``--gateway``,
``GatewayMonitorService.WatchRequests``) and, with ``--broker``, node health and link states over
MQTT (:class:`~groundplane.dashboard.app.DashboardApp`). Every input but tracking is optional;
what is not given is left out of the page. ``--port`` carries gRPC health only (readiness
SERVING once a catalog view is in), so ``groundplane up --dashboard`` supervises it like the
other children. SIGTERM stops it and exits 0.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from groundplane.dashboard.app import DashboardApp, DashboardSettings
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.mqtt.broker import BrokerAddress
from groundplane.scenario import DEFAULT_MODEL

from . import environment, inputs
from .process import (
    add_process_arguments,
    add_tracking_argument,
    broker_url_refusal_without_file,
    listen_address,
    process_clock,
    run_service,
)

DEFAULT_PORT = 50070
DEFAULT_WEB_PORT = 8080


def register(services: Any) -> None:
    dashboard = services.add_parser(
        "dashboard",
        help="the live web dashboard",
        description="Serve one web page at http://HOST:WEB_PORT/: a world map with the "
        "satellites moving, links up, stations and the satellite each routes to, the request "
        "rate and latency, the request and handoff feeds and node health, updated every second "
        "over Server-Sent Events. It reads the services only through their contracts. "
        "--port serves gRPC health only (readiness: SERVING once tracking's catalog is in). "
        f"Times: {inputs.TIME_HELP}.",
    )
    add_process_arguments(dashboard, default_port=DEFAULT_PORT)
    add_tracking_argument(dashboard, "the tracking service: satellites and stations")
    for flag, what in (
        ("--routing", "the routing service: each station's route (default: not shown)"),
        ("--handoff", "the handoff service: the handoff feed (default: not shown)"),
        ("--gateway", "the gateway: the request feed, rate and latency (default: not shown)"),
    ):
        dashboard.add_argument(flag, type=inputs.address, metavar="HOST:PORT", help=what)
    environment.refuse_on_command_line(
        dashboard.add_argument(
            "--broker",
            metavar="URL",
            help="the MQTT broker, mqtt://user:password@host:port (a service account; with a "
            "password only from GROUNDPLANE_BROKER): node health and link states (default: not "
            "shown)",
        ),
        broker_url_refusal_without_file,
    )
    dashboard.add_argument(
        "--web-host",
        metavar="HOST",
        help="address the page listens on (default: --host)",
    )
    dashboard.add_argument(
        "--web-port",
        type=inputs.port,
        default=DEFAULT_WEB_PORT,
        metavar="PORT",
        help="the page's HTTP port on --host; 0 picks a free one",
    )
    dashboard.add_argument(
        "--model",
        default=DEFAULT_MODEL.name,
        help="the model whose route per station the map draws",
    )
    dashboard.set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    clock = process_clock(args)
    settings = DashboardSettings(
        tracking_target=args.tracking,
        routing_target=args.routing,
        handoff_target=args.handoff,
        gateway_target=args.gateway,
        broker=BrokerAddress.from_url(args.broker) if args.broker else None,
        web_host=args.web_host or args.host,
        web_port=args.web_port,
        grpc_address=listen_address(args),
        model=args.model,
        unready_delay_s=args.unready_delay,
        drain_grace_s=args.drain_grace,
    )

    @asynccontextmanager
    async def body() -> AsyncIterator[DashboardApp]:
        async with AsyncExitStack() as stack:
            app = await stack.enter_async_context(DashboardApp(settings, clock))
            print(f"dashboard on {app.url}", flush=True)
            if args.metrics_port is not None:
                metrics = await stack.enter_async_context(
                    MetricsServer(app.metrics.registry, host=args.host, port=args.metrics_port)
                )
                print(f"dashboard metrics on {metrics.url}", flush=True)
            yield app

    return run_service("dashboard", args, body)
