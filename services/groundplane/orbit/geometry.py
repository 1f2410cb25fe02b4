"""SGP4 geometry: batched propagation, TEME→ITRF, topocentric look angles, range rate, Doppler.

Conventions and approximations (all deliberate; no data file is ever downloaded):

- Times are two-part UTC Julian dates ``(jd, fr)``: float64 arrays of the same shape, ``jd`` a
  midnight (``…\u200b.5``) and ``fr`` the fraction of day. :func:`utc_jd_fr` and
  :func:`utc_jd_fr_range` build them from datetimes; :func:`utc_datetimes` converts back.
- UT1 is taken equal to UTC (|UT1−UTC| < 0.9 s, i.e. < 0.4 km of Earth-surface rotation at the
  equator; it shifts every longitude by at most 0.004°) and polar motion is zero (< 0.5″).
- TEME → ITRF is the rotation about the pole by GMST 1982 (the angle SGP4's TEME frame is defined
  with). ITRF velocity includes the Earth-rotation term ``−ω × r``.
- Sites are on the WGS84 ellipsoid; elevation is geometric (no refraction) above the ellipsoid
  normal; azimuth is clockwise from true north in [0, 360).
- Every value is float64. Where SGP4 reports an error (code 1–6; 6 = decayed) the satellite's
  results at that time are NaN and the error code array says why (:func:`error_reason`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sgp4.api import SGP4_ERRORS, Satrec, SatrecArray

from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.orbit.sites import Site

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.intp]
CodeArray = NDArray[np.uint8]

WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
#: Earth rotation rate used with the GMST 1982 (TEME/PEF) frame, rad/s.
EARTH_ROTATION_RAD_S = 7.292115146706979e-5
SPEED_OF_LIGHT_KM_S = 299_792.458
SECONDS_PER_DAY = 86_400.0
_UNIX_EPOCH_JD = 2_440_587.5
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TWO_PI = 2.0 * math.pi

#: Readable reason for every SGP4 error code (0 = no error).
SGP4_ERROR_REASONS: dict[int, str] = {
    0: "ok",
    1: "mean eccentricity outside [0, 1) (code 1): elements unusable at this time",
    2: "mean motion below zero (code 2): elements unusable at this time",
    3: "perturbed eccentricity outside [0, 1] (code 3): elements unusable at this time",
    4: "semi-latus rectum below zero (code 4): elements unusable at this time",
    5: "epoch elements are sub-orbital (code 5)",
    6: "satellite has decayed (code 6): mean radius fell below one Earth radius",
}


def error_reason(code: int) -> str:
    """A sentence explaining an SGP4 error code (0 means no error)."""
    return SGP4_ERROR_REASONS.get(
        int(code), f"SGP4 error code {int(code)}: {SGP4_ERRORS.get(int(code), 'unknown')}"
    )


# --------------------------------------------------------------------------------------------
# Time


def _as_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(
            f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}; "
            "use datetime(..., tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def _split(
    days_since_unix_epoch: FloatArray, extra_fr: FloatArray
) -> tuple[FloatArray, FloatArray]:
    whole = np.floor(days_since_unix_epoch)
    fr = (days_since_unix_epoch - whole) + extra_fr
    carry = np.floor(fr)
    return whole + carry + _UNIX_EPOCH_JD, fr - carry


def utc_jd_fr(times: datetime | Iterable[datetime]) -> tuple[FloatArray, FloatArray]:
    """Two-part Julian dates ``(jd, fr)`` (shape ``(T,)``; ``(1,)`` for one datetime)."""
    items = [times] if isinstance(times, datetime) else list(times)
    days = np.empty(len(items), dtype=np.float64)
    micro = np.empty(len(items), dtype=np.float64)
    for index, item in enumerate(items):
        delta = _as_utc(item, f"time {index}") - _UNIX_EPOCH
        days[index] = delta.days
        micro[index] = delta.seconds * 1e6 + delta.microseconds
    return _split(days, micro / (SECONDS_PER_DAY * 1e6))


def utc_jd_fr_range(
    start: datetime, stop: datetime, step_s: float
) -> tuple[FloatArray, FloatArray]:
    """Times ``start, start+step, …`` up to and including ``stop`` when it falls on the grid."""
    begin = _as_utc(start, "start")
    end = _as_utc(stop, "stop")
    if not (isinstance(step_s, int | float) and math.isfinite(step_s) and step_s > 0):
        raise InvalidArgument(f"step_s must be a positive number of seconds, got {step_s!r}")
    span_s = (end - begin).total_seconds()
    if span_s < 0:
        raise InvalidArgument(f"stop {end.isoformat()} is before start {begin.isoformat()}")
    count = math.floor(span_s / step_s + 1e-9) + 1
    jd0, fr0 = utc_jd_fr(begin)
    return offset_jd_fr(float(jd0[0]), float(fr0[0]), np.arange(count) * float(step_s))


def offset_jd_fr(jd0: float, fr0: float, offsets_s: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(jd, fr)`` of ``jd0 + fr0`` plus ``offsets_s`` seconds (any shape)."""
    offsets = np.asarray(offsets_s, dtype=np.float64)
    fr = fr0 + offsets / SECONDS_PER_DAY
    carry = np.floor(fr)
    return np.full(offsets.shape, jd0) + carry, fr - carry


