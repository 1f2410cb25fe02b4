"""``groundplane passes`` and ``groundplane look``: tracking questions answered from files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import numpy as np
import orjson

from groundplane.kernel.clock import RealClock, format_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_float
from groundplane.orbit.eclipses import (
    VISUAL_SUN_ELEVATION_DEG,
    sun_elevation_deg,
    sunlit_fraction_at,
)
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import (
    FloatArray,
    SatelliteBatch,
    SiteFrames,
    doppler_downlink_hz,
    doppler_uplink_hz,
    error_reason,
    look_angles,
    propagate,
    utc_jd_fr,
)
from groundplane.orbit.passes import Pass, find_pass_table, find_passes
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction
from groundplane.orbit.sites import Site
from groundplane.tracking.catalog import MAX_ELEMENT_AGE_FLAG, AgeVerdict, ElementAgePolicy
from groundplane.tracking.core import TrackingSettings
from groundplane.tracking.pass_columns import (
    MICROSECONDS_PER_DAY,
    UNIX_EPOCH_JD,
    BoolArray,
    PassColumns,
    iso_utc_ms,
    iso_utc_s,
    round_like_python,
)

from . import inputs
from .progress import progress_bar

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
    "sunlit_at_tca",
    "visual",
)
PROGRESS_CHUNK = 64
#: Satellite × site pairs searched in one call: larger calls vectorise better (one call for the
#: whole 636 × 12 catalog is ~2× faster than calls of 64 satellites), this bounds the memory.
PAIRS_PER_CALL = 20_000
MAX_WINDOW_DAYS = TrackingSettings().max_pass_window_days
"""The longest window one call may ask for: the tracking service's own limit."""
DEFAULT_MAX_ELEMENT_AGE_DAYS = ElementAgePolicy().refuse_after_days


