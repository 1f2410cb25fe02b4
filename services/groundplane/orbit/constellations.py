"""Synthetic constellations: Walker delta shells and sun-synchronous clusters as element sets.

Altitude
    ``altitude_km`` is the *mean altitude*: the mean geocentric distance over one orbit, as SGP4
    propagates it, minus the WGS72 equatorial radius (6378.135 km). The mean motion is derived
    from it — first by inverting SGP4's own recovery of the mean semi-major axis from the Kozai
    mean motion, then refined against one propagated orbit — and checked: after generating, one
    satellite is propagated over an orbit and its mean altitude must lie within
    :data:`ALTITUDE_TOLERANCE_KM` of the request, or generation fails.

Orbits are circular (eccentricity 0, argument of perigee 0) and drag-free unless ``bstar`` is
given; the epoch is passed in.

Catalog ids
    Synthetic satellites get ids ``<prefix>-<n>`` with ``n`` counted from 1 and zero-padded to
    at least four digits: ``walker-0001`` … ``walker-1584``, ``sso-0001``. The prefix defaults to
    the constellation kind; pass ``id_prefix`` to keep several synthetic constellations apart in
    one catalog. These ids are not catalog numbers, so they never collide with real satellites
    and cannot be exported as TLE (OMM keeps them).

Specification strings (:func:`parse_constellation_spec`)::

    walker:<total>/<planes>/<phasing>@<altitude>km:<inclination>     walker:1584/72/1@550km:53
    sso:<count>@<altitude>km:<ltan hours>                             sso:12@550km:10.5

The ``km`` unit is optional; the inclination may end in ``deg`` and the local time of the
ascending node (LTAN, mean solar time, hours in [0, 24)) in ``h``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.propagation import gstime

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number
from groundplane.orbit.elements import XPDOTP, ElementSet

#: WGS72 constants, as SGP4 uses them.
EARTH_RADIUS_KM = 6378.135
EARTH_MU_KM3_S2 = 398600.8
EARTH_J2 = 0.001082616
_XKE = 60.0 / math.sqrt(EARTH_RADIUS_KM**3 / EARTH_MU_KM3_S2)  # sqrt(mu) in earth radii^1.5/min

#: Rate at which a sun-synchronous node turns: 360° per tropical year.
SUN_SYNCHRONOUS_RATE_RAD_S = 2.0 * math.pi / (365.2421897 * 86_400.0)
#: How far the propagated mean altitude may be from the request.
ALTITUDE_TOLERANCE_KM = 0.5
MIN_ALTITUDE_KM = 150.0
MAX_ALTITUDE_KM = 50_000.0
MAX_SATELLITES = 100_000
_SAMPLES_PER_ORBIT = 720

WALKER_GRAMMAR = (
    "walker:<total>/<planes>/<phasing>@<altitude>km:<inclination_deg> "
    "(e.g. walker:1584/72/1@550km:53)"
)
SSO_GRAMMAR = "sso:<count>@<altitude>km:<ltan_hours> (e.g. sso:12@550km:10.5)"

_NUM = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_WALKER_RE = re.compile(
    rf"walker:([0-9]+)/([0-9]+)/([0-9]+)@{_NUM}(?:km)?:{_NUM}(?:deg|°)?", re.IGNORECASE
)
_SSO_RE = re.compile(rf"sso:([0-9]+)@{_NUM}(?:km)?:{_NUM}h?", re.IGNORECASE)


@dataclass(frozen=True)
class WalkerSpec:
    """A Walker delta pattern ``total/planes/phasing`` at ``altitude_km`` and ``inclination_deg``.

    Planes are spread evenly in right ascension over 360°, ``total/planes`` satellites evenly in
    each plane; satellite ``k`` of plane ``j`` has mean anomaly
    ``360·k/(total/planes) + 360·phasing·j/total``.
    """

    total: int
    planes: int
    phasing: int
    altitude_km: float
    inclination_deg: float

    def __post_init__(self) -> None:
        for name in ("total", "planes", "phasing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument(f"walker {name} must be a whole number, got {value!r}")
        if not 1 <= self.total <= MAX_SATELLITES:
            raise InvalidArgument(
                f"walker total must be 1 … {MAX_SATELLITES} satellites, got {self.total}"
            )
        if not 1 <= self.planes <= self.total:
            raise InvalidArgument(
                f"walker planes must be 1 … total ({self.total}), got {self.planes}"
            )
        if self.total % self.planes:
            raise InvalidArgument(
                f"walker total {self.total} must be divisible by planes {self.planes} (each "
                f"plane holds total/planes satellites); planes that divide {self.total} near "
                f"{self.planes}: {_nearby_divisors(self.total, self.planes)}"
            )
        if not 0 <= self.phasing < self.planes:
            raise InvalidArgument(
                f"walker phasing must be 0 … planes-1 ({self.planes - 1}), got {self.phasing}"
            )
        _check_altitude(self.altitude_km)
        inclination = finite_number("inclination_deg", self.inclination_deg)
        if not 0.0 <= inclination <= 180.0:
            raise InvalidArgument(f"inclination_deg must be in [0, 180], got {inclination}")

    @property
    def per_plane(self) -> int:
        return self.total // self.planes

    def describe(self) -> str:
        return f"walker:{self.total}/{self.planes}/{self.phasing}@{self.altitude_km:g}km:" + (
            f"{self.inclination_deg:g}"
        )


@dataclass(frozen=True)
class SunSynchronousSpec:
    """``count`` satellites evenly spaced in one sun-synchronous plane.

    The inclination follows from the J2 condition (the node turns 360° per tropical year); the
    node sits at local mean solar time ``ltan_hours`` at the epoch.
    """

    count: int
    altitude_km: float
    ltan_hours: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise InvalidArgument(f"sso count must be a whole number, got {self.count!r}")
        if not 1 <= self.count <= MAX_SATELLITES:
            raise InvalidArgument(f"sso count must be 1 … {MAX_SATELLITES}, got {self.count}")
        _check_altitude(self.altitude_km)
        ltan = finite_number("ltan_hours", self.ltan_hours)
        if not 0.0 <= ltan < 24.0:
            raise InvalidArgument(
                f"ltan_hours (local time of the ascending node) must be in [0, 24), got {ltan}"
            )
        sun_synchronous_inclination_deg(self.altitude_km)  # raises when no SSO exists

    def describe(self) -> str:
        return f"sso:{self.count}@{self.altitude_km:g}km:{self.ltan_hours:g}"


ConstellationSpec = WalkerSpec | SunSynchronousSpec


def _nearby_divisors(total: int, planes: int) -> str:
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    divisors.sort(key=lambda d: (abs(d - planes), d))
    return ", ".join(str(d) for d in sorted(divisors[:4]))


def _check_altitude(altitude_km: float) -> None:
    altitude = finite_number("altitude_km", altitude_km)
    if not MIN_ALTITUDE_KM <= altitude <= MAX_ALTITUDE_KM:
        raise InvalidArgument(
            f"altitude_km must be {MIN_ALTITUDE_KM:g} … {MAX_ALTITUDE_KM:g} km (below ~150 km an "
            f"orbit decays within hours), got {altitude}"
        )


# ---------------------------------------------------------------------------- orbit physics


def _sgp4_mean_axis_er(no_kozai_rad_min: float, inclination_rad: float) -> float:
    """SGP4's mean semi-major axis (earth radii) for a circular orbit (its ``initl`` steps)."""
    cos_i = math.cos(inclination_rad)
    ak = (_XKE / no_kozai_rad_min) ** (2.0 / 3.0)
    d1 = 0.75 * EARTH_J2 * (3.0 * cos_i * cos_i - 1.0)
    delta = d1 / (ak * ak)
    adel = ak * (1.0 - delta * delta - delta * (1.0 / 3.0 + 134.0 * delta * delta / 81.0))
    delta = d1 / (adel * adel)
    return float((_XKE / (no_kozai_rad_min / (1.0 + delta))) ** (2.0 / 3.0))