def utc_datetimes(jd: ArrayLike, fr: ArrayLike) -> list[datetime]:
    """Timezone-aware UTC datetimes (microsecond resolution) of two-part Julian dates."""
    jd_arr = np.atleast_1d(np.asarray(jd, dtype=np.float64))
    fr_arr = np.atleast_1d(np.asarray(fr, dtype=np.float64))
    days = np.floor(jd_arr - _UNIX_EPOCH_JD)
    rest_days = (jd_arr - _UNIX_EPOCH_JD - days) + fr_arr
    micro = np.rint(rest_days * SECONDS_PER_DAY * 1e6)
    # Microseconds since the Unix epoch as datetime64, converted to datetime objects in C
    # (about 10× faster than building each one from a timedelta in Python).
    stamps = (days.astype(np.int64) * 86_400_000_000 + micro.astype(np.int64)).astype(
        "datetime64[us]"
    )
    naive: list[datetime] = stamps.astype(object).tolist()
    return [value.replace(tzinfo=UTC) for value in naive]


def _check_times(jd: ArrayLike, fr: ArrayLike) -> tuple[FloatArray, FloatArray]:
    jd_arr = np.ascontiguousarray(np.atleast_1d(np.asarray(jd, dtype=np.float64)))
    fr_arr = np.ascontiguousarray(np.atleast_1d(np.asarray(fr, dtype=np.float64)))
    if jd_arr.ndim != 1 or jd_arr.shape != fr_arr.shape:
        raise InvalidArgument(
            f"jd and fr must be 1-D arrays of the same length, got shapes {jd_arr.shape} and "
            f"{fr_arr.shape}"
        )
    if not (np.all(np.isfinite(jd_arr)) and np.all(np.isfinite(fr_arr))):
        raise InvalidArgument("jd and fr must be finite Julian dates")
    return jd_arr, fr_arr


def gmst82_rad(jd: ArrayLike, fr: ArrayLike) -> FloatArray:
    """Greenwich mean sidereal time (IAU 1982), radians in [0, 2π), with UT1 = UTC."""
    jd_arr = np.asarray(jd, dtype=np.float64)
    fr_arr = np.asarray(fr, dtype=np.float64)
    t = ((jd_arr - 2_451_545.0) + fr_arr) / 36_525.0
    # Seconds of sidereal time; the constant term plus the daily turn is kept separate from the
    # fraction of day to keep float64 precision at the microsecond level.
    seconds = (
        67_310.54841 + (876_600.0 * 3600.0 + 8_640_184.812866) * t + (0.093104 - 6.2e-6 * t) * t * t
    )
    return np.mod(seconds * (math.pi / 43_200.0), _TWO_PI)


# --------------------------------------------------------------------------------------------
# Satellites and propagation


