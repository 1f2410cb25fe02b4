"""``groundplane serve SERVICE``: run one service as a long-lived process (a container command)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import structlog

from groundplane.cli import serve_nodes
from groundplane.hil.controller import HamlibEndpoint, StationController, TrackingPassSource
from groundplane.hil.servicer import StationControlServicer
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.validation import finite_float
from groundplane.tracking.v1.tracking_pb2_grpc import TrackingServiceStub

from . import (
    inputs,
    serve_dashboard,
    serve_gateway,
    serve_handoff,
    serve_links,
    serve_routing,
    serve_tracking,
)
from .main import print_help_of

log = structlog.get_logger("groundplane.cli.serve")


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run one service",
        description="Run one groundplane service until SIGTERM (a container's command).",
    )
    services = serve.add_subparsers(dest="service", metavar="SERVICE")
    serve.set_defaults(handler=print_help_of(serve))
    serve_tracking.register(services)
    serve_links.register(services)
    serve_routing.register(services)
    serve_gateway.register(services)
    serve_handoff.register(services)
    hil = services.add_parser(
        "hil",
        help="station control (rotctld/rigctld) for one station",
        description="Serve groundplane.hil.v1.StationControlService for one station: track a "
        "pass the --tracking service predicts with a Hamlib rotator (rotctld) and radio "
        f"(rigctld), report status, stop and park. Times: {inputs.TIME_HELP}.",
    )
    hil.add_argument("--host", default="127.0.0.1", help="address to listen on")
    hil.add_argument(
        "--port", type=inputs.port, default=50061, help="port to listen on; 0 picks a free port"
    )
    hil.add_argument(
        "--tracking",
        required=True,
        type=inputs.address,
        metavar="HOST:PORT",
        help="the tracking service that predicts passes and look angles",
    )
    hil.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]", help="the station")
    hil.add_argument("--site-id", default="station", help="the station's id")
    hil.add_argument(
        "--min-elevation",
        type=finite_float,
        default=0.0,
        metavar="DEG",
        help="never point below this elevation",
    )
    hil.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    hil.add_argument("--rotctld", required=True, metavar="HOST:PORT", help="the rotator daemon")
    hil.add_argument("--rigctld", metavar="HOST:PORT", help="the radio daemon, for Doppler")
    hil.add_argument(
        "--start", metavar="TIME", help="simulated time starts here (default: real time)"
    )
    hil.add_argument(
        "--speed", type=finite_float, help="simulated seconds per wall second (default: 1)"
    )
    hil.add_argument(
        "--clock",
        metavar="SPEC",
        help="share a simulated time line: 'start=ISO,speed=X,anchor=UNIX_S' as printed by "
        "groundplane up (instead of --start/--speed)",
    )
    hil.add_argument(
        "--unready-delay",
        type=finite_float,
        default=1.0,
        metavar="S",
        help="seconds NOT_SERVING before draining on SIGTERM",
    )
    hil.add_argument(
        "--log-format",
        choices=("json", "console", "auto"),
        default="auto",
        help="log lines as JSON, for a console, or console on a TTY and JSON otherwise",
    )
    hil.set_defaults(handler=run_hil)
    serve_nodes.register(services)
    serve_dashboard.register(services)


def run_hil(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    clock = inputs.make_clock(args.start, args.speed, args.clock)
    site = inputs.parse_site_arg(
        args.site, args.site_id, args.min_elevation, inputs.load_mask(args.mask)
    )
    rotctld = HamlibEndpoint.parse(args.rotctld, "--rotctld")
    rigctld = HamlibEndpoint.parse(args.rigctld, "--rigctld") if args.rigctld else None

    async def serve() -> None:
        async with grpc.aio.insecure_channel(args.tracking) as channel:
            controller = StationController(
                site=site,
                clock=clock,
                source=TrackingPassSource(TrackingServiceStub(channel)),
                rotctld=rotctld,
                rigctld=rigctld,
            )
            server = GrpcServer(
                [StationControlServicer(controller).binding()],
                address=f"{args.host}:{args.port}",
                unready_delay_s=args.unready_delay,
            )
            async with asyncio.TaskGroup() as group:
                station = group.create_task(controller.run(), name="hil-station")
                await server.start()
                print(f"station control serving on {server.target}", flush=True)
                await server.serve_until_signal()
                await controller.stop()
                station.cancel()

    asyncio.run(serve())
    return 0