def _circular_satrec(
    mean_motion_rev_per_day: float, inclination_deg: float, epoch_days_1949: float
) -> Satrec:
    satrec = Satrec()
    satrec.sgp4init(
        WGS72,
        "i",
        0,
        epoch_days_1949,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        math.radians(inclination_deg),
        0.0,
        mean_motion_rev_per_day / XPDOTP,
        0.0,
    )
    return satrec


def _mean_altitude_of_satrec(satrec: Satrec, mean_motion_rev_per_day: float) -> float:
    period_days = 1.0 / mean_motion_rev_per_day
    offsets = np.arange(_SAMPLES_PER_ORBIT, dtype=np.float64) * (period_days / _SAMPLES_PER_ORBIT)
    jd = np.full_like(offsets, satrec.jdsatepoch)
    fr = satrec.jdsatepochF + offsets
    errors, positions, _ = satrec.sgp4_array(jd, fr)
    if np.any(errors):
        raise InvalidArgument(
            f"SGP4 could not propagate a circular orbit of {mean_motion_rev_per_day} rev/day "
            f"(error codes {sorted(set(errors.tolist()))}); choose a higher altitude"
        )
    radius_km = np.linalg.norm(positions, axis=1)
    return float(radius_km.mean()) - EARTH_RADIUS_KM


