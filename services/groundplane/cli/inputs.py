"""Reading the CLI's inputs: element files, sites, masks and times."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from groundplane.kernel.clock import Clock, RealClock, SimulatedClock, parse_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.tracking.elements import ElementSet, canonical_catalog_id, parse_elements
from groundplane.tracking.sites import HorizonMask, Site, parse_sites_csv


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
    if not wanted:
        return elements
    by_id = {e.catalog_id: e for e in elements}
    chosen = []
    for raw in wanted:
        catalog_id = canonical_catalog_id(raw)
        if catalog_id not in by_id:
            raise InvalidArgument(
                f"--sat {raw}: no such satellite in the element files "
                f"({len(by_id)} satellites loaded)"
            )
        chosen.append(by_id[catalog_id])
    return chosen


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


def window(start: str, end: str | None, hours: float | None) -> tuple[datetime, datetime]:
    begin = _time(start, "--start")
    if end is not None:
        return begin, _time(end, "--end")
    if hours is None:
        raise InvalidArgument("give --end ISO8601 or --hours H")
    if not hours > 0:
        raise InvalidArgument(f"--hours must be positive, got {hours}")
    return begin, begin + timedelta(hours=hours)


def _time(text: str, flag: str) -> datetime:
    try:
        return parse_utc(text)
    except ValueError as bad:
        raise InvalidArgument(f"{flag}: {bad}") from None


def make_clock(start: str | None, speed: float | None) -> Clock:
    """Real time, or simulated time from ``start`` (default: now) at ``speed``."""
    if start is None and (speed is None or speed == 1.0):
        return RealClock()
    if speed is not None and not speed > 0:
        raise InvalidArgument(f"--speed must be a positive factor, got {speed}")
    begin = _time(start, "--start") if start is not None else RealClock().now()
    return SimulatedClock(begin, speed=speed or 1.0)
