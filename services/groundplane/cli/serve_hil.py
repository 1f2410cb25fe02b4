"""``groundplane serve hil``: station control of one station as a process.

It serves ``groundplane.hil.v1.StationControlService``: tracks a pass the ``--tracking`` service
predicts with a Hamlib rotator (``--rotctld``) and radio (``--rigctld``), reports status, stops
and parks. It has every process option of ``cli/process.py`` (``--metrics-port`` serves
``groundplane_hil_*``: tracking active, commands and errors per device, pointing error; tracing);
on SIGTERM it goes NOT_SERVING, stops the pass (parking the antenna) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from groundplane.hil.controller import HamlibEndpoint, StationController, TrackingPassSource
from groundplane.hil.metrics import HilMetrics
from groundplane.hil.servicer import StationControlServicer
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.tls import open_channel
from groundplane.kernel.validation import finite_float
from groundplane.tracking.v1.tracking_pb2_grpc import TrackingServiceStub

from . import inputs, process

DEFAULT_PORT = 50061


def register(services: Any) -> None:
    hil = services.add_parser(
        "hil",
        help="station control (rotctld/rigctld) for one station",
        description="Serve groundplane.hil.v1.StationControlService for one station: track a "
        "pass the --tracking service predicts with a Hamlib rotator (rotctld) and radio "
        f"(rigctld), report status, stop and park. Times: {inputs.TIME_HELP}.",
    )
    process.add_process_arguments(hil, default_port=DEFAULT_PORT)
    process.add_tracking_argument(hil, "the tracking service that predicts passes and look angles")
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
    hil.set_defaults(handler=run_hil)


@dataclass(frozen=True)
class RunningStation:
    target: str
    controller: StationController


def run_hil(args: argparse.Namespace) -> int:
    clock = process.process_clock(args)
    site = inputs.parse_site_arg(
        args.site, args.site_id, args.min_elevation, inputs.load_mask(args.mask)
    )
    rotctld = HamlibEndpoint.parse(args.rotctld, "--rotctld")
    rigctld = HamlibEndpoint.parse(args.rigctld, "--rigctld") if args.rigctld else None

    @asynccontextmanager
    async def body() -> AsyncIterator[RunningStation]:
        async with AsyncExitStack() as stack:
            channel = await stack.enter_async_context(open_channel(args.tracking))
            controller = StationController(
                site=site,
                clock=clock,
                source=TrackingPassSource(TrackingServiceStub(channel)),
                rotctld=rotctld,
                rigctld=rigctld,
            )
            metrics = HilMetrics(
                rotator=controller.rotator,
                radio=controller.radio,
                status=lambda: controller.status,
            )
            stack.callback(metrics.watch(controller.hub))
            if args.metrics_port is not None:
                served = await stack.enter_async_context(
                    MetricsServer(metrics.registry, host=args.host, port=args.metrics_port)
                )
                print(f"hil metrics on {served.url}", flush=True)
            server = GrpcServer(
                [StationControlServicer(controller).binding()],
                address=process.listen_address(args),
                unready_delay_s=args.unready_delay,
                drain_grace_s=args.drain_grace,
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            station = tasks.create_task(controller.run(), name="hil-station")
            await server.start()
            try:
                yield RunningStation(server.target, controller)
            finally:
                await server.stop()
                await controller.stop()
                station.cancel()

    return process.run_service("hil", args, body)