def mean_altitude_km(elements: ElementSet) -> float:
    """Mean geocentric distance over one orbit from the epoch, minus the equatorial radius."""
    return _mean_altitude_of_satrec(elements.to_satrec(), elements.mean_motion_rev_per_day)


def mean_motion_for_altitude(altitude_km: float, inclination_deg: float, epoch: datetime) -> float:
    """Kozai mean motion (rev/day) of a circular orbit whose mean altitude is ``altitude_km``.

    The epoch matters only above ~5900 km, where SGP4's deep-space terms (Sun and Moon) apply.
    """
    _check_altitude(altitude_km)
    jd, fraction = _epoch_parts(epoch)
    epoch_days_1949 = (jd - 2433281.5) + fraction
    inclination_rad = math.radians(inclination_deg)
    target_er = (EARTH_RADIUS_KM + altitude_km) / EARTH_RADIUS_KM
    no_kozai = _XKE / target_er**1.5
    for _ in range(8):  # SGP4's mean axis: converges to 1e-12 in a few steps
        no_kozai *= (_sgp4_mean_axis_er(no_kozai, inclination_rad) / target_er) ** 1.5
    mean_motion = no_kozai * XPDOTP
    # Short-period terms move the mean radius a few km from the mean axis: refine on an orbit.
    for _ in range(4):
        measured_km = _mean_altitude_of_satrec(
            _circular_satrec(mean_motion, inclination_deg, epoch_days_1949), mean_motion
        )
        error_km = measured_km - altitude_km
        if abs(error_km) < 1e-4:
            break
        ratio = (EARTH_RADIUS_KM + measured_km) / (EARTH_RADIUS_KM + altitude_km)
        mean_motion *= ratio**1.5
    return float(mean_motion)


def sun_synchronous_inclination_deg(altitude_km: float) -> float:
    """Inclination of a circular sun-synchronous orbit at ``altitude_km`` (J2 condition).

    ``dΩ/dt = −(3/2)·J2·(R/a)²·n·cos i`` equals 360° per tropical year, with ``n = √(μ/a³)``.
    """
    _check_altitude(altitude_km)
    a_km = EARTH_RADIUS_KM + altitude_km
    n_rad_s = math.sqrt(EARTH_MU_KM3_S2 / a_km**3)
    cos_i = -SUN_SYNCHRONOUS_RATE_RAD_S / (1.5 * EARTH_J2 * (EARTH_RADIUS_KM / a_km) ** 2 * n_rad_s)
    if cos_i < -1.0:
        raise InvalidArgument(
            f"no sun-synchronous orbit exists at {altitude_km:g} km: J2 cannot turn the node "
            "fast enough above ~5975 km; choose a lower altitude"
        )
    return math.degrees(math.acos(cos_i))


def _epoch_parts(epoch: datetime) -> tuple[float, float]:
    if not isinstance(epoch, datetime) or epoch.tzinfo is None:
        raise InvalidArgument(
            f"epoch must be a timezone-aware UTC datetime (e.g. 2026-08-15T00:00:00Z), "
            f"got {epoch!r}"
        )
    utc = epoch.astimezone(UTC)
    jd = utc.date().toordinal() + 1721424.5
    seconds = utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1e6
    return jd, seconds / 86_400.0


def raan_for_ltan_deg(ltan_hours: float, epoch: datetime) -> float:
    """Right ascension (TEME) of a node at local mean solar time ``ltan_hours`` at ``epoch``.

    Local mean time at right ascension α is ``UT + (α − GMST)/15°`` hours, so
    ``α = GMST + 15°·(LTAN − UT)``.
    """
    jd, fraction = _epoch_parts(epoch)
    gmst_deg = math.degrees(float(gstime(jd + fraction)))
    return (gmst_deg + 15.0 * (ltan_hours - 24.0 * fraction)) % 360.0


# ---------------------------------------------------------------------------- generation


def _ids(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(count)))
    return [f"{prefix}-{index:0{width}d}" for index in range(1, count + 1)]


def _check_generated(first: ElementSet, altitude_km: float) -> None:
    measured = mean_altitude_km(first)
    if abs(measured - altitude_km) > ALTITUDE_TOLERANCE_KM:
        raise InvalidArgument(
            f"generated mean motion {first.mean_motion_rev_per_day} rev/day gives a mean "
            f"altitude of {measured:.3f} km, not the requested {altitude_km:g} km "
            f"(tolerance {ALTITUDE_TOLERANCE_KM} km)"
        )


