"""Pass planning for an az/el rotator: where to wait before AOS and which way to turn.

A rotator's azimuth is *mechanical*: a 0–450° rotator reaches north twice (0° and 360°), a
−180..180° one has its stop in the south. A pass is a continuous sweep of geographic azimuth, so
the planner unwraps the pass's azimuth samples into one continuous track and places it on the
rotator, choosing, in this order:

``direct``
    the track fits within the limits and within one turn from the rotator's minimum azimuth;
``overwind``
    the track fits only by using the range beyond one turn (rotators with more than 360°, e.g.
    a pass crossing north on a 0–450° rotator is followed from 300° through 360° to 420°);
``flip``
    the track does not fit, but the rotator's elevation reaches past 90°: point "over the top"
    at ``(az + 180°, 180° − el)``, which moves the azimuth stop to the other side of the sky
    (a pass crossing north on a 0–360° rotator becomes a sweep through 180°);
``clamped``
    nothing fits (e.g. a 0–360°, 0–90° rotator and a pass crossing north). The rotator is never
    unwound mid-pass: before AOS it is placed on the side of the stop that keeps the smaller
    pointing loss over the pass (weighted by time), and while the satellite is beyond the stop
    the antenna waits at the stop. The one unwind is the pre-position slew before AOS.

Among several placements of the same kind the planner takes the one closest to the rotator's
current azimuth (least pre-position slew).

Every command goes through :meth:`PassPlan.command_for` / :func:`safe_command`, which clamp it to
the rotator's limits and never point below the site's threshold
(:meth:`groundplane.orbit.sites.Site.threshold_deg`: minimum elevation and horizon mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from groundplane.hil.hamlib import RotatorLimits
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.sites import Site

PlanMode = Literal["direct", "overwind", "flip", "clamped"]

_FIT_EPSILON_DEG = 1e-6


@dataclass(frozen=True)
class PassSample:
    """The satellite's geographic look angle at one instant of the pass."""

    at: datetime
    azimuth_deg: float
    elevation_deg: float


def pointing_of(
    mechanical_azimuth_deg: float, mechanical_elevation_deg: float
) -> tuple[float, float]:
    """The geographic ``(azimuth_deg, elevation_deg)`` a mechanical position points at.

    Elevations above 90° point over the top: ``(az + 180°, 180° − el)``.
    """
    if mechanical_elevation_deg > 90.0:
        return (mechanical_azimuth_deg + 180.0) % 360.0, 180.0 - mechanical_elevation_deg
    return mechanical_azimuth_deg % 360.0, mechanical_elevation_deg


def angular_separation_deg(
    azimuth_a_deg: float, elevation_a_deg: float, azimuth_b_deg: float, elevation_b_deg: float
) -> float:
    """Great-circle angle between two look directions."""
    a1, e1, a2, e2 = map(
        math.radians, (azimuth_a_deg, elevation_a_deg, azimuth_b_deg, elevation_b_deg)
    )
    d_az = a2 - a1
    # Vincenty's form: well conditioned for tiny and for near-antipodal angles.
    numerator = math.hypot(
        math.cos(e2) * math.sin(d_az),
        math.cos(e1) * math.sin(e2) - math.sin(e1) * math.cos(e2) * math.cos(d_az),
    )
    denominator = math.sin(e1) * math.sin(e2) + math.cos(e1) * math.cos(e2) * math.cos(d_az)
    return math.degrees(math.atan2(numerator, denominator))


def safe_command(
    limits: RotatorLimits, site: Site, azimuth_deg: float, elevation_deg: float
) -> tuple[float, float]:
    """Clamp a mechanical position to the limits and lift it to the site's threshold.

    The threshold is checked where the antenna actually points after clamping (over-the-top
    positions included), so no command ever points below the mask.
    """
    az, el = limits.clamp(azimuth_deg, elevation_deg)
    geo_az, geo_el = pointing_of(az, el)
    threshold = float(site.threshold_deg(geo_az))
    if geo_el < threshold:
        el = 180.0 - threshold if el > 90.0 else threshold
        az, el = limits.clamp(az, el)
    return az, el


@dataclass(frozen=True)
class PassPlan:
    """How the rotator follows one pass. Build with :func:`plan_pass`."""

    mode: PlanMode
    flip: bool
    aos: datetime
    limits: RotatorLimits
    site: Site
    #: Sample times as seconds after ``aos``.
    times_s: tuple[float, ...]
    #: Planned mechanical azimuth at each sample (continuous; may leave the limits when clamped).
    mechanical_azimuth_deg: tuple[float, ...]
    #: Share of the pass (by time) during which the planned track is outside the limits.
    clamped_fraction: float
    #: Largest pointing loss the plan accepts (0 unless ``clamped``).
    max_clamp_error_deg: float

    def planned_azimuth_deg(self, at: datetime) -> float:
        """Planned mechanical azimuth at ``at`` (held at the ends outside the samples)."""
        t = (at - self.aos).total_seconds()
        return float(np.interp(t, self.times_s, self.mechanical_azimuth_deg))

    def command_for(
        self, at: datetime, azimuth_deg: float, elevation_deg: float
    ) -> tuple[float, float]:
        """The safe mechanical command that follows a geographic look angle at ``at``."""
        threshold = float(self.site.threshold_deg(azimuth_deg))
        elevation = max(elevation_deg, threshold)
        target = azimuth_deg + 180.0 if self.flip else azimuth_deg
        reference = self.planned_azimuth_deg(at)
        mechanical_az = target + 360.0 * round((reference - target) / 360.0)
        mechanical_el = 180.0 - elevation if self.flip else elevation
        return safe_command(self.limits, self.site, mechanical_az, mechanical_el)

    @property
    def preposition(self) -> tuple[float, float]:
        """Where to wait before AOS: the planned AOS azimuth at the threshold elevation."""
        az0 = self.mechanical_azimuth_deg[0]
        geo_az = (az0 - 180.0) % 360.0 if self.flip else az0 % 360.0
        threshold = float(self.site.threshold_deg(geo_az))
        el = 180.0 - threshold if self.flip else threshold
        return safe_command(self.limits, self.site, az0, el)


