"""``groundplane serve tracking``: the element catalog, sites and geometry as a process.

Tracking is the source of truth the other services follow (``WatchCatalog``). It is ready as
soon as it serves: its inputs are its own store (``--db``) and what it loads at start. With
``--metrics-port`` it serves ``groundplane_tracking_*`` gauges (satellites, sites, open catalog
streams) at ``/metrics``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from groundplane.kernel import paths
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.validation import finite_float
from groundplane.orbit.constellations import generate
from groundplane.orbit.elements import ElementSet
from groundplane.tracking.app import TrackingApp, build_tracking
from groundplane.tracking.catalog import MAX_ELEMENT_AGE_FLAG, ElementAgePolicy
from groundplane.tracking.core import TrackingSettings

from . import inputs, process

log = structlog.get_logger("groundplane.cli.serve_tracking")

DB_FILE_NAME = "tracking.sqlite3"
DEFAULT_PORT = 50051


def register(services: Any) -> None:
    tracking = services.add_parser(
        "tracking",
        help="the tracking service",
        description="Serve groundplane.tracking.v1.TrackingService (element catalog, sites, "
        "passes, look angles, visibility, the catalog stream the other services follow) with "
        "gRPC health and reflection. The catalog and sites persist in --db. SIGTERM: "
        "NOT_SERVING for --unready-delay, drain for --drain-grace, exit 0. "
        f"Times: {inputs.TIME_HELP}.",
    )
    process.add_process_arguments(tracking, default_port=DEFAULT_PORT)
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
        type=finite_float,
        default=0.0,
        metavar="DEG",
        help="minimum elevation of the --sites loaded",
    )
    tracking.add_argument(
        MAX_ELEMENT_AGE_FLAG,
        type=finite_float,
        default=ElementAgePolicy().refuse_after_days,
        metavar="DAYS",
        help="refuse elements whose epoch is more than this many days from the service's now "
        "(raise it to serve old element files, e.g. the shipped August-2026 ones)",
    )
    tracking.set_defaults(handler=run_tracking)


def tracking_db_path(db: str | None) -> str:
    """``--db`` as given, or the catalog file in groundplane's state directory (created)."""
    if db is not None:
        return db
    return str(paths.ensure_dir(paths.state_dir(os.environ, Path.home())) / DB_FILE_NAME)


class _ServingTracking:
    """What ``run_service`` reads of a started tracking process."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server

    @property
    def target(self) -> str:
        return self._server.target


def run_tracking(args: argparse.Namespace) -> int:
    settings = TrackingSettings(age_policy=inputs.age_policy(args.max_element_age_days))
    clock = process.process_clock(args)
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
        address=process.listen_address(args),
        settings=settings,
        elements=elements,
        sites=sites,
        unready_delay_s=args.unready_delay,
        drain_grace_s=args.drain_grace,
    )
    print(f"tracking catalog in {db_path}", flush=True)
    log.info("tracking_catalog", db_path=db_path)
    try:
        return process.run_service("tracking", args, lambda: _serve(app, args))
    finally:
        app.close()


@asynccontextmanager
async def _serve(app: TrackingApp, args: argparse.Namespace) -> AsyncIterator[_ServingTracking]:
    async with AsyncExitStack() as stack:
        if args.metrics_port is not None:
            metrics = await stack.enter_async_context(
                MetricsServer(app.registry, host=args.host, port=args.metrics_port)
            )
            print(f"tracking metrics on {metrics.url}", flush=True)
        await app.server.start()
        stack.push_async_callback(app.server.stop)
        yield _ServingTracking(app.server)
