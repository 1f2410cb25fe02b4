"""``groundplane serve links``: the link emulator as a process.

It follows the catalog of ``--tracking`` (``WatchCatalog``), carries the MQTT traffic of
``--broker`` across emulated space links every ``--link-tick`` simulated seconds, and serves gRPC
health (readiness SERVING once the first catalog view is in, the broker connected and the first
tick done) and, with ``--metrics-port``, ``groundplane_links_*`` metrics.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.validation import finite_float
from groundplane.links.app import LinksApp

from . import inputs, process

DEFAULT_PORT = 50054


def register(services: Any) -> None:
    links = services.add_parser(
        "links",
        help="the link emulator",
        description="Carry MQTT messages across emulated ground-satellite links (delay, rate, "
        "loss, outages) whose geometry follows the --tracking service's catalog, publishing "
        "each link's retained state. Serves gRPC health (ready once the catalog and the broker "
        "are live). SIGTERM: NOT_SERVING for --unready-delay, stop, exit 0. "
        f"Times: {inputs.TIME_HELP}.",
    )
    process.add_process_arguments(links, default_port=DEFAULT_PORT)
    process.add_tracking_argument(
        links, "the tracking service whose catalog (elements and sites) the links follow"
    )
    process.add_broker_argument(links, "the MQTT broker, mqtt://user:password@host:port")
    links.add_argument(
        "--link-tick",
        type=finite_float,
        default=1.0,
        metavar="S",
        help="simulated seconds between two geometry samples of the links",
    )
    links.set_defaults(handler=run_links)


def run_links(args: argparse.Namespace) -> int:
    broker = process.broker_address(args)
    if not args.link_tick > 0:
        raise InvalidArgument(f"--link-tick must be > 0 simulated seconds, got {args.link_tick}")
    clock = process.process_clock(args)

    @asynccontextmanager
    async def body() -> AsyncIterator[LinksApp]:
        app = LinksApp(
            tracking=args.tracking,
            broker=broker,
            clock=clock,
            address=process.listen_address(args),
            link_tick_s=args.link_tick,
            unready_delay_s=args.unready_delay,
            drain_grace_s=args.drain_grace,
        )
        async with AsyncExitStack() as stack:
            if args.metrics_port is not None:
                metrics = await stack.enter_async_context(
                    MetricsServer(app.registry, host=args.host, port=args.metrics_port)
                )
                print(f"links metrics on {metrics.url}", flush=True)
            yield await stack.enter_async_context(app)

    return process.run_service("links", args, body)
