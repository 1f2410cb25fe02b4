"""The Sun's position and the conical Earth shadow (groundplane.orbit.shadow).

References are independent of the module: Skyfield's apparent Sun from the JPL DE421 ephemeris
(shipped by the ``skyfield-data`` package) in Skyfield's own TEME frame, and a ray-cast of the
solar disc against the Earth sphere for the penumbra fraction.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import utc_jd_fr_range
from groundplane.orbit.shadow import (
    AU_KM,
    EARTH_RADIUS_KM,
    SUN_RADIUS_KM,
    shadow_margins_rad,
    sun_position_teme_km,
    sunlit_fraction,
)

from .ephemeris import de421


def test_sun_direction_matches_de421_within_a_hundredth_of_a_degree() -> None:
    """Over 2020–2032 the analytic Sun is within 0.012° (mean < 0.005°) of Skyfield's apparent
    DE421 Sun in TEME, and its distance within 1e-4 relative."""
    from skyfield.api import load
    from skyfield.sgp4lib import TEME

    ts = load.timescale(builtin=True)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    jd, fr = utc_jd_fr_range(start, datetime(2032, 1, 1, tzinfo=UTC), 86_400.0 * 1.37)
    days = (jd - jd[0]) + (fr - fr[0])
    t = ts.utc(2020, 1, 1 + days)
    with de421() as eph:
        ref = eph["earth"].at(t).observe(eph["sun"]).apparent().frame_xyz(TEME).km.T
    mine = sun_position_teme_km(jd, fr)
    assert mine.shape == (jd.size, 3)
    cos = np.sum(mine * ref, axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)
    angle_deg = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    assert angle_deg.max() < 0.012
    assert angle_deg.mean() < 0.005
    ratio = np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.abs(ratio - 1.0).max() < 1e-4


def test_sun_position_rejects_mismatched_times() -> None:
    """jd and fr of different shapes are refused with a message naming both shapes."""
    with pytest.raises(InvalidArgument, match="same length"):
        sun_position_teme_km(np.array([2_461_000.5, 2_461_001.5]), np.array([0.0]))


def _ray_cast_fraction(sat_km: np.ndarray, sun_km: np.ndarray, n: int = 301) -> float:
    """Fraction of a uniform grid of points on the solar disc whose ray to the satellite misses
    the Earth sphere (independent of the disc-overlap formula)."""
    to_sun = sun_km - sat_km
    d = to_sun / np.linalg.norm(to_sun)
    u = np.cross(d, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    x, y = np.meshgrid(np.linspace(-1.0, 1.0, n), np.linspace(-1.0, 1.0, n))
    inside = x * x + y * y <= 1.0
    points = sun_km + SUN_RADIUS_KM * (x[inside, None] * u + y[inside, None] * v)
    seg = points - sat_km
    # Closest approach of the segment sat → point to the Earth's centre.
    t = np.clip(-(seg @ sat_km) / np.sum(seg * seg, axis=1), 0.0, 1.0)
    closest = sat_km + t[:, None] * seg
    visible = np.linalg.norm(closest, axis=1) > EARTH_RADIUS_KM
    return float(visible.mean())


def test_penumbra_fraction_matches_a_ray_cast_of_the_solar_disc() -> None:
    """Across the penumbra of a 7,000 km and a GEO orbit, the fraction equals the ray-cast
    fraction of the solar disc within 0.005, and is 0 in umbra and 1 in full Sun."""
    sun = np.array([AU_KM, 0.0, 0.0])
    for radius_km in (7_000.0, 42_164.0):
        # Satellites in the x-y plane at angle θ from the anti-Sun direction; the umbra and
        # penumbra edges (lo, hi) are located on a fine grid of θ.
        thetas = np.linspace(0.0, math.pi, 200_001)
        sats = radius_km * np.stack(
            (-np.cos(thetas), np.sin(thetas), np.zeros_like(thetas)), axis=-1
        )
        pen, umb = shadow_margins_rad(sats, sun)
        lo = thetas[np.argmin(np.abs(umb))]
        hi = thetas[np.argmin(np.abs(pen))]
        assert hi > lo
        probe = np.linspace(lo - (hi - lo) * 0.2, hi + (hi - lo) * 0.2, 25)
        for theta in probe:
            sat = radius_km * np.array([-math.cos(theta), math.sin(theta), 0.0])
            got = float(sunlit_fraction(sat, sun))
            want = _ray_cast_fraction(sat, sun)
            assert got == pytest.approx(want, abs=0.005), (radius_km, theta, got, want)
            if theta < lo:
                assert got == 0.0
            if theta > hi:
                assert got == 1.0


def test_fraction_and_margins_broadcast_over_satellites_and_times() -> None:
    """(S, T, 3) satellites with a (T, 3) Sun give (S, T) results; margins agree with the
    fraction: 1 exactly where the penumbra margin is ≥ 0, 0 exactly where the umbra margin ≤ 0."""
    rng = np.random.default_rng(16)
    jd, fr = utc_jd_fr_range(
        datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC), 3600.0
    )
    sun = sun_position_teme_km(jd, fr)
    direction = rng.normal(size=(50, jd.size, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    sats = direction * rng.uniform(6_600.0, 45_000.0, size=(50, jd.size, 1))
    frac = sunlit_fraction(sats, sun)
    pen, umb = shadow_margins_rad(sats, sun)
    assert frac.shape == pen.shape == umb.shape == (50, jd.size)
    assert np.all((frac >= 0.0) & (frac <= 1.0))
    np.testing.assert_array_equal(frac == 1.0, pen >= 0.0)
    np.testing.assert_array_equal(frac == 0.0, umb <= 0.0)
    # Each element equals the unbroadcast computation.
    np.testing.assert_allclose(frac[7, 3], sunlit_fraction(sats[7, 3], sun[3]))
    # Sunward side fully lit, straight behind the Earth dark.
    s = sun[0] / np.linalg.norm(sun[0])
    assert float(sunlit_fraction(7_000.0 * s, sun[0])) == 1.0
    assert float(sunlit_fraction(-7_000.0 * s, sun[0])) == 0.0


def test_nan_positions_give_nan_and_bad_shapes_are_refused() -> None:
    """A NaN satellite (an SGP4 error) yields NaN, not a sunlit guess; vectors that are not
    3-component are refused with a message naming the shapes."""
    sun = np.array([AU_KM, 0.0, 0.0])
    out = sunlit_fraction(np.array([[np.nan, np.nan, np.nan], [7000.0, 0.0, 0.0]]), sun)
    assert math.isnan(out[0])
    assert out[1] == 1.0
    with pytest.raises(InvalidArgument, match="3 components"):
        sunlit_fraction(np.zeros((4, 2)), sun)