class SatelliteBatch:
    """Satellites propagated together: string catalog ids and one :class:`SatrecArray`.

    ``ids[i]`` names ``satrecs[i]``; ids are unique non-empty strings (catalog numbers may exceed
    what a Satrec can hold, so they live here and not in the Satrec).
    """

    __slots__ = ("_index", "array", "ids", "satrecs")

    def __init__(self, ids: Sequence[str], satrecs: Sequence[Satrec]) -> None:
        id_tuple = tuple(ids)
        sat_tuple = tuple(satrecs)
        if len(id_tuple) != len(sat_tuple):
            raise InvalidArgument(
                f"ids and satrecs must have the same length, got {len(id_tuple)} ids and "
                f"{len(sat_tuple)} satrecs"
            )
        index: dict[str, int] = {}
        for position, (sat_id, satrec) in enumerate(zip(id_tuple, sat_tuple, strict=True)):
            if not isinstance(sat_id, str) or not sat_id:
                raise InvalidArgument(f"satellite {position}: id must be a non-empty string")
            if sat_id in index:
                raise InvalidArgument(f"satellite id {sat_id!r} appears twice in one batch")
            if not isinstance(satrec, Satrec):
                raise InvalidArgument(
                    f"satellite {sat_id!r}: expected an sgp4.api.Satrec, got "
                    f"{type(satrec).__name__}"
                )
            index[sat_id] = position
        self.ids: tuple[str, ...] = id_tuple
        self.satrecs: tuple[Satrec, ...] = sat_tuple
        self._index = index
        self.array: SatrecArray | None = SatrecArray(list(sat_tuple)) if sat_tuple else None

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, sat_id: str) -> int:
        """Position of ``sat_id`` in the batch; :class:`NotFound` when absent."""
        try:
            return self._index[sat_id]
        except KeyError:
            raise NotFound(f"satellite {sat_id!r} is not in this batch") from None

    def subset(self, indices: Sequence[int] | IntArray) -> SatelliteBatch:
        """A new batch of the satellites at ``indices`` (in that order)."""
        picked = [int(i) for i in np.asarray(indices, dtype=np.intp).ravel()]
        return SatelliteBatch([self.ids[i] for i in picked], [self.satrecs[i] for i in picked])

    @property
    def mean_motion_rad_s(self) -> FloatArray:
        """Kozai mean motion of each satellite, rad/s."""
        return np.array([s.no_kozai for s in self.satrecs], dtype=np.float64) / 60.0

    @property
    def eccentricity(self) -> FloatArray:
        return np.array([s.ecco for s in self.satrecs], dtype=np.float64)

    @property
    def period_s(self) -> FloatArray:
        """Orbital period of each satellite, seconds (inf for a zero mean motion)."""
        with np.errstate(divide="ignore"):
            return _TWO_PI / self.mean_motion_rad_s


@dataclass(frozen=True)
class Propagation:
    """SGP4 states of ``S`` satellites at ``T`` times, TEME frame.

    ``r_teme_km`` and ``v_teme_km_s`` are ``(S, T, 3)``; ``error_code`` is ``(S, T)`` uint8
    (0 = ok; where non-zero the states are NaN).
    """

    r_teme_km: FloatArray
    v_teme_km_s: FloatArray
    error_code: CodeArray

    @property
    def ok(self) -> NDArray[np.bool_]:
        return np.asarray(self.error_code == 0, dtype=bool)


def propagate(batch: SatelliteBatch, jd: ArrayLike, fr: ArrayLike) -> Propagation:
    """Propagate every satellite of ``batch`` to every time in ONE ``SatrecArray.sgp4`` call.

    A decay (code 6) is final: every time of that satellite at or after its first decayed time in
    this request is flagged 6 as well (SGP4 itself may return states again after a decay).
    """
    jd_arr, fr_arr = _check_times(jd, fr)
    if batch.array is None:
        empty = np.empty((0, jd_arr.size, 3), dtype=np.float64)
        return Propagation(empty, empty.copy(), np.empty((0, jd_arr.size), dtype=np.uint8))
    error, r, v = batch.array.sgp4(jd_arr, fr_arr)
    error = np.asarray(error, dtype=np.uint8)
    decayed = error == 6
    if decayed.any():
        # SGP4 is stateless per time: after a decay it can return plausible-looking states
        # again. A decay is final, so every later time of that satellite is flagged too.
        t_days = (jd_arr - jd_arr.min()) + fr_arr
        rows = np.flatnonzero(decayed.any(axis=1))
        first = np.where(decayed[rows], t_days[None, :], np.inf).min(axis=1)
        sub = error[rows]
        sub[(t_days[None, :] >= first[:, None]) & (sub == 0)] = 6
        error[rows] = sub
    bad = error != 0
    if bad.any():  # make sure error points are NaN whatever the library left there
        r[bad] = np.nan
        v[bad] = np.nan
    return Propagation(r, v, error)


