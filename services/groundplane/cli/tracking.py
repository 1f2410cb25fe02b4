"""``groundplane passes`` and ``groundplane look``: tracking questions answered from files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from groundplane.kernel.clock import format_utc, parse_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.tracking.catalog import AgeVerdict, ElementAgePolicy
from groundplane.tracking.elements import ElementSet
from groundplane.tracking.geometry import (
    SatelliteBatch,
    doppler_downlink_hz,
    doppler_uplink_hz,
    error_reason,
    look_angles,
    utc_jd_fr,
)
from groundplane.tracking.passes import Pass, find_passes
from groundplane.tracking.sites import Site

from . import inputs

PASS_FIELDS = (
    "catalog_id",
    "name",
    "site",
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


def register(commands: Any) -> None:
    passes = commands.add_parser(
        "passes",
        help="predict passes of satellites over sites",
        description="Predict passes (AOS, TCA, LOS) of satellites over ground sites.",
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
    passes.add_argument("--start", required=True, metavar="ISO8601")
    span = passes.add_mutually_exclusive_group(required=True)
    span.add_argument("--end", metavar="ISO8601")
    span.add_argument("--hours", type=float, metavar="H")
    passes.add_argument("--min-elevation", type=float, default=0.0, metavar="DEG")
    passes.add_argument("--mask", metavar="FILE", help="CSV azimuth_deg,elevation_deg")
    passes.add_argument("--sat", action="append", metavar="ID", help="only this satellite")
    passes.add_argument("--format", choices=("table", "json", "csv"), default="table")
    passes.set_defaults(handler=run_passes)

    look = commands.add_parser(
        "look",
        help="look angles of one satellite from one site",
        description="Azimuth, elevation, range, range rate and Doppler at one instant.",
    )
    look.add_argument("--elements", required=True, metavar="FILE")
    look.add_argument("--sat", required=True, metavar="ID")
    look.add_argument("--site", required=True, metavar="LAT,LON[,ALT_M]")
    look.add_argument("--at", required=True, metavar="ISO8601")
    look.add_argument("--frequency-hz", type=float, metavar="F")
    look.add_argument("--format", choices=("table", "json"), default="table")
    look.set_defaults(handler=run_look)


def _plannable(
    elements: list[ElementSet], start: datetime, end: datetime, named: bool
) -> list[ElementSet]:
    """Drop (with a warning) or refuse element sets too old for planning this window."""
    policy = ElementAgePolicy()
    kept = []
    aging = 0
    for element_set in elements:
        worst = max(
            (policy.judge(element_set, start), policy.judge(element_set, end)),
            key=lambda j: j.age_days,
        )
        if worst.verdict is AgeVerdict.REFUSE:
            if named:
                raise InvalidArgument(worst.message)
            print(f"warning: skipped: {worst.message}", file=sys.stderr)
            continue
        if worst.verdict is AgeVerdict.WARN:
            aging += 1
            if named:
                print(f"warning: {worst.message}", file=sys.stderr)
        kept.append(element_set)
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


def _pass_row(found: Pass, names: dict[str, str]) -> dict[str, Any]:
    return {
        "catalog_id": found.catalog_id,
        "name": names.get(found.catalog_id, ""),
        "site": found.site_id,
        "aos": format_utc(found.aos),
        "tca": format_utc(found.tca),
        "los": format_utc(found.los),
        "max_elevation_deg": round(found.max_elevation_deg, 4),
        "aos_azimuth_deg": round(found.aos_azimuth_deg, 4),
        "los_azimuth_deg": round(found.los_azimuth_deg, 4),
        "aos_clipped": found.aos_clipped,
        "los_clipped": found.los_clipped,
    }


def run_passes(args: argparse.Namespace) -> int:
    mask = inputs.load_mask(args.mask)
    if args.sites:
        sites = inputs.load_sites_csv(args.sites, args.min_elevation, mask)
    else:
        sites = [
            inputs.parse_site_arg(text, str(i), args.min_elevation, mask)
            for i, text in enumerate(args.site)
        ]
    start, end = inputs.window(args.start, args.end, args.hours)
    if not start < end:
        raise InvalidArgument(
            f"--start must be before the end, got {args.start} … {end.isoformat()}"
        )
    elements = inputs.select_satellites(inputs.load_elements(args.elements), args.sat)
    elements = _plannable(elements, start, end, named=bool(args.sat))
    names = {e.catalog_id: e.name for e in elements}
    found = compute_passes(elements, sites, start, end, progress=sys.stderr.isatty())
    rows = [_pass_row(p, names) for p in found]
    out = sys.stdout
    if args.format == "json":
        json.dump({"passes": rows}, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=PASS_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        out.write(_pass_table(rows))
    return 0


def _pass_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'SAT':<10} {'NAME':<24} {'SITE':<10} {'AOS (UTC)':<24} {'LOS (UTC)':<24} "
        f"{'MAX EL':>7} {'AOS AZ':>7} {'LOS AZ':>7}\n"
    )
    buffer = io.StringIO()
    buffer.write(header)
    for row in rows:
        clip_a = "<" if row["aos_clipped"] else " "
        clip_l = ">" if row["los_clipped"] else " "
        buffer.write(
            f"{row['catalog_id']:<10} {row['name'][:24]:<24} {row['site'][:10]:<10} "
            f"{clip_a}{row['aos']:<23} {row['los']:<23}{clip_l} "
            f"{row['max_elevation_deg']:7.2f} {row['aos_azimuth_deg']:7.2f} "
            f"{row['los_azimuth_deg']:7.2f}\n"
        )
    buffer.write(f"{len(rows)} passes ('<' began before the window, '>' ends after it)\n")
    return buffer.getvalue()


def run_look(args: argparse.Namespace) -> int:
    site = inputs.parse_site_arg(args.site, "0", 0.0, inputs.load_mask(None))
    try:
        at = parse_utc(args.at)
    except ValueError as bad:
        raise InvalidArgument(f"--at: {bad}") from None
    frequency = args.frequency_hz
    if frequency is not None and not frequency > 0:
        raise InvalidArgument(f"--frequency-hz must be a positive frequency, got {frequency}")
    (element_set,) = inputs.select_satellites(inputs.load_elements([args.elements]), [args.sat])
    _plannable([element_set], at, at, named=True)
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
            if key != "catalog_id":
                print(f"  {key:<16} {value:.6f}" if "hz" not in key else f"  {key:<16} {value:.1f}")
    return 0
