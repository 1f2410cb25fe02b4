"""Ground tracks: sub-satellite points on an equirectangular world map, with station footprints.

A sub-satellite point is the geodetic (WGS84) latitude, longitude and height of the satellite's
ITRF position (SGP4 via :func:`~groundplane.orbit.geometry.propagate`, rotated by
:func:`~groundplane.orbit.geometry.teme_to_itrf`). A station's footprint for a satellite at
height ``h`` is the small circle of ground points from which that satellite would be seen at the
station's minimum elevation ``ε``: on a sphere of radius ``R`` its angular radius (the ground
range over ``R``) is ``λ = arccos(R cos ε / (R + h)) − ε``. Circles are traced as geodesic small
circles (points at angular distance ``λ`` from the station along every bearing), so they are right
near the poles, where a circle that contains the pole becomes a band across all longitudes.

Tracks and circles are cut where they cross the antimeridian (±180°): each piece ends on the map's
edge at the crossing latitude and the next starts on the opposite edge, so no line runs across
the map. The map shows a 30° graticule (no coastlines: no offline coastline data is shipped).

Where a track's satellite is in the Earth's shadow (umbra or penumbra: a sunlit fraction below 1,
from :func:`groundplane.orbit.shadow.sunlit_fraction`), the figure draws that part of the track
again as a wide dark band, so eclipses read at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import (
    FloatArray,
    SatelliteBatch,
    earth_rotation,
    ecef_to_geodetic,
    propagate,
    teme_to_itrf,
    wrap_lon_deg,
)
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction
from groundplane.orbit.sites import Site

MEAN_EARTH_RADIUS_KM = 6371.0088
"""Radius of the sphere footprints are computed on (the IUGG mean Earth radius)."""
CIRCLE_POINTS = 721
"""Points per footprint circle (every half degree of bearing)."""


@dataclass(frozen=True)
class SubsatellitePoints:
    """Geodetic latitude, longitude in [-180, 180) and height of ``S`` satellites at ``T`` times.

    Arrays are ``(S, T)``; NaN where SGP4 could not place the satellite.
    """

    satellite_ids: tuple[str, ...]
    lat_deg: FloatArray
    lon_deg: FloatArray
    alt_km: FloatArray
    sunlit: FloatArray | None = None
    """Fraction 0…1 of the solar disc each satellite sees (1 full Sun, 0 umbra; NaN where SGP4
    failed), ``(S, T)``."""


def subsatellite_points(batch: SatelliteBatch, jd: ArrayLike, fr: ArrayLike) -> SubsatellitePoints:
    """Sub-satellite points (and sunlit fractions) of every satellite of ``batch`` at the
    two-part Julian dates."""
    states = propagate(batch, jd, fr)
    sun = sun_position_teme_km(np.atleast_1d(np.asarray(jd)), np.atleast_1d(np.asarray(fr)))
    sunlit = sunlit_fraction(states.r_teme_km, sun[np.newaxis, :, :])
    r_itrf, _ = teme_to_itrf(
        np.moveaxis(states.r_teme_km, -1, 0),
        np.moveaxis(states.v_teme_km_s, -1, 0),
        earth_rotation(jd, fr),
    )
    lat, lon, alt = ecef_to_geodetic(np.moveaxis(r_itrf, 0, -1))
    return SubsatellitePoints(batch.ids, lat, lon, alt, sunlit)


def footprint_central_angle_deg(
    altitude_km: float, min_elevation_deg: float, radius_km: float = MEAN_EARTH_RADIUS_KM
) -> float:
    """Angular radius of the visibility circle: ``arccos(R cos ε / (R + h)) − ε``, degrees."""
    if not (math.isfinite(altitude_km) and altitude_km > 0):
        raise InvalidArgument(f"altitude_km must be a positive height, got {altitude_km}")
    if not -90.0 < min_elevation_deg < 90.0:
        raise InvalidArgument(f"min_elevation_deg must be in (-90, 90), got {min_elevation_deg}")
    eps = math.radians(min_elevation_deg)
    ratio = radius_km * math.cos(eps) / (radius_km + altitude_km)
    return math.degrees(math.acos(ratio) - eps)


def small_circle(
    lat_deg: float, lon_deg: float, radius_deg: float, points: int = CIRCLE_POINTS
) -> tuple[FloatArray, FloatArray]:
    """Latitudes and longitudes ([-180, 180)) at angular distance ``radius_deg`` from a centre.

    Points ``cos ρ·c + sin ρ·(cos β·north + sin β·east)`` for bearings ``β`` 0°…360° (closed:
    first point = last point), with the local north and east unit vectors of the centre ``c``
    taken from its longitude, so that a centre on a pole is no special case.
    """
    lat0, lon0, rho = math.radians(lat_deg), math.radians(lon_deg), math.radians(radius_deg)
    centre = np.array(
        [math.cos(lat0) * math.cos(lon0), math.cos(lat0) * math.sin(lon0), math.sin(lat0)]
    )
    north = np.array(
        [-math.sin(lat0) * math.cos(lon0), -math.sin(lat0) * math.sin(lon0), math.cos(lat0)]
    )
    east = np.array([-math.sin(lon0), math.cos(lon0), 0.0])
    bearing = np.linspace(0.0, 2.0 * math.pi, points)[:, None]
    ring = math.cos(rho) * centre + math.sin(rho) * (
        np.cos(bearing) * north + np.sin(bearing) * east
    )
    lat = np.degrees(np.arcsin(np.clip(ring[:, 2], -1.0, 1.0)))
    lon = wrap_lon_deg(np.degrees(np.arctan2(ring[:, 1], ring[:, 0])))
    lat[-1], lon[-1] = lat[0], lon[0]  # closed exactly (360° of bearing rounds differently)
    return lat, lon


def split_at_antimeridian(
    lon_deg: ArrayLike, lat_deg: ArrayLike, *, closed: bool = False
) -> list[tuple[FloatArray, FloatArray]]:
    """Pieces ``(lon, lat)`` of a path, cut at ±180° and at NaN points.

    Consecutive points more than 180° apart in wrapped longitude are taken to cross the
    antimeridian (true steps are far smaller): the piece ends at the edge at the interpolated
    crossing latitude and the next piece starts there on the other edge. A ``closed`` path (a
    ring whose last point is its first) that is cut is rejoined at that seam, so a circle gives
    one piece per side of the antimeridian.
    """
    lon = wrap_lon_deg(lon_deg)
    lat = np.asarray(lat_deg, dtype=np.float64)
    pieces: list[tuple[FloatArray, FloatArray]] = []
    xs: list[float] = []
    ys: list[float] = []

    def flush() -> None:
        if len(xs) > 1:
            pieces.append((np.array(xs), np.array(ys)))
        xs.clear()
        ys.clear()

    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        if math.isnan(x) or math.isnan(y):
            flush()
            continue
        if xs and abs(x - xs[-1]) > 180.0:
            edge = 180.0 if xs[-1] > 0 else -180.0
            unwrapped = x + 360.0 if edge > 0 else x - 360.0
            fraction = (edge - xs[-1]) / (unwrapped - xs[-1])
            crossing = ys[-1] + fraction * (y - ys[-1])
            xs.append(edge)
            ys.append(crossing)
            flush()
            xs.append(-edge)
            ys.append(crossing)
        xs.append(x)
        ys.append(y)
    flush()
    if closed and len(pieces) > 1:
        (first_x, first_y), (last_x, last_y) = pieces[0], pieces[-1]
        if first_x[0] == last_x[-1] and first_y[0] == last_y[-1]:
            joined = (np.concatenate((last_x, first_x[1:])), np.concatenate((last_y, first_y[1:])))
            pieces = [joined, *pieces[1:-1]]
    return pieces


@dataclass(frozen=True)
class GroundTrack:
    """Sub-satellite latitude and longitude of one satellite over time (NaN = no position)."""

    catalog_id: str
    lat_deg: FloatArray
    lon_deg: FloatArray
    name: str = ""
    sunlit: FloatArray | None = None
    """The satellite's sunlit fraction at each point (None: lighting not drawn)."""


