"""``groundplane up``: the whole system on one machine.

Today the system is the tracking service: ``up`` starts it on a simulated clock with a
constellation and ground stations (the built-in scenario when given no files), then shows which
satellites every station sees, asking the service over its gRPC contract like any client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC
from typing import Any

import grpc

from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.logs import configure_logging
from groundplane.scenario import DEFAULT_CONSTELLATION, DEFAULT_MIN_ELEVATION_DEG, default_stations
from groundplane.tracking.app import build_tracking
from groundplane.tracking.constellations import generate
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from . import inputs

RPC_TIMEOUT_S = 10.0


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the whole system on this machine",
        description="Start groundplane on one machine: with no files, a built-in scenario "
        f"({DEFAULT_CONSTELLATION} and {len(default_stations())} ground stations).",
    )
    source = up.add_mutually_exclusive_group()
    source.add_argument("--elements", action="append", metavar="FILE")
    source.add_argument("--constellation", metavar="SPEC", help=f"default {DEFAULT_CONSTELLATION}")
    up.add_argument("--stations", metavar="FILE", help="CSV id,name,lat,lon,alt_m")
    up.add_argument("--min-elevation", type=float, default=DEFAULT_MIN_ELEVATION_DEG, metavar="DEG")
    up.add_argument("--start", metavar="ISO8601", help="simulated start (default: now)")
    up.add_argument("--speed", type=float, default=60.0, help="simulated s per wall s (60)")
    up.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="wall seconds to run (default: until Ctrl-C)",
    )
    up.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wall seconds between status updates",
    )
    up.add_argument("--port", type=int, default=0, help="tracking gRPC port (0 = free port)")
    up.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace) -> int:
    if args.duration is not None and not args.duration > 0:
        raise InvalidArgument(f"--duration must be positive wall seconds, got {args.duration}")
    if not args.interval > 0:
        raise InvalidArgument(f"--interval must be positive, got {args.interval}")
    configure_logging("json", level="WARNING")
    clock = inputs.make_clock(args.start, args.speed)
    if args.elements:
        elements = inputs.load_elements(args.elements)
        scenario = ", ".join(args.elements)
    else:
        spec = args.constellation or DEFAULT_CONSTELLATION
        elements = generate(spec, clock.now())
        scenario = spec
    stations = (
        inputs.load_sites_csv(args.stations, args.min_elevation, inputs.load_mask(None))
        if args.stations
        else default_stations(args.min_elevation)
    )
    app = build_tracking(
        clock,
        address=f"127.0.0.1:{args.port}",
        elements=elements,
        sites=stations,
        unready_delay_s=0.0,
        drain_grace_s=1.0,
    )
    print(
        f"groundplane up: {len(elements)} satellites ({scenario}), {len(stations)} stations, "
        f"min elevation {args.min_elevation:g}°, speed {clock.speed:g}×",
        flush=True,
    )
    try:
        asyncio.run(_run(app, clock, args))
    finally:
        app.close()
    return 0


async def _run(app: Any, clock: Clock, args: argparse.Namespace) -> None:
    await app.server.start()
    print(f"tracking service on {app.server.target} (grpcurl -plaintext {app.server.target} list)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_status_loop(app.server.target, clock, args, stop), name="status")
            if args.duration is not None:
                tasks.create_task(_stop_after(args.duration, stop), name="duration")
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await app.server.stop()
        print("groundplane up: stopped cleanly")


async def _stop_after(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    stop.set()


async def _status_loop(
    target: str, clock: Clock, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    tty = sys.stdout.isatty()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        sites = (await stub.ListSites(pb.ListSitesRequest(), timeout=RPC_TIMEOUT_S)).sites
        selector = pb.SiteSelector(site_ids=[s.id for s in sites])
        while not stop.is_set():
            reply = await stub.GetVisibility(
                pb.GetVisibilityRequest(sites=selector), timeout=RPC_TIMEOUT_S
            )
            text = _render(reply, {s.id: s.name for s in sites})
            if tty:
                sys.stdout.write("\x1b[H\x1b[J" + text)
            else:
                sys.stdout.write(text)
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.interval)


def _render(reply: pb.GetVisibilityResponse, names: dict[str, str]) -> str:
    at = reply.time.ToDatetime(tzinfo=UTC)
    lines = [f"{format_utc(at)}  visible satellites (threshold = station minimum elevation)\n"]
    total = 0
    for entry in reply.sites:
        seen = sorted(entry.satellites, key=lambda s: -s.elevation_deg)
        total += len(seen)
        if seen:
            best = seen[0]
            detail = (
                f"best {best.catalog_id} el {best.elevation_deg:5.1f}° az {best.azimuth_deg:5.1f}° "
                f"{best.range_km:7.1f} km, {best.remaining_s:5.0f} s left"
            )
        else:
            detail = "none in view"
        lines.append(f"  {entry.site_id:<16} {len(seen):3d}  {detail}\n")
    lines.append(f"  {'total':<16} {total:3d}\n")
    return "".join(lines)
