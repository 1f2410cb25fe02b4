"""Passes as columns, converted in bulk for the wire and the CLI (no per-pass datetime objects).

:class:`~groundplane.orbit.passes.PassTable` gives times as float seconds after the window
start; the answers give UTC instants. :class:`PassColumns` turns them into integer microseconds
since the Unix epoch with numpy, exactly the instants (and so the strings and Timestamps)
``PassTable.passes()`` gives as datetimes, and formats them as ISO-8601 or Timestamp parts for
every pass at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from groundplane.orbit.geometry import SECONDS_PER_DAY, FloatArray, offset_jd_fr
from groundplane.orbit.passes import PassTable

IntArray64 = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
ObjectArray = NDArray[np.object_]
#: Julian date of 1970-01-01T00:00:00 UTC.
UNIX_EPOCH_JD = 2_440_587.5
MICROSECONDS_PER_DAY = 86_400_000_000


def utc_microseconds(start_jd: float, start_fr: float, seconds: FloatArray) -> IntArray64:
    """Microseconds since the Unix epoch (UTC) of ``seconds`` after ``start_jd + start_fr``,
    rounded to the microsecond as :func:`groundplane.orbit.geometry.utc_datetimes` rounds."""
    jd, fr = offset_jd_fr(start_jd, start_fr, seconds)
    days = np.floor(jd - UNIX_EPOCH_JD)
    rest_days = (jd - UNIX_EPOCH_JD - days) + fr
    micro = np.rint(rest_days * SECONDS_PER_DAY * 1e6)
    stamps: IntArray64 = days.astype(np.int64) * MICROSECONDS_PER_DAY + micro.astype(np.int64)
    return stamps


def iso_utc_ms(microseconds: IntArray64) -> list[str]:
    """ISO-8601 UTC with ``Z`` and milliseconds (``2026-08-16T00:04:12.345Z``) of each instant,
    the sub-millisecond part cut off as :func:`groundplane.kernel.clock.format_utc` does."""
    stamps = (microseconds // 1000).astype("datetime64[ms]")
    text: list[str] = np.datetime_as_string(stamps, unit="ms", timezone="UTC").tolist()
    return text


def iso_utc_s(microseconds: IntArray64, separator: str = "T") -> list[str]:
    """``YYYY-MM-DD?HH:MM:SS`` (``?`` = ``separator``) of each instant, the fraction cut off as
    ``strftime`` cuts it."""
    stamps = (microseconds // 1_000_000).astype("datetime64[s]")
    text = np.datetime_as_string(stamps, unit="s")
    if separator != "T":
        text = np.char.replace(text, "T", separator)
    result: list[str] = text.tolist()
    return result


def timestamp_parts(microseconds: IntArray64) -> tuple[list[int], list[int]]:
    """``google.protobuf.Timestamp`` ``(seconds, nanos)`` of each instant (nanos in [0, 1e9))."""
    seconds, micro = np.divmod(microseconds, 1_000_000)
    return seconds.tolist(), (micro * 1000).tolist()


def round_like_python(values: FloatArray, digits: int) -> list[float]:
    """``[round(v, digits) for v in values]``, computed with numpy.

    ``np.round`` scales by ``10**digits`` first, which can move a value lying within an ulp of a
    half to the other side; Python rounds the exact binary value. Those few values (and any
    non-finite ones) are rounded by Python, so every result is Python's.
    """
    scale = 10.0**digits
    scaled = values * scale
    result = np.rint(scaled) / scale
    with np.errstate(invalid="ignore"):
        near_half = ~(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) > 1e-6)
    rounded: list[float] = result.tolist()
    for index in np.flatnonzero(near_half).tolist():
        value = float(values[index])
        rounded[index] = round(value, digits) if math.isfinite(value) else value
    return rounded


@dataclass(frozen=True)
class PassColumns:
    """Passes as parallel columns (``P`` rows); times in microseconds since the Unix epoch."""

    catalog_id: ObjectArray
    site_id: ObjectArray
    aos_us: IntArray64
    tca_us: IntArray64
    los_us: IntArray64
    max_elevation_deg: FloatArray
    aos_azimuth_deg: FloatArray
    los_azimuth_deg: FloatArray
    aos_clipped: BoolArray
    los_clipped: BoolArray

    @classmethod
    def from_table(cls, table: PassTable) -> PassColumns:
        """The rows of ``table`` in its order (by satellite, site, AOS)."""
        ids = np.empty(len(table.satellite_ids), dtype=object)
        ids[:] = table.satellite_ids
        sites = np.empty(len(table.site_ids), dtype=object)
        sites[:] = table.site_ids
        return cls(
            catalog_id=ids[table.sat_index],
            site_id=sites[table.site_index],
            aos_us=utc_microseconds(table.start_jd, table.start_fr, table.aos_s),
            tca_us=utc_microseconds(table.start_jd, table.start_fr, table.tca_s),
            los_us=utc_microseconds(table.start_jd, table.start_fr, table.los_s),
            max_elevation_deg=np.asarray(table.max_elevation_deg, dtype=np.float64),
            aos_azimuth_deg=np.asarray(table.aos_azimuth_deg, dtype=np.float64),
            los_azimuth_deg=np.asarray(table.los_azimuth_deg, dtype=np.float64),
            aos_clipped=np.asarray(table.aos_clipped, dtype=np.bool_),
            los_clipped=np.asarray(table.los_clipped, dtype=np.bool_),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[PassColumns]) -> PassColumns:
        """The rows of every part, one part after the other."""
        if not parts:
            empty_ids = np.empty(0, dtype=object)
            empty_us = np.zeros(0, dtype=np.int64)
            empty_deg = np.zeros(0)
            empty_flag = np.zeros(0, dtype=np.bool_)
            return cls(
                empty_ids,
                empty_ids,
                empty_us,
                empty_us,
                empty_us,
                empty_deg,
                empty_deg,
                empty_deg,
                empty_flag,
                empty_flag,
            )
        if len(parts) == 1:
            return parts[0]
        return cls(
            *(
                np.concatenate([getattr(part, name) for part in parts])
                for name in cls.__dataclass_fields__
            )
        )

    def __len__(self) -> int:
        return int(self.aos_us.size)

    def take(self, rows: NDArray[np.intp]) -> PassColumns:
        """The given rows, in the given order."""
        return PassColumns(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))

    def by_aos(self) -> PassColumns:
        """Sorted by AOS, then site id, then catalog id (ids compared as Python compares str)."""
        if not len(self):
            return self
        site = np.array(self.site_id.tolist(), dtype=str)
        catalog = np.array(self.catalog_id.tolist(), dtype=str)
        return self.take(np.lexsort((catalog, site, self.aos_us)))
