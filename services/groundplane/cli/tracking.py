"""``groundplane passes`` and ``groundplane look``: tracking questions answered from files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from groundplane.kernel.clock import RealClock, format_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import (
    SatelliteBatch,
    doppler_downlink_hz,
    doppler_uplink_hz,
    error_reason,
    look_angles,
    utc_jd_fr,
)
from groundplane.orbit.passes import Pass, find_passes
from groundplane.orbit.sites import Site
from groundplane.tracking.catalog import MAX_ELEMENT_AGE_FLAG, AgeVerdict, ElementAgePolicy
from groundplane.tracking.core import TrackingSettings

from . import inputs

PASS_FIELDS = (
    "catalog_id",
    "name",
    "site",
    "site_name",
    "aos",
    "tca",
    "los",
    "max_elevation_deg",
    "aos_azimuth_deg",
    "los_azimuth_deg",
    "aos_clipped",
    "los_clipped",
)
PROGRESS_CHUNK = 64
MAX_WINDOW_DAYS = TrackingSettings().max_pass_window_days
"""The longest window one call may ask for: the tracking service's own limit."""
DEFAULT_MAX_ELEMENT_AGE_DAYS = ElementAgePolicy().refuse_after_days


def _add_max_element_age(parser: Any) -> None:
    parser.add_argument(
        MAX_ELEMENT_AGE_FLAG,
        type=float,
        default=DEFAULT_MAX_ELEMENT_AGE_DAYS,
        metavar="DAYS",
        help="refuse elements whose epoch is more than this many days from the asked time "
        "(older elements give kilometre-level errors; raise it to use them anyway)",
    )


def register(commands: Any) -> None:
    passes = commands.add_parser(
        "passes",
        help="predict passes of satellites over sites",
        description="Predict passes (AOS, TCA, LOS) of satellites over ground sites. "
        f"Times: {inputs.TIME_HELP}.",
    )
    passes.add_argument(
        "--elements",
        action="append",
        required=True,
        metavar="FILE",
        help="TLE/3LE or OMM (JSON, CSV, XML) file; repeatable",
    )
    where = passes.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--site",
        action="append",
        metavar="LAT,LON[,ALT_M]",
        help="an observer; repeatable (ids 0, 1, …)",
    )
    where.add_argument("--sites", metavar="FILE", help="CSV id,name,lat,lon,alt_m")
    passes.add_argument("--start", required=True, metavar="TIME", help="start of the window")
    span = passes.add_mutually_exclusive_group(required=True)
    span.add_argument("--end", metavar="TIME", help="end of the window")
    span.add_argument(
        "--hours",
        type=float,
        metavar="H",
        help=f"length of the window (at most {MAX_WINDOW_DAYS * 24:g})",
    )
    passes.add_argument(
        "--min-elevation",
        type=float,
        default=0.0,
        metavar="DEG",
        help="lowest elevation that counts as in view, at every site",
    )
    passes.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    passes.add_argument(
        "--sat",
        action="append",
        metavar="ID",
        help="a satellite to predict; repeatable (default: every satellite in the files)",
    )
    passes.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format"
    )
    _add_max_element_age(passes)
    passes.set_defaults(handler=run_passes)

    look = commands.add_parser(
        "look",
        help="look angles of one satellite from one site",
        description="Azimuth, elevation, range, range rate and Doppler at one instant. "
        f"Times: {inputs.TIME_HELP}.",
    )
    look.add_argument("--elements", required=True, metavar="FILE", help="TLE/3LE or OMM file")
    look.add_argument("--sat", required=True, metavar="ID", help="the satellite")
    look.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]", help="the observer")
    look.add_argument("--at", required=True, metavar="TIME", help="the instant")
    look.add_argument(
        "--frequency-hz", type=float, metavar="F", help="also give Doppler-shifted frequencies"
    )
    look.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    _add_max_element_age(look)
    look.set_defaults(handler=run_look)


