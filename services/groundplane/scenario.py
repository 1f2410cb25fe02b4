"""The built-in scenario `groundplane up` runs when given no files.

A synthetic Walker constellation and a set of well-known ground-station locations (rounded
public coordinates, good to a few hundred metres: enough for visibility, not for pointing a dish).
"""

from __future__ import annotations

from groundplane.tracking.sites import Site

DEFAULT_CONSTELLATION = "walker:240/12/1@550km:53"
DEFAULT_MIN_ELEVATION_DEG = 10.0

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


def default_stations(min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG) -> list[Site]:
    return [
        Site(id=i, name=n, lat_deg=lat, lon_deg=lon, alt_m=alt, min_elevation_deg=min_elevation_deg)
        for i, n, lat, lon, alt in _STATIONS
    ]