@dataclass(frozen=True)
class EarthRotation:
    """cos and sin of the Earth's rotation angle (GMST 1982) at a set of times.

    Computed once per set of times with :func:`earth_rotation` and reused for every satellite
    (or chunk of satellites) rotated at those times.
    """

    cos: FloatArray
    sin: FloatArray


def earth_rotation(jd: ArrayLike, fr: ArrayLike) -> EarthRotation:
    """The rotation TEME → ITRF at two-part UTC Julian dates (GMST 1982, UT1 = UTC)."""
    theta = gmst82_rad(jd, fr)
    return EarthRotation(np.cos(theta), np.sin(theta))


def teme_to_itrf(
    r_teme_km: Sequence[FloatArray] | FloatArray,
    v_teme_km_s: Sequence[FloatArray] | FloatArray,
    rotation: EarthRotation,
    *,
    out: tuple[FloatArray, FloatArray] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Rotate TEME states to ITRF (no polar motion); the one TEME → ITRF of groundplane.

    Component-first: ``r_teme_km[i]`` and ``v_teme_km_s[i]`` (i = x, y, z) are arrays of any
    shape that broadcasts with ``rotation``'s arrays — a ``(3, ...)`` array, a tuple of three
    arrays, or ``np.moveaxis(states, -1, 0)`` of ``(..., 3)`` states (a view, no copy). Returns
    ``(r_itrf_km, v_itrf_km_s)``, each ``(3, ...)``; the ITRF velocity includes the
    Earth-rotation term ``−ω × r``.

    ``out`` (two ``(3, ...)`` float64 arrays, not overlapping the inputs) receives the result
    instead of fresh arrays: loops over chunks reuse their buffers this way.
    """
    c, s = rotation.cos, rotation.sin
    rx, ry, rz = r_teme_km[0], r_teme_km[1], r_teme_km[2]
    vx, vy, vz = v_teme_km_s[0], v_teme_km_s[1], v_teme_km_s[2]
    if out is None:
        shape = (3, *np.broadcast_shapes(np.shape(rx), np.shape(c)))
        r_out: FloatArray = np.empty(shape)
        v_out: FloatArray = np.empty(shape)
    else:
        r_out, v_out = out
    x, y = r_out[0], r_out[1]
    np.multiply(c, rx, out=x)
    x += s * ry
    np.multiply(c, ry, out=y)
    y -= s * rx
    r_out[2] = rz
    w = EARTH_ROTATION_RAD_S
    vxe, vye = v_out[0], v_out[1]
    np.multiply(c, vx, out=vxe)
    vxe += s * vy
    vxe += w * y
    np.multiply(c, vy, out=vye)
    vye -= s * vx
    vye -= w * x
    v_out[2] = vz
    return r_out, v_out


# --------------------------------------------------------------------------------------------
# Sites


def geodetic_to_ecef_km(lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike) -> FloatArray:
    """ECEF (= ITRF) position on the WGS84 ellipsoid, km, shape ``(..., 3)``."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    alt_km = np.asarray(alt_m, dtype=np.float64) / 1000.0
    sin_lat = np.sin(lat)
    n = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    x = (n + alt_km) * np.cos(lat) * np.cos(lon)
    y = (n + alt_km) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt_km) * sin_lat
    return np.stack((x, y, z), axis=-1)