def _plannable(
    elements: list[ElementSet],
    start: datetime,
    end: datetime,
    named: bool,
    policy: ElementAgePolicy,
) -> list[ElementSet]:
    """Drop (with one warning) or refuse element sets too old for planning this window.

    Named satellites that are too old fail the command; of the whole catalogue the too-old
    ones are skipped, and when that leaves nothing the command fails too.
    """
    kept = []
    aging = 0
    refused: list[str] = []
    for element_set in elements:
        worst = max(
            (policy.judge(element_set, start), policy.judge(element_set, end)),
            key=lambda j: j.age_days,
        )
        if worst.verdict is AgeVerdict.REFUSE:
            if named:
                raise InvalidArgument(worst.message)
            refused.append(worst.message)
            continue
        if worst.verdict is AgeVerdict.WARN:
            aging += 1
            if named:
                print(f"warning: {worst.message}", file=sys.stderr)
        kept.append(element_set)
    if refused and not kept:
        raise InvalidArgument(
            f"all {len(refused)} satellites have elements more than "
            f"{policy.refuse_after_days:g} days from the window, e.g. {refused[0]}"
        )
    if refused:
        print(
            f"warning: skipped {len(refused)} of {len(elements)} satellites with elements more "
            f"than {policy.refuse_after_days:g} days from the window, e.g. {refused[0]}",
            file=sys.stderr,
        )
    if aging and not named:
        print(
            f"warning: {aging} of {len(kept)} satellites have elements more than "
            f"{policy.warn_after_days:g} days from the window; expect kilometre-level position "
            "errors and pass times off by seconds for them (fresher elements are advised)",
            file=sys.stderr,
        )
    return kept


def _batch(elements: Sequence[ElementSet]) -> SatelliteBatch:
    return SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])


