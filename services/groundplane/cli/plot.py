"""``groundplane plot``: pictures of passes, ground tracks and runs, written as PNG or SVG.

The drawing lives in :mod:`groundplane.plots`; this module parses the flags, computes the inputs
with the tracking library and saves the figure. matplotlib is imported only when a plot is drawn,
so the other commands do not pay for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from groundplane.kernel.clock import RealClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_float
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import utc_jd_fr_range
from groundplane.orbit.sites import HorizonMask, Site

from . import inputs
from .tracking import MAX_WINDOW_DAYS, _add_max_element_age, _batch, _plannable, compute_passes

if TYPE_CHECKING:
    from groundplane.handoff.store import HandoffEvent
    from groundplane.system.report import TraceRecord

DEFAULT_TRACK_STEP_S = 30.0


def register(commands: Any) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw passes, ground tracks or a run as PNG or SVG",
        description="Draw a figure; the format follows the suffix of -o (.png or .svg).",
    )
    kinds = plot.add_subparsers(dest="plot", required=True, metavar="PLOT")

    sky = kinds.add_parser(
        "sky",
        help="polar sky plot of one satellite's passes over one site",
        description="Passes of one satellite over one site on a polar sky chart (north up, "
        "azimuth clockwise, zenith at the centre), the site's horizon mask shaded, AOS, TCA "
        "and LOS labelled in UTC.",
    )
    sky.add_argument("--elements", action="append", required=True, metavar="FILE")
    sky.add_argument("--sat", required=True, metavar="ID")
    sky.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]")
    _window_flags(sky)
    sky.add_argument("--min-elevation", type=finite_float, default=0.0, metavar="DEG")
    sky.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    sky.add_argument(
        "--step",
        type=finite_float,
        default=10.0,
        metavar="S",
        help="seconds between drawn points (10)",
    )
    _output_flag(sky)
    sky.set_defaults(handler=run_sky)

    track = kinds.add_parser(
        "groundtrack",
        help="sub-satellite tracks and station footprints on a world map",
        description="Sub-satellite tracks on an equirectangular map with a graticule; with "
        "--sites or --site, each station's footprint (where the satellite is above the minimum "
        "elevation) for every satellite at its mean height.",
    )
    track.add_argument("--elements", action="append", required=True, metavar="FILE")
    track.add_argument("--sat", action="append", required=True, metavar="ID", help="repeatable")
    where = track.add_mutually_exclusive_group()
    where.add_argument("--sites", metavar="FILE", help="CSV id,name,lat,lon,alt_m")
    where.add_argument("--site", action="append", metavar="LAT,LON[,ALT_M]", help="repeatable")
    _window_flags(track)
    track.add_argument("--min-elevation", type=finite_float, default=0.0, metavar="DEG")
    track.add_argument(
        "--step",
        type=finite_float,
        default=DEFAULT_TRACK_STEP_S,
        metavar="S",
        help=f"seconds between track points ({DEFAULT_TRACK_STEP_S:g})",
    )
    _output_flag(track)
    track.set_defaults(handler=run_groundtrack)

    passes = kinds.add_parser(
        "passes",
        help="timeline of passes per station and satellite",
        description="A Gantt chart of passes (AOS to LOS), one row per station × satellite.",
    )
    passes.add_argument("--elements", action="append", required=True, metavar="FILE")
    passes.add_argument("--sites", required=True, metavar="FILE", help="CSV id,name,lat,lon,alt_m")
    passes.add_argument(
        "--sat", action="append", metavar="ID", help="only these satellites (repeatable)"
    )
    _window_flags(passes)
    passes.add_argument("--min-elevation", type=finite_float, default=0.0, metavar="DEG")
    passes.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    _output_flag(passes)
    passes.set_defaults(handler=run_timeline)

    run = kinds.add_parser(
        "run",
        help="requests, latency and serving satellites of a `groundplane up` run",
        description="Requests per satellite, latency percentiles and serving-satellite "
        "swimlanes of a run, from `groundplane up --trace FILE --summary FILE`.",
    )
    run.add_argument("--trace", required=True, metavar="FILE", help="up --trace output (JSONL)")
    run.add_argument("--summary", metavar="FILE", help="up --summary output (JSON)")
    run.add_argument(
        "--handoffs",
        metavar="FILE",
        help="handoff.sqlite of `up --data-dir DIR`: session lanes and handoff markers",
    )
    _output_flag(run)
    run.set_defaults(handler=run_run)


def _window_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--start", required=True, metavar="TIME", help="ISO-8601, now or now±N[smhd]"
    )
    span = parser.add_mutually_exclusive_group(required=True)
    span.add_argument("--end", metavar="TIME")
    span.add_argument("--hours", type=finite_float, metavar="H")
    _add_max_element_age(parser)


def _output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="FILE.png or FILE.svg"
    )
    parser.add_argument(
        "--dpi", type=finite_float, default=100.0, help="PNG pixels per inch (100; SVG ignores it)"
    )


def _output(args: argparse.Namespace) -> Path:
    from groundplane.plots import output_format  # noqa: PLC0415 - one place for the suffixes

    path = Path(args.output)
    output_format(path)
    if not args.dpi > 0:
        raise InvalidArgument(f"--dpi must be a positive number of pixels per inch, got {args.dpi}")
    return path


def _window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    now = RealClock().now()
    return inputs.window(args.start, args.end, args.hours, now, MAX_WINDOW_DAYS)


def _satellites(
    args: argparse.Namespace, wanted: Sequence[str] | None, start: datetime, end: datetime
) -> list[ElementSet]:
    elements = inputs.select_satellites(inputs.load_elements(args.elements), wanted)
    policy = inputs.age_policy(args.max_element_age_days)
    return _plannable(elements, start, end, named=bool(wanted), policy=policy)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _saved(path: Path, what: str) -> int:
    print(f"groundplane plot: wrote {what} to {path}", file=sys.stderr)
    return 0


def run_sky(args: argparse.Namespace) -> int:
    from groundplane.plots import save  # noqa: PLC0415 - matplotlib only when drawing
    from groundplane.plots.sky import sky_figure, sky_tracks  # noqa: PLC0415

    path = _output(args)
    site = inputs.parse_site_arg(args.site, "0", args.min_elevation, inputs.load_mask(args.mask))
    start, end = _window(args)
    (element_set,) = _satellites(args, [args.sat], start, end)
    batch = _batch([element_set])
    found = compute_passes([element_set], [site], start, end)
    tracks = sky_tracks(batch, site, found, args.step)
    name = f" ({element_set.name})" if element_set.name else ""
    title = (
        f"{element_set.catalog_id}{name} from {args.site}: {len(found)} passes\n"
        f"{_when(start)} … {_when(end)}, min elevation {args.min_elevation:g}°, times UTC"
    )
    figure = sky_figure(site, tracks, names={element_set.catalog_id: element_set.name}, title=title)
    save(figure, path, args.dpi)
    return _saved(path, f"{len(found)} passes")


def run_groundtrack(args: argparse.Namespace) -> int:
    from groundplane.plots import save  # noqa: PLC0415 - matplotlib only when drawing
    from groundplane.plots.groundtrack import (  # noqa: PLC0415
        Footprint,
        GroundTrack,
        groundtrack_figure,
        subsatellite_points,
    )

    path = _output(args)
    start, end = _window(args)
    if not args.step > 0:
        raise InvalidArgument(f"--step must be positive seconds, got {args.step}")
    sites = _sites(args, inputs.load_mask(None))
    elements = _satellites(args, args.sat, start, end)
    batch = _batch(elements)
    jd, fr = utc_jd_fr_range(start, end, args.step)
    points = subsatellite_points(batch, jd, fr)
    tracks = [
        GroundTrack(
            e.catalog_id,
            points.lat_deg[i],
            points.lon_deg[i],
            e.name,
            None if points.sunlit is None else points.sunlit[i],
        )
        for i, e in enumerate(elements)
    ]
    footprints: list[Footprint] = []
    for i, element_set in enumerate(elements):
        heights = points.alt_km[i][np.isfinite(points.alt_km[i])]
        if heights.size == 0:
            print(
                f"warning: {element_set.catalog_id}: SGP4 gives no position in the window; "
                "no footprints for it",
                file=sys.stderr,
            )
            continue
        footprints.extend(
            Footprint(site, element_set.catalog_id, float(heights.mean())) for site in sites
        )
    title = f"Ground tracks {_when(start)} … {_when(end)} (dot: start; dark: in shadow)" + (
        f"; dashed: footprints at {args.min_elevation:g}° elevation" if footprints else ""
    )
    save(groundtrack_figure(tracks, footprints, title=title), path, args.dpi)
    return _saved(path, f"{len(tracks)} tracks, {len(footprints)} footprints")


def _sites(args: argparse.Namespace, mask: HorizonMask) -> list[Site]:
    if args.sites:
        return inputs.load_sites_csv(args.sites, args.min_elevation, mask)
    return [
        inputs.parse_site_arg(text, str(i), args.min_elevation, mask)
        for i, text in enumerate(args.site or ())
    ]


def run_timeline(args: argparse.Namespace) -> int:
    from groundplane.plots import save  # noqa: PLC0415 - matplotlib only when drawing
    from groundplane.plots.timeline import timeline_figure  # noqa: PLC0415

    path = _output(args)
    start, end = _window(args)
    sites = _sites(args, inputs.load_mask(args.mask))
    elements = _satellites(args, args.sat, start, end)
    found = compute_passes(elements, sites, start, end, progress=sys.stderr.isatty())
    title = (
        f"{len(found)} passes over {len(sites)} stations, {_when(start)} … {_when(end)}, "
        f"min elevation {args.min_elevation:g}° (hatched: cut by the window)"
    )
    figure = timeline_figure(
        found,
        start,
        end,
        site_names={s.id: s.name for s in sites},
        satellite_names={e.catalog_id: e.name for e in elements},
        title=title,
    )
    save(figure, path, args.dpi)
    return _saved(path, f"{len(found)} passes")


def run_run(args: argparse.Namespace) -> int:
    from groundplane.plots import save  # noqa: PLC0415 - matplotlib only when drawing
    from groundplane.plots.run import parse_summary, parse_trace, run_figure  # noqa: PLC0415

    path = _output(args)
    records = parse_trace(inputs.read_text(args.trace), source=args.trace)
    if not records:
        raise InvalidArgument(
            f"--trace {args.trace}: no requests in the trace; run `groundplane up --rate R "
            "--trace FILE` with R > 0"
        )
    summary = (
        parse_summary(inputs.read_text(args.summary), source=args.summary) if args.summary else None
    )
    events = _handoff_events(args.handoffs, records) if args.handoffs else []
    save(run_figure(records, summary, events), path, args.dpi)
    return _saved(path, f"{len(records)} requests, {len(events)} handoff events")


def _handoff_events(path: str, records: Sequence[TraceRecord]) -> list[HandoffEvent]:
    """Handoff events of the store within the trace's time span (a kept store holds every run)."""
    from groundplane.handoff.store import HandoffStore  # noqa: PLC0415 - only with --handoffs

    if not Path(path).is_file():
        raise InvalidArgument(
            f"--handoffs {path}: no such file; give the handoff.sqlite that "
            "`groundplane up --data-dir DIR` keeps in DIR"
        )
    first = min(r.submitted_at for r in records)
    last = max(r.completed_at for r in records)
    store = HandoffStore(path)
    try:
        events: list[HandoffEvent] = []
        after = 0
        while page := store.events(after_id=after, limit=10_000):
            events.extend(e for e in page if first <= e.at <= last)
            after = page[-1].event_id
    finally:
        store.close()
    return events
