"""The Sun's position and the Earth's shadow: sunlit fraction of satellites, vectorised.

Pure functions of explicit inputs (two-part UTC Julian dates and TEME vectors); nothing reads the
clock and no ephemeris file is read or downloaded.

Sun (:func:`sun_position_teme_km`): the low-precision solar coordinates of the Astronomical
Almanac (the form with Vallado's coefficients, *Fundamentals of Astrodynamics and Applications*,
algorithm "Sun"): mean longitude (which already includes the annual aberration), mean anomaly,
the equation of centre to second order, the distance in AU to second order, and the mean
obliquity. Accuracy about 0.01° in direction for 1950–2050. The apparent longitude then gets the
two largest nutation terms (Ω and 2L), the equatorial vector is formed with the true obliquity
(true-of-date frame) and turned by the equation of the equinoxes about the pole into TEME — the
frame SGP4 outputs (true equator, mean equinox). Terrestrial Time is taken as UTC + 69.184 s
(32.184 s + the 37 leap seconds in force since 2017); the solar longitude moves 0.04° per hour, so
a further leap second changes it by 1e-5°.

Shadow (:func:`sunlit_fraction`, :func:`shadow_margins_rad`): a spherical Earth of radius
:data:`EARTH_RADIUS_KM` (6,378.137 km, no atmosphere) and a spherical Sun of radius
:data:`SUN_RADIUS_KM` (696,000 km). Seen from the satellite the Sun is a disc of angular radius
``a = asin(R_sun/|sun − sat|)``, the Earth a disc of angular radius ``b = asin(R_earth/|sat|)``,
their centres ``c`` apart. The satellite is

- in full Sun (fraction 1) when ``c ≥ a + b`` (outside the penumbra cone),
- in umbra (fraction 0) when ``c ≤ b − a`` (inside the umbra cone),
- otherwise in penumbra, with the fraction ``1 − overlap/(π a²)`` of the solar disc not covered
  by the Earth's (area of overlap of two discs, treating both as flat circles of those angular
  radii — the Sun's disc is 0.27° across, so the curvature of the sky over it is negligible);
  beyond the umbra's apex (``a > b``) the annular case gives ``1 − b²/a²``.

The continuous signed quantities ``c − (a + b)`` and ``c − (b − a)`` (:func:`shadow_margins_rad`)
are what an eclipse search refines its penumbra and umbra edges on; the fraction itself is flat
(0 or 1) away from the edges.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from groundplane.kernel.errors import InvalidArgument

FloatArray = NDArray[np.floating[Any]]

#: Equatorial radius of the Earth used for its shadow (WGS84 a), km.
EARTH_RADIUS_KM = 6378.137
#: Radius of the Sun's photosphere used for the penumbra, km.
SUN_RADIUS_KM = 696_000.0
#: Astronomical unit (IAU 2012), km.
AU_KM = 149_597_870.7
#: TT − UTC, seconds: 32.184 s + 37 leap seconds (since 2017-01-01).
TT_MINUS_UTC_S = 69.184

_DEG = math.pi / 180.0
_ARCSEC = _DEG / 3600.0
_J2000_JD = 2_451_545.0
_DAYS_PER_CENTURY = 36_525.0


def _centuries_tt(jd: ArrayLike, fr: ArrayLike) -> FloatArray:
    jd_arr = np.atleast_1d(np.asarray(jd, dtype=np.float64))
    fr_arr = np.atleast_1d(np.asarray(fr, dtype=np.float64))
    if jd_arr.ndim != 1 or jd_arr.shape != fr_arr.shape:
        raise InvalidArgument(
            f"jd and fr must be 1-D arrays of the same length, got shapes {jd_arr.shape} and "
            f"{fr_arr.shape}"
        )
    if not (np.all(np.isfinite(jd_arr)) and np.all(np.isfinite(fr_arr))):
        raise InvalidArgument("jd and fr must be finite Julian dates")
    days = (jd_arr - _J2000_JD) + (fr_arr + TT_MINUS_UTC_S / 86_400.0)
    return np.asarray(days / _DAYS_PER_CENTURY, dtype=np.float64)


def sun_position_teme_km(jd: np.ndarray, fr: np.ndarray) -> np.ndarray:
    """The Sun's geocentric apparent position in TEME, km, shape ``(T, 3)``.

    ``jd``, ``fr``: two-part UTC Julian dates, 1-D arrays of length ``T`` (see
    :func:`groundplane.orbit.geometry.utc_jd_fr`). TEME is the frame of SGP4's output, so the
    result can be compared directly with propagated satellite positions. Accuracy about 0.01° in
    direction and 1e-4 in distance (see the module docstring for the algorithm).
    """
    t = _centuries_tt(jd, fr)
    mean_longitude = np.radians(np.mod(280.460618 + 36_000.77005361 * t, 360.0))
    anomaly = np.radians(np.mod(357.5291092 + 35_999.05034 * t, 360.0))
    longitude = (
        mean_longitude
        + 1.914666471 * _DEG * np.sin(anomaly)
        + 0.019994643 * _DEG * np.sin(2.0 * anomaly)
    )
    distance_km = (
        1.000140612 - 0.016708617 * np.cos(anomaly) - 0.000139589 * np.cos(2.0 * anomaly)
    ) * AU_KM
    # Nutation, the two largest terms (IAU 1980): longitude of the Moon's ascending node Ω and
    # twice the Sun's mean longitude; residual terms are below 0.25".
    node = np.radians(np.mod(125.04452 - 1934.136261 * t, 360.0))
    two_l = 2.0 * np.radians(np.mod(280.4665 + 36_000.7698 * t, 360.0))
    d_psi = (-17.20 * np.sin(node) - 1.32 * np.sin(two_l)) * _ARCSEC
    d_eps = (9.20 * np.cos(node) + 0.57 * np.cos(two_l)) * _ARCSEC
    mean_obliquity = (23.439291 - 0.0130042 * t) * _DEG
    true_obliquity = mean_obliquity + d_eps
    apparent = longitude + d_psi
    # True-of-date equatorial vector (true equator, true equinox).
    x_tod = distance_km * np.cos(apparent)
    y_tod = distance_km * np.cos(true_obliquity) * np.sin(apparent)
    z_tod = distance_km * np.sin(true_obliquity) * np.sin(apparent)
    # TEME's x axis is the mean equinox, at right ascension Eq = Δψ cos ε on the true equator
    # (GAST = GMST + Eq), so TEME right ascensions are true ones minus Eq.
    eq = d_psi * np.cos(mean_obliquity)
    c, s = np.cos(eq), np.sin(eq)
    return np.stack((c * x_tod + s * y_tod, c * y_tod - s * x_tod, z_tod), axis=-1)


def _disc_geometry(
    sat_teme_km: ArrayLike, sun_teme_km: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Angular radii of the Sun (``a``) and Earth (``b``) discs and their separation ``c``, rad."""
    sat = np.asarray(sat_teme_km, dtype=np.float64)
    sun = np.asarray(sun_teme_km, dtype=np.float64)
    if sat.shape[-1:] != (3,) or sun.shape[-1:] != (3,):
        raise InvalidArgument(
            f"sat_teme_km and sun_teme_km must end in an axis of 3 components (x, y, z), got "
            f"shapes {sat.shape} and {sun.shape}"
        )
    to_sun = sun - sat
    sx, sy, sz = sat[..., 0], sat[..., 1], sat[..., 2]
    dx, dy, dz = to_sun[..., 0], to_sun[..., 1], to_sun[..., 2]
    sat_km = np.sqrt(sx * sx + sy * sy + sz * sz)
    sun_km = np.sqrt(dx * dx + dy * dy + dz * dz)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.arcsin(np.minimum(SUN_RADIUS_KM / sun_km, 1.0))
        # Inside the Earth (|sat| < R) the Earth fills half the sky: b = 90°.
        b = np.arcsin(np.minimum(EARTH_RADIUS_KM / sat_km, 1.0))
    # Separation of the Earth's centre (direction −sat) and the Sun (direction to_sun), by atan2
    # of |cross| and dot: accurate at every angle (acos loses digits near 0 and π).
    cx = sz * dy - sy * dz
    cy = sx * dz - sz * dx
    cz = sy * dx - sx * dy
    dot = -(sx * dx + sy * dy + sz * dz)
    c = np.arctan2(np.sqrt(cx * cx + cy * cy + cz * cz), dot)
    return a, b, c


