"""``groundplane eclipses``: when satellites pass through the Earth's penumbra and umbra."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from groundplane.kernel.clock import RealClock
from groundplane.kernel.validation import finite_float
from groundplane.orbit.eclipses import EclipseTable, find_eclipse_table
from groundplane.orbit.elements import ElementSet
from groundplane.tracking.pass_columns import iso_utc_ms, round_like_python

from . import inputs
from .tracking import MAX_WINDOW_DAYS, _add_max_element_age, _batch, _plannable, _write

ECLIPSE_FIELDS = (
    "catalog_id",
    "name",
    "penumbra_entry",
    "umbra_entry",
    "umbra_exit",
    "penumbra_exit",
    "duration_s",
    "entry_clipped",
    "exit_clipped",
)
#: Satellites searched per call (bounds memory; the progress line moves once per call).
SATELLITES_PER_CALL = 512
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register(commands: Any) -> None:
    eclipses = commands.add_parser(
        "eclipses",
        help="shadow passages (penumbra and umbra) of satellites",
        description="List when satellites enter and leave the Earth's penumbra and umbra "
        "(conical shadow of a spherical Earth, analytic Sun). An eclipse in progress at the "
        f"window's start or end is cut there and flagged clipped. Times: {inputs.TIME_HELP}.",
    )
    eclipses.add_argument(
        "--elements",
        action="append",
        required=True,
        metavar="FILE",
        help="TLE/3LE or OMM (JSON, CSV, XML) file; repeatable",
    )
    eclipses.add_argument(
        "--sat",
        action="append",
        metavar="ID",
        help="a satellite; repeatable (default: every satellite in the files)",
    )
    eclipses.add_argument("--start", required=True, metavar="TIME", help="start of the window")
    span = eclipses.add_mutually_exclusive_group(required=True)
    span.add_argument("--end", metavar="TIME", help="end of the window")
    span.add_argument(
        "--hours",
        type=finite_float,
        metavar="H",
        help=f"length of the window (at most {MAX_WINDOW_DAYS * 24:g})",
    )
    eclipses.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format"
    )
    _add_max_element_age(eclipses)
    eclipses.set_defaults(handler=run_eclipses)


def compute_eclipses(
    elements: Sequence[ElementSet], start: datetime, end: datetime, progress: bool = False
) -> list[EclipseTable]:
    """Eclipse tables of ``elements`` in ``[start, end]``, one per call of
    :data:`SATELLITES_PER_CALL` satellites; SGP4 errors are warned about on stderr."""
    tables: list[EclipseTable] = []
    for first in range(0, len(elements), SATELLITES_PER_CALL):
        chunk = elements[first : first + SATELLITES_PER_CALL]
        table = find_eclipse_table(_batch(chunk), start, end)
        for sat_id, (code, reason) in table.errors.items():
            print(
                f"warning: {sat_id}: {reason} (sgp4 error {code}); its eclipses stop there",
                file=sys.stderr,
            )
        tables.append(table)
        if progress:
            done = min(first + SATELLITES_PER_CALL, len(elements))
            print(f"\reclipses: {done}/{len(elements)} satellites", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return tables


def _microseconds(start_us: int, seconds: np.ndarray) -> np.ndarray:
    return start_us + np.rint(np.where(np.isfinite(seconds), seconds, 0.0) * 1e6).astype(np.int64)


def eclipse_fields(
    tables: Sequence[EclipseTable], start: datetime, names: Mapping[str, str]
) -> dict[str, list[Any]]:
    """The output's columns (:data:`ECLIPSE_FIELDS`) sorted by penumbra entry then catalog id:
    times as ISO-8601 UTC with ``Z`` and milliseconds (``None`` for the umbra of a
    penumbra-only passage), the duration in seconds to 3 decimals, booleans."""
    delta = start.astimezone(UTC) - _UNIX_EPOCH
    start_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    ids: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("p_in", "u_in", "u_out", "p_out")}
    has_umbra: list[np.ndarray] = []
    c_in: list[np.ndarray] = []
    c_out: list[np.ndarray] = []
    for table in tables:
        ids.append(np.asarray(table.satellite_ids, dtype=object)[table.sat_index])
        for key, seconds in (
            ("p_in", table.penumbra_entry_s),
            ("u_in", table.umbra_entry_s),
            ("u_out", table.umbra_exit_s),
            ("p_out", table.penumbra_exit_s),
        ):
            cols[key].append(_microseconds(start_us, seconds))
        has_umbra.append(np.isfinite(table.umbra_entry_s))
        c_in.append(table.entry_clipped)
        c_out.append(table.exit_clipped)
    if not ids:
        return {key: [] for key in ECLIPSE_FIELDS}
    sat = np.concatenate(ids)
    us = {key: np.concatenate(parts) for key, parts in cols.items()}
    umbra = np.concatenate(has_umbra)
    order = np.lexsort((sat.astype(str), us["p_in"]))
    sat, umbra = sat[order], umbra[order]
    us = {key: values[order] for key, values in us.items()}
    catalog_ids: list[str] = sat.tolist()

    def umbra_times(values: np.ndarray) -> list[str | None]:
        text = iso_utc_ms(values)
        return [t if ok else None for t, ok in zip(text, umbra.tolist(), strict=True)]

    return {
        "catalog_id": catalog_ids,
        "name": [names.get(c, "") for c in catalog_ids],
        "penumbra_entry": iso_utc_ms(us["p_in"]),
        "umbra_entry": umbra_times(us["u_in"]),
        "umbra_exit": umbra_times(us["u_out"]),
        "penumbra_exit": iso_utc_ms(us["p_out"]),
        "duration_s": round_like_python((us["p_out"] - us["p_in"]) / 1e6, 3),
        "entry_clipped": np.concatenate(c_in)[order].tolist(),
        "exit_clipped": np.concatenate(c_out)[order].tolist(),
    }


def eclipses_json(fields: Mapping[str, list[Any]]) -> bytes:
    """``{"eclipses": [...]}`` indented by 2, plus a newline."""
    rows = [
        dict(zip(ECLIPSE_FIELDS, row, strict=True)) for row in zip(*fields.values(), strict=True)
    ]
    return orjson.dumps({"eclipses": rows}, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def eclipses_csv(fields: Mapping[str, list[Any]]) -> str:
    """A header of :data:`ECLIPSE_FIELDS` and one row per eclipse; booleans ``true``/``false``,
    an absent umbra an empty cell."""
    spelled = {
        key: np.where(values, "true", "false").tolist() if key.endswith("_clipped") else values
        for key, values in fields.items()
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(spelled)
    writer.writerows(zip(*spelled.values(), strict=True))
    return buffer.getvalue()


def eclipse_table_text(fields: Mapping[str, list[Any]]) -> str:
    """Eclipses for people: name, the four edges to the second (UTC), duration."""
    lines = [
        f"{'SAT':<8} {'NAME':<20} {'PENUMBRA IN (UTC)':<20} {'UMBRA IN':<19} {'UMBRA OUT':<19} "
        f"{'PENUMBRA OUT (UTC)':<20} {'DURATION':>8}\n"
    ]

    def seconds(values: list[str | None]) -> list[str]:
        # "2026-09-05T00:12:34.567Z" → "2026-09-05 00:12:34" (cut to the second, as strftime).
        return [f"{v[:10]} {v[11:19]}" if v is not None else "-" for v in values]

    for sat, name, p_in, u_in, u_out, p_out, dur, c_in, c_out in zip(
        fields["catalog_id"],
        fields["name"],
        seconds(fields["penumbra_entry"]),
        seconds(fields["umbra_entry"]),
        seconds(fields["umbra_exit"]),
        seconds(fields["penumbra_exit"]),
        fields["duration_s"],
        fields["entry_clipped"],
        fields["exit_clipped"],
        strict=True,
    ):
        minutes, rest = divmod(round(dur), 60)
        lines.append(
            f"{sat:<8} {name[:20]:<20} {'<' if c_in else ' '}{p_in:<19} {u_in:<19} {u_out:<19} "
            f"{p_out:<19}{'>' if c_out else ' '} {f'{minutes}m{rest:02d}s':>8}\n"
        )
    lines.append(
        f"{len(fields['catalog_id'])} eclipses ('<' began before the window, '>' ends after it; "
        "'-': penumbra only)\n"
    )
    return "".join(lines)


def run_eclipses(args: argparse.Namespace) -> int:
    policy = inputs.age_policy(args.max_element_age_days)
    now = RealClock().now()
    start, end = inputs.window(args.start, args.end, args.hours, now, MAX_WINDOW_DAYS)
    elements = inputs.select_satellites(inputs.load_elements(args.elements), args.sat)
    elements = _plannable(elements, start, end, named=bool(args.sat), policy=policy)
    names = {e.catalog_id: e.name for e in elements}
    tables = compute_eclipses(elements, start, end, progress=sys.stderr.isatty())
    fields = eclipse_fields(tables, start, names)
    if args.format == "json":
        data: bytes | str = eclipses_json(fields)
    elif args.format == "csv":
        data = eclipses_csv(fields)
    else:
        data = eclipse_table_text(fields)
    _write(sys.stdout, data)
    sys.stdout.flush()
    return 0
