"""Reading the CLI's inputs: element files, sites, masks, times, ports and the age limit."""

from __future__ import annotations

import argparse
import csv
import io
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from groundplane.kernel.clock import Clock, ClockSpec, RealClock, SimulatedClock, parse_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.elements import ElementSet, canonical_catalog_id, parse_elements
from groundplane.orbit.sites import HorizonMask, Site, parse_sites_csv
from groundplane.tracking.catalog import MAX_ELEMENT_AGE_FLAG, ElementAgePolicy

MAX_PORT = 65535
TIME_HELP = "ISO-8601 UTC (2026-08-15T12:00:00Z), now, or now±N[s|m|h|d] such as now+2h"
_SECONDS_PER_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RELATIVE = re.compile(r"now\s*(?:(?P<sign>[+-])\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]))?")


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"no such file: {path}") from None
    except UnicodeDecodeError as bad:
        raise InvalidArgument(
            f"{path}: expected UTF-8 text ({bad.reason} at byte {bad.start})"
        ) from None


def load_elements(paths: Sequence[str]) -> list[ElementSet]:
    """Element sets of every file; the newest epoch wins when a satellite appears twice."""
    newest: dict[str, ElementSet] = {}
    for path in paths:
        for elements in parse_elements(read_text(path), source=path):
            held = newest.get(elements.catalog_id)
            if held is None or elements.epoch > held.epoch:
                newest[elements.catalog_id] = elements
    return list(newest.values())


def select_satellites(elements: list[ElementSet], wanted: Sequence[str] | None) -> list[ElementSet]:
    """The satellites named (in the order first named, each once), or all when none are."""
    if not wanted:
        return elements
    by_id = {e.catalog_id: e for e in elements}
    chosen: dict[str, ElementSet] = {}
    for raw in wanted:
        catalog_id = canonical_catalog_id(raw)
        if catalog_id not in by_id:
            raise InvalidArgument(
                f"--sat {raw}: no such satellite in the element files "
                f"({len(by_id)} satellites loaded)"
            )
        chosen.setdefault(catalog_id, by_id[catalog_id])
    return list(chosen.values())


def parse_site_arg(text: str, site_id: str, min_elevation_deg: float, mask: HorizonMask) -> Site:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidArgument(f"--site expects LAT,LON[,ALT_M] in degrees and metres, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidArgument(f"--site expects numbers LAT,LON[,ALT_M], got {text!r}") from None
    return Site(
        id=site_id,
        lat_deg=values[0],
        lon_deg=values[1],
        alt_m=values[2] if len(values) == 3 else 0.0,
        min_elevation_deg=min_elevation_deg,
        mask=mask,
    )


def load_sites_csv(path: str, min_elevation_deg: float, mask: HorizonMask) -> list[Site]:
    return parse_sites_csv(read_text(path), min_elevation_deg, mask, source=path)


def load_mask(path: str | None) -> HorizonMask:
    if path is None:
        return HorizonMask()
    points: list[tuple[float, float]] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(read_text(path))), start=1):
        if not row or row[0].strip().startswith("#"):
            continue
        try:
            points.append((float(row[0]), float(row[1])))
        except (ValueError, IndexError):
            if line_no == 1:
                continue  # a header such as azimuth_deg,elevation_deg
            raise InvalidArgument(
                f"{path} line {line_no}: expected azimuth_deg,elevation_deg numbers, got {row}"
            ) from None
    return HorizonMask.from_points(points)


def window(
    start: str, end: str | None, hours: float | None, now: datetime, max_days: float
) -> tuple[datetime, datetime]:
    """The UTC window ``--start`` … ``--end`` (or ``--hours`` long), at most ``max_days``."""
    begin = parse_time(start, now, "--start")
    if end is not None:
        finish = parse_time(end, now, "--end")
    elif hours is None:
        raise InvalidArgument("give --end TIME or --hours H")
    elif not hours > 0:
        raise InvalidArgument(f"--hours must be positive, got {hours}")
    else:
        finish = begin + timedelta(hours=hours)
    if not begin < finish:
        raise InvalidArgument(f"--start must be before the end, got {start} … {finish.isoformat()}")
    span_days = (finish - begin).total_seconds() / 86400.0
    if span_days > max_days:
        raise InvalidArgument(
            f"expected a window of at most {max_days:g} days ({max_days * 24:g} hours, the "
            f"tracking service's limit), got {span_days:g} days: split it into several calls"
        )
    return begin, finish


def parse_time(text: str, now: datetime, flag: str) -> datetime:
    """An instant given as ISO-8601 UTC, ``now``, or ``now`` plus or minus N s, m, h or d.

    ``now`` is an argument so the result is a pure function of its inputs; every CLI flag that
    takes a time reads it through here.
    """
    relative = _RELATIVE.fullmatch(text.strip().lower())
    if relative is not None:
        if relative["sign"] is None:
            return now
        offset = timedelta(seconds=float(relative["amount"]) * _SECONDS_PER_UNIT[relative["unit"]])
        return now + offset if relative["sign"] == "+" else now - offset
    try:
        return parse_utc(text)
    except ValueError:
        raise InvalidArgument(
            f"{flag}: expected an ISO-8601 UTC time such as 2026-08-15T12:00:00Z, or now, "
            f"now+2h, now-30m (units s, m, h, d), got {text!r}"
        ) from None


def make_clock(start: str | None, speed: float | None, spec: str | None = None) -> Clock:
    """Real time, simulated time from ``start`` (default: now) at ``speed``, or the shared time
    line of a ``--clock`` spec (:class:`~groundplane.kernel.clock.ClockSpec`, as
    :meth:`SimulatedClock.spec` and ``groundplane up`` print it)."""
    if spec is not None:
        if start is not None or speed is not None:
            raise InvalidArgument("--clock gives start and speed itself; drop --start/--speed")
        try:
            return ClockSpec.parse(spec).clock()
        except ValueError as bad:
            raise InvalidArgument(f"--clock: {bad}") from None
    if start is None and (speed is None or speed == 1.0):
        return RealClock()
    if speed is not None and not speed > 0:
        raise InvalidArgument(f"--speed must be a positive factor, got {speed}")
    now = RealClock().now()
    begin = parse_time(start, now, "--start") if start is not None else now
    return SimulatedClock(begin, speed=speed or 1.0)


def age_policy(max_days: float) -> ElementAgePolicy:
    """The element age policy for ``--max-element-age-days``: refuse beyond it.

    The warning threshold stays at the default unless the limit is below it.
    """
    if not max_days >= 0:
        raise InvalidArgument(
            f"{MAX_ELEMENT_AGE_FLAG} must be a non-negative number of days, got {max_days}"
        )
    warn = ElementAgePolicy().warn_after_days
    return ElementAgePolicy(warn_after_days=min(warn, max_days), refuse_after_days=max_days)


def port(text: str) -> int:
    """argparse type of a TCP port to listen on: 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port 0..{MAX_PORT} (0 picks a free port), got {text!r}"
        ) from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port 0..{MAX_PORT} (0 picks a free port), got {value}"
        )
    return value


def address(text: str) -> str:
    """argparse type of a HOST:PORT to connect to (port 1..65535)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port 1..{MAX_PORT} (e.g. 127.0.0.1:50051), got {text!r}"
        )
    return text
