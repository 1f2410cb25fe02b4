"""How a ground user reaches a ground station: terrestrial backhaul, or the user's own terminal.

A user on the ground sends its request over terrestrial networks to a ground station, which
carries it up the space link. The backhaul delay is modelled from the great-circle distance:

    delay_s = fixed_delay_s + distance_km × route_factor / fibre_speed_km_s

* ``fibre_speed_km_s`` — light in silica fibre travels at about c / 1.468 ≈ 2/3 c; groundplane
  uses 2/3 × 299 792.458 km/s = 199 861.6 km/s.
* ``route_factor`` — fibre routes are longer than the great circle (cables follow coasts, roads
  and landing points); 1.5 is a typical ratio of fibre path to geodesic over continental and
  trans-oceanic distances.
* ``fixed_delay_s`` — switching, queueing and serialisation along the path (default 1 ms).

Distances use the haversine formula on a sphere of the IUGG mean Earth radius (6 371.0088 km);
its error against the WGS84 geodesic is below 0.5 %, well under the uncertainty of the route
factor. A user with its own terminal *is* a site: it talks to satellites directly and has no
backhaul (delay 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number

SPEED_OF_LIGHT_KM_S = 299_792.458
EARTH_MEAN_RADIUS_KM = 6_371.0088
FIBRE_SPEED_KM_S = SPEED_OF_LIGHT_KM_S * 2.0 / 3.0
DEFAULT_ROUTE_FACTOR = 1.5
DEFAULT_FIXED_DELAY_S = 0.001

FloatArray = npt.NDArray[np.float64]


def check_lat_lon(lat_deg: float, lon_deg: float, what: str = "user") -> tuple[float, float]:
    """Validated ``(lat_deg, lon_deg)``; longitude normalised to [-180, 180)."""
    lat = finite_number(f"{what} lat_deg", lat_deg)
    lon = finite_number(f"{what} lon_deg", lon_deg)
    if not -90.0 <= lat <= 90.0:
        raise InvalidArgument(f"{what} lat_deg must be in [-90, 90] degrees, got {lat}")
    if not -180.0 <= lon <= 360.0:
        raise InvalidArgument(f"{what} lon_deg must be in [-180, 360] degrees, got {lon}")
    if lon >= 180.0:
        lon -= 360.0
    return lat, lon


def great_circle_km(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    """Haversine distance between two points on the mean-radius sphere, km."""
    phi1 = math.radians(lat1_deg)
    phi2 = math.radians(lat2_deg)
    dphi = phi2 - phi1
    dlam = math.radians(lon2_deg - lon1_deg)
    h = math.sin(dphi / 2.0) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2.0) ** 2
    return 2.0 * EARTH_MEAN_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def unit_vectors(lat_deg: FloatArray, lon_deg: FloatArray) -> FloatArray:
    """``(N, 3)`` unit vectors of points on the sphere (for many distances at once)."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def great_circle_km_many(lat_deg: float, lon_deg: float, units: FloatArray) -> FloatArray:
    """Distances from one point to every point of ``units`` (from :func:`unit_vectors`), km.

    Uses the chord length (|a − b| = 2 sin(θ/2)), which stays accurate for short distances where
    the arccos of a dot product would not.
    """
    point = unit_vectors(np.array([lat_deg]), np.array([lon_deg]))[0]
    chord = np.linalg.norm(units - point, axis=-1)
    distance: FloatArray = 2.0 * EARTH_MEAN_RADIUS_KM * np.arcsin(np.minimum(1.0, chord / 2.0))
    return distance


@dataclass(frozen=True, slots=True)
class BackhaulModel:
    """Terrestrial backhaul from users to stations (see the module docstring for the model)."""

    fibre_speed_km_s: float = FIBRE_SPEED_KM_S
    route_factor: float = DEFAULT_ROUTE_FACTOR
    fixed_delay_s: float = DEFAULT_FIXED_DELAY_S

    def __post_init__(self) -> None:
        speed = finite_number("fibre_speed_km_s", self.fibre_speed_km_s)
        factor = finite_number("route_factor", self.route_factor)
        fixed = finite_number("fixed_delay_s", self.fixed_delay_s)
        if not 0.0 < speed <= SPEED_OF_LIGHT_KM_S:
            raise InvalidArgument(
                f"fibre_speed_km_s must be in (0, {SPEED_OF_LIGHT_KM_S}] km/s, got {speed}"
            )
        if factor < 1.0:
            raise InvalidArgument(
                f"route_factor is fibre path / great circle and must be ≥ 1, got {factor}"
            )
        if fixed < 0.0:
            raise InvalidArgument(f"fixed_delay_s must be ≥ 0 seconds, got {fixed}")

    def delay_s(self, distance_km: float) -> float:
        """One-way backhaul delay over ``distance_km`` of great circle."""
        return self.fixed_delay_s + distance_km * self.route_factor / self.fibre_speed_km_s


@dataclass(frozen=True, slots=True)
class StationAccess:
    """How one user reaches one station: distance and one-way backhaul delay."""

    station_id: str
    distance_km: float
    delay_s: float