def compute_passes(
    elements: Sequence[ElementSet],
    sites: Sequence[Site],
    start: datetime,
    end: datetime,
    progress: bool = False,
) -> list[Pass]:
    found: list[Pass] = []
    for first in range(0, len(elements), PROGRESS_CHUNK):
        chunk = elements[first : first + PROGRESS_CHUNK]
        found.extend(find_passes(_batch(chunk), sites, start, end))
        if progress:
            done = min(first + PROGRESS_CHUNK, len(elements))
            print(f"\rpasses: {done}/{len(elements)} satellites", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return sorted(found, key=lambda p: (p.aos, p.site_id, p.catalog_id))


def _pass_row(found: Pass, names: dict[str, str], site_names: dict[str, str]) -> dict[str, Any]:
    return {
        "catalog_id": found.catalog_id,
        "name": names.get(found.catalog_id, ""),
        "site": found.site_id,
        "site_name": site_names.get(found.site_id, ""),
        "aos": format_utc(found.aos),
        "tca": format_utc(found.tca),
        "los": format_utc(found.los),
        "max_elevation_deg": round(found.max_elevation_deg, 4),
        "aos_azimuth_deg": round(found.aos_azimuth_deg, 4),
        "los_azimuth_deg": round(found.los_azimuth_deg, 4),
        "aos_clipped": found.aos_clipped,
        "los_clipped": found.los_clipped,
    }


def _csv_cell(value: Any) -> Any:
    """CSV spells booleans as JSON does (``true``/``false``), not Python's ``True``/``False``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def run_passes(args: argparse.Namespace) -> int:
    policy = inputs.age_policy(args.max_element_age_days)
    mask = inputs.load_mask(args.mask)
    if args.sites:
        sites = inputs.load_sites_csv(args.sites, args.min_elevation, mask)
    else:
        sites = [
            inputs.parse_site_arg(text, str(i), args.min_elevation, mask)
            for i, text in enumerate(args.site)
        ]
    now = RealClock().now()
    start, end = inputs.window(args.start, args.end, args.hours, now, MAX_WINDOW_DAYS)
    elements = inputs.select_satellites(inputs.load_elements(args.elements), args.sat)
    elements = _plannable(elements, start, end, named=bool(args.sat), policy=policy)
    names = {e.catalog_id: e.name for e in elements}
    site_names = {site.id: site.name for site in sites}
    found = compute_passes(elements, sites, start, end, progress=sys.stderr.isatty())
    out = sys.stdout
    if args.format == "json":
        json.dump({"passes": [_pass_row(p, names, site_names) for p in found]}, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=PASS_FIELDS, lineterminator="\n")
        writer.writeheader()
        for p in found:
            row = _pass_row(p, names, site_names)
            writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    else:
        out.write(_pass_table(found, names, site_names))
    return 0


def _table_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _pass_table(found: Sequence[Pass], names: dict[str, str], site_names: dict[str, str]) -> str:
    """Passes for people: names, AOS/TCA/LOS to the second (UTC), duration, angles."""
    header = (
        f"{'SAT':<8} {'NAME':<20} {'SITE':<18} {'AOS (UTC)':<20} {'TCA (UTC)':<19} "
        f"{'LOS (UTC)':<20} {'DURATION':>8} {'MAX EL':>6} {'AOS AZ':>6} {'LOS AZ':>6}\n"
    )
    buffer = io.StringIO()
    buffer.write(header)
    for p in found:
        clip_a = "<" if p.aos_clipped else " "
        clip_l = ">" if p.los_clipped else " "
        site = site_names.get(p.site_id) or p.site_id
        buffer.write(
            f"{p.catalog_id:<8} {names.get(p.catalog_id, '')[:20]:<20} {site[:18]:<18} "
            f"{clip_a}{_table_time(p.aos)} {_table_time(p.tca)} {_table_time(p.los)}{clip_l} "
            f"{_duration((p.los - p.aos).total_seconds()):>8} {p.max_elevation_deg:6.1f} "
            f"{p.aos_azimuth_deg:6.1f} {p.los_azimuth_deg:6.1f}\n"
        )
    buffer.write(
        f"{len(found)} passes ('<' began before the window, '>' ends after it; "
        "elevation and azimuths in degrees)\n"
    )
    return buffer.getvalue()


def run_look(args: argparse.Namespace) -> int:
    policy = inputs.age_policy(args.max_element_age_days)
    site = inputs.parse_site_arg(args.site, "0", 0.0, inputs.load_mask(None))
    at = inputs.parse_time(args.at, RealClock().now(), "--at")
    frequency = args.frequency_hz
    if frequency is not None and not frequency > 0:
        raise InvalidArgument(f"--frequency-hz must be a positive frequency, got {frequency}")
    (element_set,) = inputs.select_satellites(inputs.load_elements([args.elements]), [args.sat])
    _plannable([element_set], at, at, named=True, policy=policy)
    jd, fr = utc_jd_fr([at])
    angles = look_angles(_batch([element_set]), [site], jd, fr)
    code = int(angles.error_code[0, 0])
    if code:
        raise InvalidArgument(
            f"SGP4 cannot place {element_set.catalog_id} at {format_utc(at)}: "
            f"{error_reason(code)} (sgp4 error {code})"
        )
    result: dict[str, Any] = {
        "catalog_id": element_set.catalog_id,
        "azimuth_deg": float(angles.azimuth_deg[0, 0, 0]),
        "elevation_deg": float(angles.elevation_deg[0, 0, 0]),
        "range_km": float(angles.range_km[0, 0, 0]),
        "range_rate_km_s": float(angles.range_rate_km_s[0, 0, 0]),
    }
    if frequency is not None:
        result["downlink_hz"] = float(doppler_downlink_hz(frequency, result["range_rate_km_s"]))
        result["uplink_hz"] = float(doppler_uplink_hz(frequency, result["range_rate_km_s"]))
    if args.format == "json":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        name = f" ({element_set.name})" if element_set.name else ""
        print(f"{element_set.catalog_id}{name} at {format_utc(at)} from {args.site}")
        for key, value in result.items():
            if key == "catalog_id":
                continue
            line = f"  {key:<16} {value:.6f}" if "hz" not in key else f"  {key:<16} {value:.1f}"
            if key == "elevation_deg" and value < 0:
                line += "  (below the horizon: not in view)"
            print(line)
    return 0