class SiteFrames:
    """Precomputed topocentric frames of ``K`` sites, plus their azimuth-dependent thresholds.

    ``ecef_km`` is ``(K, 3)``; ``enu`` is ``(K, 3, 3)`` whose rows are the east, north and up unit
    vectors (ECEF components). ``min_threshold_deg`` is the lowest threshold of each site over all
    azimuths; ``has_mask`` says whether the threshold depends on azimuth.
    """

    def __init__(self, sites: Sequence[Site]) -> None:
        site_list = list(sites)
        for position, site in enumerate(site_list):
            if not isinstance(site, Site):
                raise InvalidArgument(
                    f"site {position}: expected a Site, got {type(site).__name__}"
                )
        ids = [s.id for s in site_list]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("site ids must be unique within one request")
        self.sites: tuple[Site, ...] = tuple(site_list)
        self.ids: tuple[str, ...] = tuple(ids)
        lat = np.array([s.lat_deg for s in site_list], dtype=np.float64)
        lon = np.array([s.lon_deg for s in site_list], dtype=np.float64)
        alt = np.array([s.alt_m for s in site_list], dtype=np.float64)
        self.ecef_km: FloatArray = geodetic_to_ecef_km(lat, lon, alt).reshape(-1, 3)
        la, lo = np.radians(lat), np.radians(lon)
        east = np.stack((-np.sin(lo), np.cos(lo), np.zeros_like(lo)), axis=-1)
        north = np.stack((-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)), axis=-1)
        up = np.stack((np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)), axis=-1)
        self.enu: FloatArray = np.stack((east, north, up), axis=1).reshape(-1, 3, 3)
        self.min_elevation_deg: FloatArray = np.array(
            [s.min_elevation_deg for s in site_list], dtype=np.float64
        )
        self.has_mask: NDArray[np.bool_] = np.array(
            [
                (not s.mask.is_empty) and max(e for _, e in s.mask.points) > s.min_elevation_deg
                for s in site_list
            ],
            dtype=bool,
        )
        self.min_threshold_deg: FloatArray = np.array(
            [
                max(s.min_elevation_deg, min(e for _, e in s.mask.points))
                if not s.mask.is_empty
                else max(s.min_elevation_deg, 0.0)
                for s in site_list
            ],
            dtype=np.float64,
        )
        #: Threshold of sites whose threshold does not depend on azimuth (else their minimum).
        self.flat_threshold_deg: FloatArray = np.array(
            [float(s.threshold_deg(0.0)) for s in site_list], dtype=np.float64
        )
        # One table for every masked site: keys are site_index * 1000 + azimuth so that a single
        # searchsorted finds the segment of any (site, azimuth) pair.
        keys: list[FloatArray] = []
        values: list[FloatArray] = []
        for position, site in enumerate(site_list):
            if site.mask.is_empty:
                az = np.array([0.0, 360.0])
                el = np.zeros(2)
            else:
                pts = site.mask.points
                az0 = np.array([p[0] for p in pts])
                el0 = np.array([p[1] for p in pts])
                az = np.concatenate(([az0[-1] - 360.0], az0, [az0[0] + 360.0]))
                el = np.concatenate(([el0[-1]], el0, [el0[0]]))
            keys.append(az + 1000.0 * position)
            values.append(el)
        self._keys = np.concatenate(keys) if keys else np.zeros(0)
        self._values = np.concatenate(values) if values else np.zeros(0)

    def __len__(self) -> int:
        return len(self.ids)

    def threshold_deg(self, site_index: ArrayLike, azimuth_deg: ArrayLike) -> FloatArray:
        """``max(min elevation, mask(azimuth))`` for (site, azimuth) pairs (broadcast)."""
        thr, _ = self.threshold_and_slope(site_index, azimuth_deg)
        return thr

    def threshold_and_slope(
        self, site_index: ArrayLike, azimuth_deg: ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Threshold (deg) and its slope d(threshold)/d(azimuth) (deg/deg) at the pairs."""
        site_arr, az_arr = np.broadcast_arrays(
            np.asarray(site_index, dtype=np.intp), np.asarray(azimuth_deg, dtype=np.float64)
        )
        key = np.mod(az_arr, 360.0) + 1000.0 * site_arr
        hi = np.searchsorted(self._keys, key, side="right")
        hi = np.clip(hi, 1, self._keys.size - 1)
        lo = hi - 1
        k0, k1 = self._keys[lo], self._keys[hi]
        v0, v1 = self._values[lo], self._values[hi]
        width = np.where(k1 > k0, k1 - k0, 1.0)
        slope = (v1 - v0) / width
        thr = v0 + slope * (key - k0)
        # Where min elevation dominates the mask segment, clip and flatten.
        floor = self.min_elevation_deg[site_arr]
        below = thr <= floor
        return np.where(below, floor, thr), np.where(below, 0.0, slope)


def ecef_to_geodetic(r_km: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """WGS84 geodetic latitude, longitude (degrees, [-180, 180)) and height (km) of ``(..., 3)``.

    Fixed-point iteration on the latitude; the height uses the form that stays exact at the
    poles (``p cos φ + z sin φ − a √(1 − e² sin² φ)``). Six rounds reach ≪ 1 mm below GEO.
    """
    x, y, z = r_km[..., 0], r_km[..., 1], r_km[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(6):
        sin_lat = np.sin(lat)
        n = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
        lat = np.arctan2(z + WGS84_E2 * n * sin_lat, p)
    sin_lat = np.sin(lat)
    height = (
        p * np.cos(lat) + z * sin_lat - WGS84_A_KM * np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    )
    return np.degrees(lat), wrap_lon_deg(np.degrees(lon)), height


def wrap_lon_deg(lon_deg: ArrayLike) -> FloatArray:
    """Longitudes in [-180, 180)."""
    return np.asarray(np.mod(np.asarray(lon_deg, dtype=np.float64) + 180.0, 360.0) - 180.0)


def as_site_frames(sites: Sequence[Site] | SiteFrames) -> SiteFrames:
    return sites if isinstance(sites, SiteFrames) else SiteFrames(sites)


# --------------------------------------------------------------------------------------------
# Look angles


@dataclass(frozen=True)
class LookAngles:
    """Look angles of ``S`` satellites from ``K`` sites at ``T`` times.

    ``azimuth_deg``, ``elevation_deg``, ``range_km``, ``range_rate_km_s`` are ``(S, K, T)``
    float64 (range rate positive when receding). ``error_code`` is ``(S, T)`` uint8; where it is
    non-zero every value of that satellite and time is NaN.
    """

    satellite_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    azimuth_deg: FloatArray
    elevation_deg: FloatArray
    range_km: FloatArray
    range_rate_km_s: FloatArray
    error_code: CodeArray

    @property
    def ok(self) -> NDArray[np.bool_]:
        """``(S, T)``: True where SGP4 succeeded."""
        return np.asarray(self.error_code == 0, dtype=bool)

    def errors(self) -> dict[str, tuple[int, str]]:
        """``{satellite id: (first error code, reason)}`` for satellites with any error."""
        out: dict[str, tuple[int, str]] = {}
        for sat in np.flatnonzero(self.error_code.any(axis=1)):
            codes = self.error_code[sat]
            code = int(codes[np.flatnonzero(codes)[0]])
            out[self.satellite_ids[int(sat)]] = (code, error_reason(code))
        return out


_CHUNK_POINTS = 4_096


def look_angles(  # noqa: PLR0915 - one vectorised pass (propagate, rotate, chunked topocentric)
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    jd: ArrayLike,
    fr: ArrayLike,
    *,
    out: LookAngles | None = None,
) -> LookAngles:
    """Azimuth, elevation, range and range rate of every satellite from every site at every time.

    ``out`` (a previous result of the same shape) is overwritten instead of allocating ≈ 32 bytes
    per satellite-site-time afresh: streams of ticks reuse their buffers this way.

    One SGP4 call for ``len(batch) × T``; the topocentric transform then runs over chunks of about
    16k satellite-times (bounded scratch memory) with one matrix product per chunk for all sites.
    Output arrays are ``(S, K, T)``.
    """
    frames = as_site_frames(sites)
    jd_arr, fr_arr = _check_times(jd, fr)
    prop = propagate(batch, jd_arr, fr_arr)
    n_sat, n_time, n_site = len(batch), jd_arr.size, len(frames)
    shape = (n_sat, n_site, n_time)
    if out is not None:
        buffers = (out.azimuth_deg, out.elevation_deg, out.range_km, out.range_rate_km_s)
        if any(b.shape != shape or b.dtype != np.float64 for b in buffers):
            raise InvalidArgument(
                f"out must hold float64 arrays of shape {shape} (satellites, sites, times), got "
                f"{out.azimuth_deg.shape}"
            )
        az_out, el_out, rng_out, rr_out = buffers
    else:
        az_out, el_out, rng_out, rr_out = (np.empty(shape) for _ in range(4))
    if n_sat and n_site and n_time:
        rotation = earth_rotation(jd_arr, fr_arr)
        # Rows: -east, -north, up of each site (east and north negated so that atan2 lands in
        # [-π, π) and adding π gives the azimuth in [0, 2π)), with the constant offset
        # -rows·site folded into a fourth column that multiplies a row of ones.
        rows = frames.enu.copy()
        rows[:, 0:2, :] *= -1.0
        offsets = np.einsum("kij,kj->ki", rows, frames.ecef_km)
        transform = np.concatenate((rows, -offsets[:, :, None]), axis=2).reshape(3 * n_site, 4)
        site_ecef = frames.ecef_km
        per_chunk = max(1, _CHUNK_POINTS // n_time)
        to_deg = 180.0 / math.pi
        pos = np.empty((4, per_chunk, n_time))
        vel = np.empty((3, per_chunk, n_time))
        p_dot_v = np.empty((per_chunk, n_time))
        scratch = np.empty((per_chunk, n_time))
        for s0 in range(0, n_sat, per_chunk):
            s1 = min(n_sat, s0 + per_chunk)
            cs = s1 - s0
            r = prop.r_teme_km[s0:s1]
            v = prop.v_teme_km_s[s0:s1]
            p4 = pos[:, :cs]
            v3 = vel[:, :cs]
            pv = p_dot_v[:cs]
            tmp = scratch[:cs]
            # TEME → ITRF for this chunk of satellites, component-major, into the buffers.
            teme_to_itrf(np.moveaxis(r, -1, 0), np.moveaxis(v, -1, 0), rotation, out=(p4[:3], v3))
            p4[3] = 1.0
            p_flat = (
                p4.reshape(4, -1) if cs == per_chunk else np.ascontiguousarray(p4).reshape(4, -1)
            )
            v_flat = (
                v3.reshape(3, -1) if cs == per_chunk else np.ascontiguousarray(v3).reshape(3, -1)
            )
            topo = (transform @ p_flat).reshape(3 * n_site, cs, n_time)
            site_dot_v = (site_ecef @ v_flat).reshape(n_site, cs, n_time)
            np.multiply(p4[0], v3[0], out=pv)
            np.multiply(p4[1], v3[1], out=tmp)
            pv += tmp
            np.multiply(p4[2], v3[2], out=tmp)
            pv += tmp
            for k in range(n_site):
                e = topo[3 * k]
                n = topo[3 * k + 1]
                u = topo[3 * k + 2]
                rng = rng_out[s0:s1, k, :]
                np.multiply(e, e, out=tmp)
                np.multiply(n, n, out=rng)
                tmp += rng
                np.multiply(u, u, out=rng)
                tmp += rng
                np.sqrt(tmp, out=tmp)
                rng[...] = tmp
                rr = rr_out[s0:s1, k, :]
                np.subtract(pv, site_dot_v[k], out=rr)
                rr /= tmp
                el = el_out[s0:s1, k, :]
                np.divide(u, tmp, out=el)
                np.arcsin(el, out=el)
                el *= to_deg
                az = az_out[s0:s1, k, :]
                np.arctan2(e, n, out=az)
                az *= to_deg
                az += 180.0
    return LookAngles(
        satellite_ids=batch.ids,
        site_ids=frames.ids,
        azimuth_deg=az_out,
        elevation_deg=el_out,
        range_km=rng_out,
        range_rate_km_s=rr_out,
        error_code=prop.error_code,
    )


# --------------------------------------------------------------------------------------------
# Doppler


def doppler_downlink_hz(frequency_hz: ArrayLike, range_rate_km_s: ArrayLike) -> FloatArray:
    """Frequency received on the ground from a satellite transmitting ``frequency_hz``:
    ``f · (1 − ṙ/c)`` (first order; ``ṙ`` > 0 when the satellite recedes)."""
    return np.asarray(frequency_hz, dtype=np.float64) * (
        1.0 - np.asarray(range_rate_km_s, dtype=np.float64) / SPEED_OF_LIGHT_KM_S
    )


def doppler_uplink_hz(frequency_hz: ArrayLike, range_rate_km_s: ArrayLike) -> FloatArray:
    """Frequency the ground must transmit so the satellite receives ``frequency_hz``:
    ``f · (1 + ṙ/c)``."""
    return np.asarray(frequency_hz, dtype=np.float64) * (
        1.0 + np.asarray(range_rate_km_s, dtype=np.float64) / SPEED_OF_LIGHT_KM_S
    )