def shadow_margins_rad(
    sat_teme_km: ArrayLike, sun_teme_km: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Signed angular distances to the penumbra and umbra cones, radians, ``(penumbra, umbra)``.

    ``penumbra = c − (a + b)``: positive in full Sun, zero on the penumbra cone, negative inside
    it. ``umbra = c − (b − a)``: negative inside the umbra cone (total eclipse), zero on it. Both
    are continuous in the positions, so an eclipse search brackets and refines their roots (the
    sunlit fraction itself is flat at 0 and 1). Shapes broadcast as in :func:`sunlit_fraction`.
    """
    a, b, c = _disc_geometry(sat_teme_km, sun_teme_km)
    return c - (a + b), c - (b - a)


def sunlit_fraction(sat_teme_km: np.ndarray, sun_teme_km: np.ndarray) -> np.ndarray:
    """Fraction 0…1 of the solar disc visible from each satellite (conical Earth shadow).

    ``sat_teme_km`` is ``(..., 3)`` (e.g. ``(S, T, 3)`` from SGP4), ``sun_teme_km`` is ``(..., 3)``
    broadcasting with it (e.g. ``(T, 3)`` from :func:`sun_position_teme_km`); both geocentric, same
    frame, km. Returns the broadcast leading shape: 1 in full Sun, 0 in umbra, the uncovered
    fraction of the solar disc in penumbra. NaN positions (SGP4 errors) give NaN.
    """
    a, b, c = _disc_geometry(sat_teme_km, sun_teme_km)
    a, b, c = np.broadcast_arrays(a, b, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Overlap area of two discs of radii a (Sun) and b (Earth) with centres c apart.
        safe_c = np.where(c > 0.0, c, 1.0)
        cos_a = np.clip((c * c + a * a - b * b) / (2.0 * a * safe_c), -1.0, 1.0)
        cos_b = np.clip((c * c + b * b - a * a) / (2.0 * b * safe_c), -1.0, 1.0)
        kite = (-c + a + b) * (c + a - b) * (c - a + b) * (c + a + b)
        overlap = (
            a * a * np.arccos(cos_a)
            + b * b * np.arccos(cos_b)
            - 0.5 * np.sqrt(np.maximum(kite, 0.0))
        )
        partial = 1.0 - overlap / (math.pi * a * a)
        annular = 1.0 - (b * b) / (a * a)
    fraction = np.where(
        c >= a + b,
        1.0,
        np.where(c <= b - a, 0.0, np.where(c <= a - b, annular, partial)),
    )
    fraction = np.clip(fraction, 0.0, 1.0)
    bad = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(c))
    if bad.any():
        fraction = np.where(bad, np.nan, fraction)
    return np.asarray(fraction, dtype=np.float64)
