"""``groundplane hil``: follow one pass with a real rotator (rotctld) and radio (rigctld)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from groundplane.hil.controller import (
    SEARCH_WINDOW,
    ElementsPassSource,
    HamlibEndpoint,
    StationController,
    describe,
)
from groundplane.hil.tracker import RadioPlan, TrackerStatus
from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.validation import finite_float

from . import inputs
from .tracking import _add_max_element_age, _plannable

#: Simulated seconds between two printed status lines.
PRINT_EVERY_S = 10.0


def register(commands: Any) -> None:
    hil = commands.add_parser(
        "hil",
        help="track one pass with rotctld/rigctld",
        description="Point a Hamlib rotator (and tune a radio with Doppler correction) through "
        "one pass; exits 0 after parking.",
    )
    hil.add_argument("--elements", required=True, metavar="FILE", help="TLE/3LE or OMM file")
    hil.add_argument("--sat", required=True, metavar="ID", help="the satellite to track")
    hil.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]", help="the station")
    hil.add_argument("--rotctld", required=True, metavar="HOST:PORT", help="the rotator daemon")
    hil.add_argument("--rigctld", metavar="HOST:PORT", help="the radio daemon, for Doppler")
    hil.add_argument("--downlink-hz", type=finite_float, metavar="F", help="receive frequency (Hz)")
    hil.add_argument("--uplink-hz", type=finite_float, metavar="F", help="transmit frequency (Hz)")
    hil.add_argument(
        "--min-elevation",
        type=finite_float,
        default=0.0,
        metavar="DEG",
        help="never point below this elevation",
    )
    hil.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    hil.add_argument(
        "--start",
        metavar="TIME",
        help="simulated time starts here: ISO-8601 UTC, now or now±N[s|m|h|d] (default: now)",
    )
    hil.add_argument(
        "--speed", type=finite_float, help="simulated seconds per wall second (default 1)"
    )
    hil.add_argument(
        "--pass",
        dest="which",
        default="next",
        metavar="next|TIME",
        help="the next pass after --start, or the pass containing this time (ISO-8601, now, "
        "now±N[smhd])",
    )
    _add_max_element_age(hil)
    hil.set_defaults(handler=run_hil)


def run_hil(args: argparse.Namespace) -> int:
    if args.rigctld and args.downlink_hz is None:
        raise InvalidArgument("--rigctld needs --downlink-hz F (and optionally --uplink-hz F)")
    if args.downlink_hz is not None and not args.rigctld:
        raise InvalidArgument("--downlink-hz needs --rigctld HOST:PORT")
    if args.uplink_hz is not None and args.downlink_hz is None:
        raise InvalidArgument("--uplink-hz needs --downlink-hz")
    radio = RadioPlan(args.downlink_hz, args.uplink_hz) if args.downlink_hz is not None else None
    rotctld = HamlibEndpoint.parse(args.rotctld, "--rotctld")
    rigctld = HamlibEndpoint.parse(args.rigctld, "--rigctld") if args.rigctld else None
    site = inputs.parse_site_arg(args.site, "site", args.min_elevation, inputs.load_mask(args.mask))
    elements = inputs.select_satellites(inputs.load_elements([args.elements]), [args.sat])
    clock = inputs.make_clock(args.start, args.speed)
    now = clock.now()
    pass_time = None if args.which == "next" else inputs.parse_time(args.which, now, "--pass")
    # Judged where the pass is looked for (as `passes` judges its window), before any daemon is
    # contacted: refused beyond --max-element-age-days, a warning beyond 3 days.
    policy = inputs.age_policy(args.max_element_age_days)
    judged = (pass_time, pass_time) if pass_time is not None else (now, now + SEARCH_WINDOW)
    _plannable(elements, *judged, named=True, policy=policy)
    configure_logging("json", level="WARNING")
    controller = StationController(
        site=site,
        clock=clock,
        source=ElementsPassSource(elements),
        rotctld=rotctld,
        rigctld=rigctld,
    )
    final = asyncio.run(_track(controller, clock, elements[0].catalog_id, pass_time, radio))
    print(f"finished: {final.phase}" + (f" ({final.last_fault})" if final.last_fault else ""))
    return 0 if final.phase == "parked" else 1


async def _track(
    controller: StationController,
    clock: Clock,
    catalog_id: str,
    pass_time: Any,
    radio: RadioPlan | None,
) -> TrackerStatus:
    planned = await controller.plan(catalog_id, pass_time)
    print(f"pass: {describe(planned.found)}", flush=True)
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(controller.run(), name="hil-station")
        controller.start(planned, radio)

        def interrupt() -> None:
            group.create_task(controller.stop(), name="hil-stop")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        printer = group.create_task(_print_status(controller, clock), name="hil-status")
        try:
            final = await controller.wait_finished()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            printer.cancel()
            runner.cancel()
    return final


async def _print_status(controller: StationController, clock: Clock) -> None:
    last_printed = None
    async for status in controller.hub.watch():
        now = clock.now()
        if last_printed is not None and (now - last_printed).total_seconds() < PRINT_EVERY_S:
            continue
        last_printed = now
        print(_line(status), flush=True)


def _line(status: TrackerStatus) -> str:
    def angle(value: float | None) -> str:
        return "   -  " if value is None else f"{value:6.1f}"

    radio = ""
    if status.downlink_hz is not None:
        radio = f" rx {status.downlink_hz} Hz"
        if status.uplink_hz is not None:
            radio += f" tx {status.uplink_hz} Hz"
    faults = f" faults: {status.last_fault}" if status.last_fault else ""
    return (
        f"{format_utc(status.at)} {status.phase:<14} "
        f"want az {angle(status.predicted_azimuth_deg)} el {angle(status.predicted_elevation_deg)} "
        f"at az {angle(status.reported_azimuth_deg)} el {angle(status.reported_elevation_deg)}"
        f"{radio}{faults}"
    )
