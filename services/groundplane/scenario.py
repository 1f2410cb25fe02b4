"""The built-in scenario `groundplane up` runs when given no files.

A synthetic Walker constellation, a set of well-known ground-station locations (rounded public
coordinates, good to a few hundred metres: enough for visibility, not for pointing a dish),
ground users in cities that reach those stations over terrestrial backhaul, one tenant with a
documented demo token, one synthetic model, and a routing policy whose choices can be checked
from geometry alone (the highest satellite wins; sessions stick to their satellite).

The default is sized for a 2-core laptop: 96 satellites (one node agent each), ten stations and
a few requests per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from groundplane.node.backends import SyntheticModelSpec
from groundplane.orbit.sites import Site
from groundplane.routing.policy import PolicyKind, RoutingPolicy, Stickiness

DEFAULT_CONSTELLATION = "walker:96/8/1@550km:53"
DEFAULT_MIN_ELEVATION_DEG = 10.0
DEFAULT_SPEED = 60.0
"""Simulated seconds per wall second."""
DEFAULT_RATE_RPS = 4.0
"""Stateless requests per wall second of the built-in load."""

DEFAULT_TENANT = "demo"
DEFAULT_TOKEN = "groundplane-demo-token"
"""Bearer token of the built-in tenant (``GROUNDPLANE_TOKEN`` for ``groundplane infer``)."""
DEFAULT_MODEL = SyntheticModelSpec(
    "synth-7b", prefill_s_per_token=0.0005, decode_s_per_token=0.01, max_answer_tokens=24
)
"""Costs in simulated seconds per token (at 60× a 24-token answer takes 4 ms of wall time)."""

DEFAULT_POLICY = RoutingPolicy(
    kind=PolicyKind.MAX_ELEVATION,
    min_elevation_deg=DEFAULT_MIN_ELEVATION_DEG,
    stickiness=Stickiness(margin=5.0, min_dwell_s=60.0),
)
"""Highest satellite among the reachable stations; a session moves only for a satellite 5°
higher after 60 s on its current one (stateless requests are never sticky)."""


@dataclass(frozen=True, slots=True)
class GroundUser:
    """Where a synthetic ground user is (geodetic degrees, metres above the ellipsoid)."""

    user_id: str
    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0


# (id, name, lat_deg, lon_deg, alt_m)
_STATIONS: tuple[tuple[str, str, float, float, float], ...] = (
    ("svalbard", "Svalbard, Norway", 78.23, 15.40, 450.0),
    ("fairbanks", "Fairbanks, Alaska", 64.86, -147.85, 150.0),
    ("kiruna", "Kiruna, Sweden", 67.86, 20.96, 400.0),
    ("wallops", "Wallops Island, Virginia", 37.94, -75.46, 10.0),
    ("goonhilly", "Goonhilly, England", 50.05, -5.18, 100.0),
    ("hartebeesthoek", "Hartebeesthoek, South Africa", -25.89, 27.69, 1400.0),
    ("santiago", "Santiago, Chile", -33.15, -70.67, 700.0),
    ("dongara", "Dongara, Australia", -29.05, 115.35, 30.0),
    ("singapore", "Singapore", 1.35, 103.82, 20.0),
    ("south-point", "South Point, Hawaii", 19.01, -155.66, 380.0),
)

# Cities within reach (backhaul ≤ 3,000 km) of at least one built-in station.
_USERS: tuple[tuple[str, str, float, float], ...] = (
    ("new-york", "New York", 40.71, -74.01),
    ("washington", "Washington", 38.90, -77.04),
    ("toronto", "Toronto", 43.65, -79.38),
    ("london", "London", 51.51, -0.13),
    ("paris", "Paris", 48.86, 2.35),
    ("stockholm", "Stockholm", 59.33, 18.07),
    ("johannesburg", "Johannesburg", -26.20, 28.05),
    ("santiago-city", "Santiago", -33.45, -70.67),
    ("buenos-aires", "Buenos Aires", -34.60, -58.38),
    ("perth", "Perth", -31.95, 115.86),
    ("kuala-lumpur", "Kuala Lumpur", 3.14, 101.69),
    ("jakarta", "Jakarta", -6.21, 106.85),
    ("honolulu", "Honolulu", 21.31, -157.86),
    ("anchorage", "Anchorage", 61.22, -149.90),
)


def default_stations(min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG) -> list[Site]:
    return [
        Site(id=i, name=n, lat_deg=lat, lon_deg=lon, alt_m=alt, min_elevation_deg=min_elevation_deg)
        for i, n, lat, lon, alt in _STATIONS
    ]


def default_users() -> list[GroundUser]:
    return [GroundUser(i, n, lat, lon) for i, n, lat, lon in _USERS]


def default_tenants() -> dict[str, dict[str, object]]:
    """``TenantRegistry.from_mapping`` input of the built-in tenant; its users are in the first
    default city (the HTTP front door's location when a request names none)."""
    home = default_users()[0]
    return {
        DEFAULT_TENANT: {
            "tokens": [DEFAULT_TOKEN],
            "max_concurrent": 64,
            "max_queued": 256,
            "location": [home.lat_deg, home.lon_deg],
        }
    }
