"""``groundplane serve SERVICE``: run one service as a long-lived process (a container command)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from groundplane.hil.controller import HamlibEndpoint, StationController, TrackingPassSource
from groundplane.hil.servicer import StationControlServicer
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.serving import GrpcServer
from groundplane.tracking.app import build_tracking
from groundplane.tracking.constellations import generate
from groundplane.tracking.elements import ElementSet
from groundplane.tracking.v1.tracking_pb2_grpc import TrackingServiceStub

from . import inputs


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="run one service", description="Run one groundplane service until SIGTERM."
    )
    services = serve.add_subparsers(dest="service", required=True, metavar="SERVICE")
    tracking = services.add_parser("tracking", help="the tracking service")
    tracking.add_argument("--host", default="127.0.0.1")
    tracking.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    tracking.add_argument("--db", default="tracking.sqlite3", help="SQLite file (':memory:' ok)")
    tracking.add_argument(
        "--elements",
        action="append",
        default=[],
        metavar="FILE",
        help="element file to load at start; repeatable",
    )
    tracking.add_argument(
        "--constellation",
        metavar="SPEC",
        help="synthetic constellation to load, e.g. walker:1584/72/1@550km:53",
    )
    tracking.add_argument("--sites", metavar="FILE", help="CSV id,name,lat,lon,alt_m to load")
    tracking.add_argument("--min-elevation", type=float, default=0.0, metavar="DEG")
    tracking.add_argument("--start", metavar="ISO8601", help="simulated time starts here")
    tracking.add_argument("--speed", type=float, help="simulated seconds per wall second")
    tracking.add_argument(
        "--unready-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds NOT_SERVING before draining on SIGTERM",
    )
    tracking.add_argument("--log-format", choices=("json", "console", "auto"), default="auto")
    tracking.set_defaults(handler=run_tracking)

    hil = services.add_parser("hil", help="station control (rotctld/rigctld) for one station")
    hil.add_argument("--host", default="127.0.0.1")
    hil.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    hil.add_argument(
        "--tracking",
        required=True,
        metavar="HOST:PORT",
        help="the tracking service that predicts passes and look angles",
    )
    hil.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]")
    hil.add_argument("--site-id", default="station")
    hil.add_argument("--min-elevation", type=float, default=0.0, metavar="DEG")
    hil.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    hil.add_argument("--rotctld", required=True, metavar="HOST:PORT")
    hil.add_argument("--rigctld", metavar="HOST:PORT")
    hil.add_argument("--start", metavar="ISO8601", help="simulated time starts here")
    hil.add_argument("--speed", type=float, help="simulated seconds per wall second")
    hil.add_argument("--unready-delay", type=float, default=1.0, metavar="S")
    hil.add_argument("--log-format", choices=("json", "console", "auto"), default="auto")
    hil.set_defaults(handler=run_hil)


def run_tracking(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    clock = inputs.make_clock(args.start, args.speed)
    elements: list[ElementSet] = inputs.load_elements(args.elements) if args.elements else []
    if args.constellation:
        elements.extend(generate(args.constellation, clock.now()))
    sites = (
        inputs.load_sites_csv(args.sites, args.min_elevation, inputs.load_mask(None))
        if args.sites
        else []
    )
    app = build_tracking(
        clock,
        db_path=args.db,
        address=f"{args.host}:{args.port}",
        elements=elements,
        sites=sites,
        unready_delay_s=args.unready_delay,
    )

    async def serve() -> None:
        await app.server.start()
        print(f"tracking serving on {app.server.target}", flush=True)
        await app.server.serve_until_signal()

    try:
        asyncio.run(serve())
    finally:
        app.close()
    return 0


def run_hil(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    clock = inputs.make_clock(args.start, args.speed)
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