def _add_max_element_age(parser: Any) -> None:
    parser.add_argument(
        MAX_ELEMENT_AGE_FLAG,
        type=finite_float,
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
        type=finite_float,
        metavar="H",
        help=f"length of the window (at most {MAX_WINDOW_DAYS * 24:g})",
    )
    passes.add_argument(
        "--min-elevation",
        type=finite_float,
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
    passes.add_argument(
        "--timings",
        action="store_true",
        help="print the wall time of each stage (start-up, inputs, pass search with its "
        "refinement, output) to stderr",
    )
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
        "--frequency-hz",
        type=finite_float,
        metavar="F",
        help="also give Doppler-shifted frequencies",
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
    with progress_bar("passes: satellites", len(elements), enabled=progress) as advance:
        for first in range(0, len(elements), PROGRESS_CHUNK):
            chunk = elements[first : first + PROGRESS_CHUNK]
            found.extend(find_passes(_batch(chunk), sites, start, end))
            advance(min(first + PROGRESS_CHUNK, len(elements)))
    return sorted(found, key=lambda p: (p.aos, p.site_id, p.catalog_id))


def compute_pass_columns(
    elements: Sequence[ElementSet],
    sites: Sequence[Site],
    start: datetime,
    end: datetime,
    progress: bool = False,
) -> PassColumns:
    """The passes of :func:`compute_passes` (same rows, same order: by AOS, site id, catalog
    id) as columns, with no per-pass Python objects."""
    per_call = max(PROGRESS_CHUNK, PAIRS_PER_CALL // max(len(sites), 1))
    parts: list[PassColumns] = []
    with progress_bar("passes: satellites", len(elements), enabled=progress) as advance:
        for first in range(0, len(elements), per_call):
            chunk = elements[first : first + per_call]
            parts.append(PassColumns.from_table(find_pass_table(_batch(chunk), sites, start, end)))
            advance(min(first + per_call, len(elements)))
    return PassColumns.concatenate(parts).by_aos()


@dataclass(frozen=True)
class PassLighting:
    """Per pass row: the satellite's sunlit fraction at TCA and whether the pass is visual (the
    satellite at least partly sunlit while the site's Sun is below −6°, at TCA)."""

    sunlit_at_tca: FloatArray
    visual: BoolArray


def pass_lighting(
    found: PassColumns, elements: Sequence[ElementSet], sites: Sequence[Site]
) -> PassLighting:
    """:class:`PassLighting` of every row of ``found`` (vectorised; one SGP4 call per
    satellite for its TCAs)."""
    sat_ids, sat_inverse = np.unique(found.catalog_id.astype(str), return_inverse=True)
    site_ids, site_inverse = np.unique(found.site_id.astype(str), return_inverse=True)
    by_id = {e.catalog_id: e for e in elements}
    batch = _batch([by_id[c] for c in sat_ids.tolist()])
    site_by_id = {site.id: site for site in sites}
    frames = SiteFrames([site_by_id[k] for k in site_ids.tolist()])
    days, micro = np.divmod(found.tca_us, MICROSECONDS_PER_DAY)
    jd = UNIX_EPOCH_JD + days.astype(np.float64)
    fr = micro.astype(np.float64) / MICROSECONDS_PER_DAY
    sunlit = sunlit_fraction_at(batch, sat_inverse.astype(np.intp), jd, fr)
    sun_el = sun_elevation_deg(frames, site_inverse.astype(np.intp), jd, fr)
    return PassLighting(sunlit, (sunlit > 0.0) & (sun_el < VISUAL_SUN_ELEVATION_DEG))


def pass_fields(
    found: PassColumns,
    names: Mapping[str, str],
    site_names: Mapping[str, str],
    lighting: PassLighting,
) -> dict[str, list[Any]]:
    """The output's columns (:data:`PASS_FIELDS`), each a list of plain values: ids and names,
    times as ISO-8601 UTC strings, angles and the sunlit fraction rounded to 4 decimals,
    booleans."""
    catalog_ids: list[str] = found.catalog_id.tolist()
    site_ids: list[str] = found.site_id.tolist()
    return {
        "catalog_id": catalog_ids,
        "name": [names.get(c, "") for c in catalog_ids],
        "site": site_ids,
        "site_name": [site_names.get(k, "") for k in site_ids],
        "aos": iso_utc_ms(found.aos_us),
        "tca": iso_utc_ms(found.tca_us),
        "los": iso_utc_ms(found.los_us),
        "max_elevation_deg": round_like_python(found.max_elevation_deg, 4),
        "aos_azimuth_deg": round_like_python(found.aos_azimuth_deg, 4),
        "los_azimuth_deg": round_like_python(found.los_azimuth_deg, 4),
        "aos_clipped": found.aos_clipped.tolist(),
        "los_clipped": found.los_clipped.tolist(),
        "sunlit_at_tca": round_like_python(lighting.sunlit_at_tca, 4),
        "visual": lighting.visual.tolist(),
    }


def passes_json(fields: Mapping[str, list[Any]]) -> bytes:
    """``{"passes": [...]}`` indented by 2 as ``json.dump(…, indent=2)`` writes it, plus a
    newline; serialised by orjson in one call."""
    if tuple(fields) != PASS_FIELDS:
        raise ValueError(f"expected the columns {PASS_FIELDS}, got {tuple(fields)}")
    # A dict display with constant keys builds each row ~1.6× faster than dict(zip(keys, row)).
    rows = [
        {
            "catalog_id": catalog_id,
            "name": name,
            "site": site,
            "site_name": site_name,
            "aos": aos,
            "tca": tca,
            "los": los,
            "max_elevation_deg": max_el,
            "aos_azimuth_deg": aos_az,
            "los_azimuth_deg": los_az,
            "aos_clipped": aos_clip,
            "los_clipped": los_clip,
            "sunlit_at_tca": sunlit,
            "visual": visual,
        }
        for (
            catalog_id,
            name,
            site,
            site_name,
            aos,
            tca,
            los,
            max_el,
            aos_az,
            los_az,
            aos_clip,
            los_clip,
            sunlit,
            visual,
        ) in zip(*fields.values(), strict=True)
    ]
    return orjson.dumps({"passes": rows}, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def passes_csv(fields: Mapping[str, list[Any]]) -> str:
    """A header of :data:`PASS_FIELDS` and one row per pass; booleans ``true``/``false``."""
    spelled = {
        key: np.where(values, "true", "false").tolist()
        if key.endswith("_clipped") or key == "visual"
        else values
        for key, values in fields.items()
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(spelled)
    writer.writerows(zip(*spelled.values(), strict=True))
    return buffer.getvalue()


def _write(out: IO[str], data: bytes | str) -> None:
    """``data`` to ``out``: bytes straight to its binary buffer when it has one."""
    if isinstance(data, str):
        out.write(data)
        return
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode("utf-8"))
        return
    out.flush()
    buffer.write(data)


def _seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``; 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started_s


class _Stages:
    """Wall time of each stage of a command, printed to stderr with ``--timings``::

        timings (s): start-up 0.180, inputs 0.035, search 0.620, output 0.080 (34240 passes)

    ``start-up`` runs from the process start (Linux /proc, 10 ms resolution; absent elsewhere)
    to the command's handler: interpreter, imports, argument parsing.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stages: list[tuple[str, float]] = []
        if enabled:
            before = _seconds_since_process_start()
            if before is not None:
                self.stages.append(("start-up", before))
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.stages.append((name, now - self._last))
        self._last = now

    def report(self, note: str) -> None:
        if self.enabled:
            text = ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.stages)
            print(f"timings (s): {text} ({note})", file=sys.stderr, flush=True)


def run_passes(args: argparse.Namespace) -> int:
    stages = _Stages(args.timings)
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
    stages.done("inputs")
    found = compute_pass_columns(elements, sites, start, end, progress=sys.stderr.isatty())
    stages.done("search")
    out = sys.stdout
    lighting = pass_lighting(found, elements, sites)
    stages.done("lighting")
    if args.format == "table":
        _write(out, pass_table(found, names, site_names, lighting))
    else:
        fields = pass_fields(found, names, site_names, lighting)
        _write(out, passes_json(fields) if args.format == "json" else passes_csv(fields))
    out.flush()
    stages.done("output")
    stages.report(f"{len(found)} passes, {args.format}; search includes refinement")
    return 0


def pass_table(
    found: PassColumns,
    names: Mapping[str, str],
    site_names: Mapping[str, str],
    lighting: PassLighting,
) -> str:
    """Passes for people: names, AOS/TCA/LOS to the second (UTC), duration, angles, the sunlit
    fraction at TCA and ``*`` for a visual pass."""
    header = (
        f"{'SAT':<8} {'NAME':<20} {'SITE':<18} {'AOS (UTC)':<20} {'TCA (UTC)':<19} "
        f"{'LOS (UTC)':<20} {'DURATION':>8} {'MAX EL':>6} {'AOS AZ':>6} {'LOS AZ':>6} "
        f"{'SUNLIT':>6} {'VISUAL':<6}\n"
    )
    duration_s = np.rint((found.los_us - found.aos_us) / 1e6).astype(np.int64)
    minutes, rest = np.divmod(duration_s, 60)
    lines = [header]
    lines.extend(
        f"{sat:<8} {names.get(sat, '')[:20]:<20} {(site_names.get(site) or site)[:18]:<18} "
        f"{'<' if aos_clip else ' '}{aos} {tca} {los}{'>' if los_clip else ' '} "
        f"{f'{m}m{r:02d}s':>8} {max_el:6.1f} {aos_az:6.1f} {los_az:6.1f} "
        f"{sunlit:6.2f} {'*' if visual else ''}\n"
        for (
            sat,
            site,
            aos,
            tca,
            los,
            m,
            r,
            max_el,
            aos_az,
            los_az,
            aos_clip,
            los_clip,
            sunlit,
            visual,
        ) in zip(
            found.catalog_id.tolist(),
            found.site_id.tolist(),
            iso_utc_s(found.aos_us, " "),
            iso_utc_s(found.tca_us, " "),
            iso_utc_s(found.los_us, " "),
            minutes.tolist(),
            rest.tolist(),
            found.max_elevation_deg.tolist(),
            found.aos_azimuth_deg.tolist(),
            found.los_azimuth_deg.tolist(),
            found.aos_clipped.tolist(),
            found.los_clipped.tolist(),
            lighting.sunlit_at_tca.tolist(),
            lighting.visual.tolist(),
            strict=True,
        )
    )
    lines.append(
        f"{len(found)} passes ('<' began before the window, '>' ends after it; "
        "elevation and azimuths in degrees; SUNLIT: sunlit fraction at TCA; "
        "VISUAL *: sunlit while the site's Sun is below -6°)\n"
    )
    return "".join(lines)


def _shadow_word(fraction: float) -> str:
    if fraction >= 1.0:
        return "in full Sun"
    return "in the umbra: eclipsed" if fraction <= 0.0 else "in the penumbra"


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
    batch = _batch([element_set])
    angles = look_angles(batch, [site], jd, fr)
    code = int(angles.error_code[0, 0])
    if code:
        raise InvalidArgument(
            f"SGP4 cannot place {element_set.catalog_id} at {format_utc(at)}: "
            f"{error_reason(code)} (sgp4 error {code})"
        )
    position_km = propagate(batch, jd, fr).r_teme_km[0, 0]
    result: dict[str, Any] = {
        "catalog_id": element_set.catalog_id,
        "azimuth_deg": float(angles.azimuth_deg[0, 0, 0]),
        "elevation_deg": float(angles.elevation_deg[0, 0, 0]),
        "range_km": float(angles.range_km[0, 0, 0]),
        "range_rate_km_s": float(angles.range_rate_km_s[0, 0, 0]),
        "sunlit_fraction": float(sunlit_fraction(position_km, sun_position_teme_km(jd, fr)[0])),
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
            if key == "sunlit_fraction":
                line += f"  ({_shadow_word(value)})"
            print(line)
    return 0