def walker_delta(
    spec: WalkerSpec,
    epoch: datetime,
    *,
    id_prefix: str = "walker",
    bstar: float = 0.0,
) -> list[ElementSet]:
    """The element sets of a Walker delta constellation at ``epoch``, plane by plane."""
    _epoch_parts(epoch)
    mean_motion = mean_motion_for_altitude(spec.altitude_km, spec.inclination_deg, epoch)
    ids = _ids(id_prefix, spec.total)
    label = f"WALKER {spec.total}/{spec.planes}/{spec.phasing}"
    sets: list[ElementSet] = []
    for plane in range(spec.planes):
        raan = (360.0 * plane / spec.planes) % 360.0
        for slot in range(spec.per_plane):
            anomaly = (
                360.0 * slot / spec.per_plane + 360.0 * spec.phasing * plane / spec.total
            ) % 360.0
            sets.append(
                ElementSet(
                    catalog_id=ids[len(sets)],
                    name=f"{label} P{plane + 1:02d} S{slot + 1:02d}",
                    epoch=epoch,
                    mean_motion_rev_per_day=mean_motion,
                    eccentricity=0.0,
                    inclination_deg=float(spec.inclination_deg),
                    raan_deg=raan,
                    arg_of_pericenter_deg=0.0,
                    mean_anomaly_deg=anomaly,
                    bstar=bstar,
                )
            )
    _check_generated(sets[0], spec.altitude_km)
    return sets


def sun_synchronous_cluster(
    spec: SunSynchronousSpec,
    epoch: datetime,
    *,
    id_prefix: str = "sso",
    bstar: float = 0.0,
) -> list[ElementSet]:
    """``spec.count`` satellites evenly spaced in one sun-synchronous plane at ``epoch``."""
    _epoch_parts(epoch)
    inclination = sun_synchronous_inclination_deg(spec.altitude_km)
    mean_motion = mean_motion_for_altitude(spec.altitude_km, inclination, epoch)
    raan = raan_for_ltan_deg(spec.ltan_hours, epoch)
    ids = _ids(id_prefix, spec.count)
    label = f"SSO {spec.altitude_km:g}KM LTAN {spec.ltan_hours:g}H"
    sets = [
        ElementSet(
            catalog_id=ids[index],
            name=f"{label} S{index + 1:02d}",
            epoch=epoch,
            mean_motion_rev_per_day=mean_motion,
            eccentricity=0.0,
            inclination_deg=inclination,
            raan_deg=raan,
            arg_of_pericenter_deg=0.0,
            mean_anomaly_deg=(360.0 * index / spec.count) % 360.0,
            bstar=bstar,
        )
        for index in range(spec.count)
    ]
    _check_generated(sets[0], spec.altitude_km)
    return sets


def parse_constellation_spec(text: str) -> ConstellationSpec:
    """A constellation from its specification string (grammar in the module docstring)."""
    if not isinstance(text, str):
        raise InvalidArgument(
            f"expected a constellation spec such as {WALKER_GRAMMAR} or {SSO_GRAMMAR}, got {text!r}"
        )
    cleaned = "".join(text.split())
    kind = cleaned.split(":", 1)[0].lower()
    if kind == "walker":
        match = _WALKER_RE.fullmatch(cleaned)
        if match is None:
            raise InvalidArgument(f"expected {WALKER_GRAMMAR}, got {text!r}")
        total, planes, phasing, altitude, inclination = match.groups()
        return WalkerSpec(
            int(total), int(planes), int(phasing), float(altitude), float(inclination)
        )
    if kind == "sso":
        match = _SSO_RE.fullmatch(cleaned)
        if match is None:
            raise InvalidArgument(f"expected {SSO_GRAMMAR}, got {text!r}")
        count, altitude, ltan = match.groups()
        return SunSynchronousSpec(int(count), float(altitude), float(ltan))
    raise InvalidArgument(
        f"expected a constellation spec starting 'walker:' or 'sso:' — {WALKER_GRAMMAR}, or "
        f"{SSO_GRAMMAR} — got {text!r}"
    )


def generate(
    spec: ConstellationSpec | str,
    epoch: datetime,
    *,
    id_prefix: str | None = None,
    bstar: float = 0.0,
) -> list[ElementSet]:
    """Element sets for ``spec`` (a spec object or string) at ``epoch``."""
    parsed = parse_constellation_spec(spec) if isinstance(spec, str) else spec
    if isinstance(parsed, WalkerSpec):
        return walker_delta(parsed, epoch, id_prefix=id_prefix or "walker", bstar=bstar)
    return sun_synchronous_cluster(parsed, epoch, id_prefix=id_prefix or "sso", bstar=bstar)
