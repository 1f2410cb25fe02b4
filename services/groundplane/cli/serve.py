"""``groundplane serve SERVICE``: run one service as a long-lived process (a container command)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import structlog

from groundplane.cli import serve_nodes
from groundplane.hil.controller import HamlibEndpoint, StationController, TrackingPassSource
from groundplane.hil.servicer import StationControlServicer
from groundplane.kernel import paths
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.serving import GrpcServer
from groundplane.orbit.constellations import generate
from groundplane.orbit.elements import ElementSet
from groundplane.tracking.app import build_tracking
from groundplane.tracking.catalog import MAX_ELEMENT_AGE_FLAG, ElementAgePolicy
from groundplane.tracking.core import TrackingSettings
from groundplane.tracking.v1.tracking_pb2_grpc import TrackingServiceStub

from . import inputs
from .main import print_help_of

log = structlog.get_logger("groundplane.cli.serve")


DB_FILE_NAME = "tracking.sqlite3"


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run one service",
        description="Run one groundplane service until SIGTERM (a container's command).",
    )
    services = serve.add_subparsers(dest="service", metavar="SERVICE")
    serve.set_defaults(handler=print_help_of(serve))
    tracking = services.add_parser(
        "tracking",
        help="the tracking service",
        description="Serve groundplane.tracking.v1.TrackingService (element catalog, sites, "
        "passes, look angles, visibility) with gRPC health and reflection. The catalog and "
        "sites persist in --db. SIGTERM: NOT_SERVING for --unready-delay, drain, exit 0. "
        f"Times: {inputs.TIME_HELP}.",
    )
    tracking.add_argument("--host", default="127.0.0.1", help="address to listen on")
    tracking.add_argument(
        "--port", type=inputs.port, default=50051, help="port to listen on; 0 picks a free port"
    )
    tracking.add_argument(
        "--db",
        metavar="FILE",
        help="SQLite file of the catalog and sites (':memory:' keeps nothing); default: "
        f"{DB_FILE_NAME} in $XDG_STATE_HOME/groundplane (~/.local/state/groundplane), created "
        "on demand",
    )
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
    tracking.add_argument(
        "--min-elevation",
        type=float,
        default=0.0,
        metavar="DEG",
        help="minimum elevation of the --sites loaded",
    )
    tracking.add_argument(
        "--start", metavar="TIME", help="simulated time starts here (default: real time)"
    )
    tracking.add_argument(
        "--speed", type=float, help="simulated seconds per wall second (default: 1)"
    )
    tracking.add_argument(
        "--clock",
        metavar="SPEC",
        help="share a simulated time line: 'start=ISO,speed=X,anchor=UNIX_S' as printed by "
        "groundplane up (instead of --start/--speed)",
    )
    tracking.add_argument(
        MAX_ELEMENT_AGE_FLAG,
        type=float,
        default=ElementAgePolicy().refuse_after_days,
        metavar="DAYS",
        help="refuse elements whose epoch is more than this many days from the service's now "
        "(raise it to serve old element files, e.g. the shipped August-2026 ones)",
    )
    tracking.add_argument(
        "--unready-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds NOT_SERVING before draining on SIGTERM",
    )
    tracking.add_argument(
        "--log-format",
        choices=("json", "console", "auto"),
        default="auto",
        help="log lines as JSON, for a console, or console on a TTY and JSON otherwise",
    )
    tracking.set_defaults(handler=run_tracking)

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
        type=float,
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
    hil.add_argument("--speed", type=float, help="simulated seconds per wall second (default: 1)")
    hil.add_argument(
        "--clock",
        metavar="SPEC",
        help="share a simulated time line: 'start=ISO,speed=X,anchor=UNIX_S' as printed by "
        "groundplane up (instead of --start/--speed)",
    )
    hil.add_argument(
        "--unready-delay",
        type=float,
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


def tracking_db_path(db: str | None) -> str:
    """``--db`` as given, or the catalog file in groundplane's state directory (created)."""
    if db is not None:
        return db
    return str(paths.ensure_dir(paths.state_dir(os.environ, Path.home())) / DB_FILE_NAME)


def run_tracking(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    settings = TrackingSettings(age_policy=inputs.age_policy(args.max_element_age_days))
    clock = inputs.make_clock(args.start, args.speed, args.clock)
    elements: list[ElementSet] = inputs.load_elements(args.elements) if args.elements else []
    if args.constellation:
        elements.extend(generate(args.constellation, clock.now()))
    sites = (
        inputs.load_sites_csv(args.sites, args.min_elevation, inputs.load_mask(None))
        if args.sites
        else []
    )
    db_path = tracking_db_path(args.db)
    app = build_tracking(
        clock,
        db_path=db_path,
        address=f"{args.host}:{args.port}",
        settings=settings,
        elements=elements,
        sites=sites,
        unready_delay_s=args.unready_delay,
    )
    print(f"tracking catalog in {db_path}", flush=True)
    log.info("tracking catalog", db_path=db_path)

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
