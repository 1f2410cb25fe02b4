"""Where to point for one pass: pass selection and a cheap pointing callable.

The tracker calls its pointing function at 10 Hz or faster, so the geometry is computed once per
pass (look angles every ``step_s`` seconds, one batched SGP4 call) and interpolated: azimuth is
unwrapped before interpolation so the 359° → 0° crossing is continuous. At a 1 s step the linear
interpolation error of a LEO pass is far below a rotator's pointing threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from groundplane.kernel.clock import format_utc
from groundplane.kernel.errors import FailedPrecondition, InvalidArgument
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import (
    FloatArray,
    SatelliteBatch,
    error_reason,
    look_angles,
    utc_jd_fr_range,
)
from groundplane.orbit.passes import Pass
from groundplane.orbit.sites import Site


@dataclass(frozen=True)
class SampledPointing:
    """Look angles tabulated from ``start`` every ``step_s``, interpolated on demand.

    Calling it with an instant returns ``(azimuth_deg, elevation_deg, range_rate_km_s)``;
    instants outside the table are held at its ends.
    """

    start: datetime
    step_s: float
    azimuth_unwrapped_deg: FloatArray
    elevation_deg: FloatArray
    range_rate_km_s: FloatArray

    def __post_init__(self) -> None:
        n = self.azimuth_unwrapped_deg.size
        if n < 2 or self.elevation_deg.size != n or self.range_rate_km_s.size != n:
            raise InvalidArgument(f"pointing needs ≥ 2 equally long samples, got {n}")
        if not np.all(np.isfinite(self.azimuth_unwrapped_deg)):
            raise InvalidArgument("pointing samples must be finite (SGP4 failed in the pass?)")

    @classmethod
    def from_samples(
        cls,
        start: datetime,
        step_s: float,
        azimuth_deg: FloatArray,
        elevation_deg: FloatArray,
        range_rate_km_s: FloatArray,
    ) -> SampledPointing:
        unwrapped = np.rad2deg(np.unwrap(np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))))
        return cls(
            start,
            step_s,
            unwrapped,
            np.asarray(elevation_deg, dtype=np.float64),
            np.asarray(range_rate_km_s, dtype=np.float64),
        )

    def __call__(self, at: datetime) -> tuple[float, float, float]:
        index = (at - self.start).total_seconds() / self.step_s
        last = self.azimuth_unwrapped_deg.size - 1
        index = min(max(index, 0.0), float(last))
        low = min(math.floor(index), last - 1)
        frac = index - low

        def lerp(values: FloatArray) -> float:
            return float(values[low] + (values[low + 1] - values[low]) * frac)

        azimuth = lerp(self.azimuth_unwrapped_deg) % 360.0
        return azimuth, lerp(self.elevation_deg), lerp(self.range_rate_km_s)


def pointing_from_elements(
    elements: ElementSet,
    site: Site,
    start: datetime,
    end: datetime,
    step_s: float = 1.0,
) -> SampledPointing:
    """Tabulate the look angles of ``elements`` from ``site`` over ``[start, end]``."""
    if not start < end:
        raise InvalidArgument(f"expected start < end, got {format_utc(start)} … {format_utc(end)}")
    span_s = (end - start).total_seconds()
    count = math.ceil(span_s / step_s) + 1
    jd, fr = utc_jd_fr_range(start, start + timedelta(seconds=(count - 1) * step_s), step_s)
    batch = SatelliteBatch([elements.catalog_id], [elements.to_satrec()])
    angles = look_angles(batch, [site], jd, fr)
    codes = angles.error_code[0]
    if codes.any():
        code = int(codes[np.flatnonzero(codes)[0]])
        raise FailedPrecondition(
            f"SGP4 cannot place {elements.catalog_id} during the pass: {error_reason(code)}"
        )
    return SampledPointing.from_samples(
        start,
        step_s,
        angles.azimuth_deg[0, 0],
        angles.elevation_deg[0, 0],
        angles.range_rate_km_s[0, 0],
    )


def choose_pass(
    passes: Sequence[Pass], start: datetime, which: datetime | None, satellite_id: str
) -> Pass:
    """The pass to track: the next one whose AOS is at or after ``start`` (``which`` None), or
    the one containing the instant ``which``."""
    ordered = sorted(passes, key=lambda p: p.aos)
    if which is None:
        for candidate in ordered:
            if candidate.aos >= start and not candidate.aos_clipped:
                return candidate
        raise FailedPrecondition(
            f"no pass of {satellite_id} over the site begins in the search window after "
            f"{format_utc(start)}; lower --min-elevation or pick another start"
        )
    for candidate in ordered:
        if candidate.aos <= which <= candidate.los:
            return candidate
    near = ", ".join(f"{format_utc(p.aos)}–{format_utc(p.los)}" for p in ordered[:3]) or "none"
    raise FailedPrecondition(
        f"no pass of {satellite_id} contains {format_utc(which)}; passes in the window: {near}"
    )