@dataclass(frozen=True)
class _Candidate:
    flip: bool
    track: np.ndarray
    fits: bool
    loss_deg_s: float
    max_loss_deg: float
    outside_s: float
    slew_deg: float


def _weights_s(times_s: np.ndarray) -> np.ndarray:
    """Time each sample stands for (half the gap to each neighbour)."""
    gaps = np.diff(times_s)
    weights = np.zeros_like(times_s)
    weights[:-1] += gaps / 2.0
    weights[1:] += gaps / 2.0
    return weights


def plan_pass(
    samples: Sequence[PassSample],
    limits: RotatorLimits,
    site: Site,
    *,
    current_azimuth_deg: float | None = None,
) -> PassPlan:
    """Plan how the rotator follows a pass given by its look-angle samples (AOS to LOS).

    Samples must be in time order and dense enough that the azimuth moves less than 180°
    between neighbours (1–10 s spacing for LEO). ``current_azimuth_deg`` (mechanical) breaks
    ties between equally good placements in favour of the shortest pre-position slew.
    """
    if len(samples) < 2:
        raise InvalidArgument(
            f"a pass plan needs at least 2 look-angle samples from AOS to LOS, got {len(samples)}"
        )
    aos = samples[0].at
    times_s = np.array([(s.at - aos).total_seconds() for s in samples], dtype=np.float64)
    az = np.array([s.azimuth_deg for s in samples], dtype=np.float64)
    el = np.array([s.elevation_deg for s in samples], dtype=np.float64)
    if not (np.all(np.isfinite(az)) and np.all(np.isfinite(el))):
        raise InvalidArgument("pass samples must have finite azimuth_deg and elevation_deg")
    if np.any(np.diff(times_s) <= 0):
        raise InvalidArgument("pass samples must be in strictly increasing time order")
    thresholds = site.threshold_deg(az)
    el_cmd = np.maximum(el, thresholds)
    if float(np.max(thresholds)) > limits.max_elevation_deg:
        raise InvalidArgument(
            f"site {site.id!r} needs elevations up to {float(np.max(thresholds)):.1f}° on this "
            f"pass but the rotator stops at {limits.max_elevation_deg}°"
        )
    weights = _weights_s(times_s)
    unwrapped = np.degrees(np.unwrap(np.radians(az)))
    reference_az = limits.min_azimuth_deg if current_azimuth_deg is None else current_azimuth_deg

    flips = [False]
    if limits.max_elevation_deg >= 180.0 - float(np.min(el_cmd)) - _FIT_EPSILON_DEG:
        flips.append(True)

    candidates: list[_Candidate] = []
    for flip in flips:
        base = unwrapped + 180.0 if flip else unwrapped
        k_low = math.floor((limits.min_azimuth_deg - float(np.max(base))) / 360.0) - 1
        k_high = math.ceil((limits.max_azimuth_deg - float(np.min(base))) / 360.0) + 1
        for k in range(k_low, k_high + 1):
            track = base + 360.0 * k
            clamped = np.clip(track, limits.min_azimuth_deg, limits.max_azimuth_deg)
            outside = np.abs(clamped - track) > _FIT_EPSILON_DEG
            if not np.any(np.abs(clamped - track) < 180.0):
                continue  # never within reach at all
            losses = np.array(
                [
                    angular_separation_deg(a, e, *pointing_of(c, 180.0 - e if flip else e))
                    for a, e, c in zip(az, el_cmd, clamped, strict=True)
                ]
            )
            candidates.append(
                _Candidate(
                    flip=flip,
                    track=track,
                    fits=not bool(np.any(outside)),
                    loss_deg_s=float(np.sum(losses * weights)),
                    max_loss_deg=float(np.max(losses)),
                    outside_s=float(np.sum(weights[outside])),
                    slew_deg=abs(float(clamped[0]) - reference_az),
                )
            )

    def one_turn(candidate: _Candidate) -> bool:
        return float(np.max(candidate.track)) < limits.min_azimuth_deg + 360.0

    fitting = [c for c in candidates if c.fits]
    if fitting:
        # Prefer not flipping, then least pre-position slew, then staying within one turn.
        best = min(fitting, key=lambda c: (c.flip, round(c.slew_deg, 6), not one_turn(c)))
        mode: PlanMode = "flip" if best.flip else ("direct" if one_turn(best) else "overwind")
    else:
        best = min(candidates, key=lambda c: (round(c.loss_deg_s, 6), c.flip, c.slew_deg))
        mode = "clamped"
    total_s = float(times_s[-1] - times_s[0])
    return PassPlan(
        mode=mode,
        flip=best.flip,
        aos=aos,
        limits=limits,
        site=site,
        times_s=tuple(float(t) for t in times_s),
        mechanical_azimuth_deg=tuple(float(a) for a in best.track),
        clamped_fraction=best.outside_s / total_s if total_s > 0 else 0.0,
        max_clamp_error_deg=best.max_loss_deg if mode == "clamped" else 0.0,
    )