@dataclass(frozen=True)
class Footprint:
    """Where ``site`` sees a satellite at ``altitude_km`` above ``site.min_elevation_deg``."""

    site: Site
    catalog_id: str
    altitude_km: float

    @property
    def central_angle_deg(self) -> float:
        return footprint_central_angle_deg(self.altitude_km, self.site.min_elevation_deg)

    @property
    def ground_range_km(self) -> float:
        return MEAN_EARTH_RADIUS_KM * math.radians(self.central_angle_deg)


def groundtrack_figure(
    tracks: Sequence[GroundTrack], footprints: Sequence[Footprint] = (), *, title: str = ""
) -> Figure:
    """Tracks and footprints on an equirectangular map (x = longitude, y = latitude, degrees).

    Artists: ``track:<id>:<k>`` (piece ``k`` of a satellite's track), ``eclipse:<id>:<k>``
    (piece ``k`` of the track in the Earth's shadow, for tracks with ``sunlit``),
    ``footprint:<site>:<id>:<k>`` (piece ``k`` of a footprint circle), ``station:<site>`` (the
    station's marker).
    """
    figure = Figure(figsize=(10.0, 5.6), layout="constrained")
    ax = figure.add_subplot()
    colour_of = {t.catalog_id: f"C{i % 10}" for i, t in enumerate(tracks)}
    eclipse_labelled = False
    for track in tracks:
        colour = colour_of[track.catalog_id]
        label = f"{track.catalog_id} {track.name}".strip()
        for k, (x, y) in enumerate(split_at_antimeridian(track.lon_deg, track.lat_deg)):
            ax.plot(
                x,
                y,
                color=colour,
                linewidth=1.3,
                gid=f"track:{track.catalog_id}:{k}",
                label=label if k == 0 else None,
            )
        if track.sunlit is not None:
            shadowed = np.asarray(track.sunlit) < 1.0  # NaN (no position) is not in shadow
            lon_dark = np.where(shadowed, track.lon_deg, np.nan)
            lat_dark = np.where(shadowed, track.lat_deg, np.nan)
            for k, (x, y) in enumerate(split_at_antimeridian(lon_dark, lat_dark)):
                ax.plot(
                    x,
                    y,
                    color="0.1",
                    linewidth=4.0,
                    alpha=0.35,
                    solid_capstyle="butt",
                    gid=f"eclipse:{track.catalog_id}:{k}",
                    label="in Earth's shadow" if k == 0 and not eclipse_labelled else None,
                )
                eclipse_labelled = True
        first = np.flatnonzero(np.isfinite(track.lat_deg))
        if first.size:
            ax.plot([track.lon_deg[first[0]]], [track.lat_deg[first[0]]], "o", color=colour, ms=4)
    stations: dict[str, Site] = {}
    for footprint in footprints:
        site = footprint.site
        stations[site.id] = site
        lat, lon = small_circle(site.lat_deg, site.lon_deg, footprint.central_angle_deg)
        colour = colour_of.get(footprint.catalog_id, "0.3")
        for k, (x, y) in enumerate(split_at_antimeridian(lon, lat, closed=True)):
            ax.plot(
                x,
                y,
                color=colour,
                linewidth=0.8,
                linestyle="--",
                alpha=0.8,
                gid=f"footprint:{site.id}:{footprint.catalog_id}:{k}",
            )
    for site in stations.values():
        ax.plot([site.lon_deg], [site.lat_deg], "^", color="k", ms=5, gid=f"station:{site.id}")
        ax.annotate(
            site.name or site.id,
            xy=(site.lon_deg, site.lat_deg),
            xytext=(3, -9),
            textcoords="offset points",
            fontsize=6,
        )
    ax.set_xlim(-180.0, 180.0)
    ax.set_ylim(-90.0, 90.0)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-180.0, 181.0, 30.0))
    ax.set_yticks(np.arange(-90.0, 91.0, 30.0))
    ax.grid(True, color="0.8", linewidth=0.6)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    if footprints:
        elevations = sorted({f"{f.site.min_elevation_deg:g}°" for f in footprints})
        note = f"; dashed: station footprints at min elevation {', '.join(elevations)}"
    else:
        note = ""
    ax.set_title(title or f"Ground tracks (dot: start){note}", fontsize=10)
    if tracks:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    return figure
