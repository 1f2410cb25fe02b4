"""Ground tracks and footprints: sub-satellite points against Skyfield, the footprint radius
against a numerical solution of the elevation geometry, and no line across the map."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from matplotlib.lines import Line2D
from numpy.typing import NDArray

from groundplane.orbit.eclipses import find_eclipses
from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import (
    SatelliteBatch,
    utc_datetimes,
    utc_jd_fr_range,
)
from groundplane.orbit.sites import Site
from groundplane.plots.groundtrack import (
    MEAN_EARTH_RADIUS_KM,
    Footprint,
    GroundTrack,
    footprint_central_angle_deg,
    groundtrack_figure,
    small_circle,
    split_at_antimeridian,
    subsatellite_points,
)

from ..data import DATA
from .figures import artists

ELEMENTS = DATA / "satellites-2026-08.3le"
START = datetime(2026, 8, 15, tzinfo=UTC)
#: ISS, HST, a sun-synchronous (98.7°), a GPS-like MEO and a geostationary satellite.
SATELLITES = ("25544", "20580", "27640", "38833", "41882")
SVALBARD = Site("svalbard", 78.2298, 15.4078, 500.0, name="Svalbard", min_elevation_deg=10.0)
FIJI = Site("fiji", -17.75, 178.5, 10.0, name="Fiji", min_elevation_deg=5.0)
WALLOPS = Site("wallops", 37.9249, -75.4765, 10.0, name="Wallops", min_elevation_deg=10.0)
#: Skyfield's ITRS (IAU 2000 nutation, UT1 = UTC) against GMST 1982: a few metres at LEO.
SKYFIELD_DEG = 1e-3
SKYFIELD_KM = 0.05

Floats = NDArray[np.float64]


def _batch(ids: tuple[str, ...] = SATELLITES) -> SatelliteBatch:
    by_id = {e.catalog_id: e for e in parse_elements(ELEMENTS.read_text())}
    return SatelliteBatch(list(ids), [by_id[i].to_satrec() for i in ids])


def _angle_deg(lat0: float, lon0: float, lat: Floats, lon: Floats) -> Floats:
    """Central angle by the spherical law of cosines (written apart from the plots module)."""
    p0, p = np.radians(lat0), np.radians(lat)
    cos_c = np.sin(p0) * np.sin(p) + np.cos(p0) * np.cos(p) * np.cos(np.radians(lon - lon0))
    return np.asarray(np.degrees(np.arccos(np.clip(cos_c, -1.0, 1.0))))


def _pieces(figure: Any, prefix: str) -> list[tuple[Floats, Floats]]:
    found = artists(figure, prefix)
    out = []
    for gid in sorted(found, key=lambda g: int(g.rsplit(":", 1)[1])):
        line = found[gid]
        assert isinstance(line, Line2D)
        out.append(
            (np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float))
        )
    return out


def test_subsatellite_points_match_skyfield() -> None:
    """Geodetic latitude, longitude and height of the sub-satellite points agree with Skyfield's
    WGS84 ``latlon_of``/``height_of`` within 0.001° and 50 m for LEO, polar, MEO and GEO
    satellites over 12 hours (UT1 = UTC on both sides)."""
    from skyfield.api import EarthSatellite, load, wgs84

    batch = _batch()
    jd, fr = utc_jd_fr_range(START, START + timedelta(hours=12), 300.0)
    points = subsatellite_points(batch, jd, fr)
    ts = load.timescale(builtin=True, delta_t=69.184)
    t = ts.from_datetimes(utc_datetimes(jd, fr))
    for i, satrec in enumerate(batch.satrecs):
        position = EarthSatellite.from_satrec(satrec, ts).at(t)
        lat, lon = wgs84.latlon_of(position)
        height = wgs84.height_of(position)
        assert np.abs(points.lat_deg[i] - lat.degrees).max() < SKYFIELD_DEG
        d_lon = (points.lon_deg[i] - lon.degrees + 180.0) % 360.0 - 180.0
        assert np.abs(d_lon).max() < SKYFIELD_DEG / np.cos(np.radians(points.lat_deg[i])).min()
        assert np.abs(points.alt_km[i] - height.km).max() < SKYFIELD_KM
    assert np.all((points.lon_deg >= -180.0) & (points.lon_deg < 180.0))


def _elevation_deg(central_angle_deg: float, altitude_km: float) -> float:
    """Elevation of a satellite at ``altitude_km`` seen from a ground point ``central_angle``
    away, by vectors on a sphere (no closed form)."""
    radius = MEAN_EARTH_RADIUS_KM
    angle = math.radians(central_angle_deg)
    ground = np.array([radius, 0.0])
    satellite = (radius + altitude_km) * np.array([math.cos(angle), math.sin(angle)])
    line = satellite - ground
    return math.degrees(math.asin(float(line @ ground) / (radius * float(np.linalg.norm(line)))))


@pytest.mark.parametrize(
    ("altitude_km", "min_elevation_deg"),
    [(420.0, 0.0), (420.0, 10.0), (550.0, 25.0), (1200.0, 5.0), (20_200.0, 10.0), (35_786.0, 0.0)],
)
def test_footprint_radius_is_where_the_elevation_equals_the_minimum(
    altitude_km: float, min_elevation_deg: float
) -> None:
    """The footprint's angular radius is the ground distance at which the satellite stands at
    exactly the minimum elevation: found by bisection on the elevation geometry, to 1e-9°."""
    low, high = 0.0, 90.0  # elevation falls monotonically with ground distance
    for _ in range(200):
        middle = (low + high) / 2.0
        if _elevation_deg(middle, altitude_km) > min_elevation_deg:
            low = middle
        else:
            high = middle
    radius = footprint_central_angle_deg(altitude_km, min_elevation_deg)
    assert radius == pytest.approx(low, abs=1e-9)
    footprint = Footprint(WALLOPS, "x", altitude_km)
    assert footprint.ground_range_km == pytest.approx(
        MEAN_EARTH_RADIUS_KM * math.radians(footprint_central_angle_deg(altitude_km, 10.0))
    )


def test_footprint_circles_are_geodesic_and_cut_at_the_antimeridian() -> None:
    """Every drawn footprint point is the footprint's angular radius from its station (law of
    cosines; the interpolated cut points within 0.01°), a circle around the pole is one band
    from edge to edge, a circle across the antimeridian is cut there with both ends on the
    edge at the same latitude, and every step of a piece is the true shortest step in
    longitude (none crosses the map)."""
    footprints = [
        Footprint(SVALBARD, "iss", 420.0),
        Footprint(FIJI, "iss", 420.0),
        Footprint(WALLOPS, "iss", 420.0),
    ]
    figure = groundtrack_figure([], footprints)
    for footprint in footprints:
        site = footprint.site
        pieces = _pieces(figure, f"footprint:{site.id}:iss:")
        assert pieces
        for lon, lat in pieces:
            distance = _angle_deg(site.lat_deg, site.lon_deg, lat, lon)
            traced = np.abs(lon) < 180.0  # the cut points are interpolated between two of them
            np.testing.assert_allclose(distance[traced], footprint.central_angle_deg, atol=1e-6)
            np.testing.assert_allclose(distance, footprint.central_angle_deg, atol=1e-2)
            steps = np.diff(lon)
            assert np.abs(steps).max() < 180.0
            np.testing.assert_allclose(steps, (steps + 180.0) % 360.0 - 180.0, atol=1e-9)
            assert lon.min() >= -180.0
            assert lon.max() <= 180.0
    polar = _pieces(figure, "footprint:svalbard:")
    assert SVALBARD.lat_deg + footprints[0].central_angle_deg > 90.0  # the circle holds the pole
    (band,) = polar  # one band from edge to edge (the ring's seam is rejoined)
    assert band[0][0] == -band[0][-1]
    assert abs(band[0][0]) == 180.0
    assert band[1][0] == pytest.approx(band[1][-1])
    fiji = _pieces(figure, "footprint:fiji:")
    assert len(fiji) == 2
    edges = sorted((float(lon[i]), float(lat[i])) for lon, lat in fiji for i in (0, -1))
    at_edge = [(x, y) for x, y in edges if abs(x) == 180.0]
    assert len(at_edge) == 4  # each cut ends on one edge and resumes on the other
    crossing_lats = sorted(y for _, y in at_edge)
    assert crossing_lats[0] == pytest.approx(crossing_lats[1])
    assert crossing_lats[2] == pytest.approx(crossing_lats[3])
    (ax,) = figure.axes
    assert ax.get_xlim() == (-180.0, 180.0)
    assert ax.get_ylim() == (-90.0, 90.0)


def test_small_circle_of_the_pole_is_a_parallel() -> None:
    """Around the north pole the small circle of radius 20° is the parallel 70°N at every
    longitude (the degenerate centre of the bearing formula)."""
    lat, lon = small_circle(90.0, 0.0, 20.0, points=73)
    np.testing.assert_allclose(lat, 70.0, atol=1e-9)
    assert np.unique(np.round(lon[:-1], 6)).size == 72


def test_track_points_are_the_subsatellite_points_without_wrap_lines() -> None:
    """The track pieces of each satellite, minus the edge points added at the cuts, are its
    sub-satellite points in time order; no piece steps by more than 180° in longitude (each
    step is the true shortest step); cut points come in pairs at ±180° with one latitude."""
    batch = _batch(("25544", "27640"))
    jd, fr = utc_jd_fr_range(START, START + timedelta(hours=6), 30.0)
    points = subsatellite_points(batch, jd, fr)
    tracks = [
        GroundTrack(sat, points.lat_deg[i], points.lon_deg[i]) for i, sat in enumerate(batch.ids)
    ]
    figure = groundtrack_figure(tracks)
    for i, sat in enumerate(batch.ids):
        pieces = _pieces(figure, f"track:{sat}:")
        assert len(pieces) >= 4  # a LEO crosses the antimeridian about every 90 minutes
        kept_lon, kept_lat = [], []
        for k, (lon, lat) in enumerate(pieces):
            steps = np.diff(lon)
            assert np.abs(steps).max() < 180.0
            # Each drawn step is the satellite's true (shortest) step in longitude.
            np.testing.assert_allclose(steps, (steps + 180.0) % 360.0 - 180.0, atol=1e-9)
            if k > 0:
                assert abs(lon[0]) == 180.0
                assert lon[0] == -pieces[k - 1][0][-1]
                assert lat[0] == pieces[k - 1][1][-1]
            inner = slice(1 if k > 0 else 0, -1 if k < len(pieces) - 1 else None)
            kept_lon.append(lon[inner])
            kept_lat.append(lat[inner])
        np.testing.assert_array_equal(np.concatenate(kept_lon), points.lon_deg[i])
        np.testing.assert_array_equal(np.concatenate(kept_lat), points.lat_deg[i])


def test_split_at_antimeridian_interpolates_the_crossing_and_cuts_at_gaps() -> None:
    """From 179° to −179° the crossing is halfway in latitude; a NaN (no SGP4 position) ends a
    piece without joining across the gap; a lone point between gaps is no piece."""
    lon = np.array([178.0, 179.0, -179.0, -178.0, np.nan, 10.0, np.nan, 20.0, 21.0])
    lat = np.array([0.0, 1.0, 3.0, 4.0, np.nan, 5.0, np.nan, 6.0, 7.0])
    pieces = split_at_antimeridian(lon, lat)
    assert [p[0].tolist() for p in pieces] == [
        [178.0, 179.0, 180.0],
        [-180.0, -179.0, -178.0],
        [20.0, 21.0],
    ]
    assert pieces[0][1][-1] == pytest.approx(2.0)
    assert pieces[1][1][0] == pytest.approx(2.0)


#: Samples this close (s) to an eclipse edge are not judged: the edge and the sample's own
#: shadow test may round either way there.
ECLIPSE_EDGE_S = 1.0


def test_track_parts_in_the_earths_shadow_are_drawn_as_eclipse_pieces() -> None:
    """With lighting, a track's samples inside the eclipses ``find_eclipses`` reports (penumbra
    entry to exit) are drawn again as ``eclipse:`` pieces and no sample outside them is; the
    sunlit (GEO, out of eclipse season in August) satellite has no eclipse piece."""
    batch = _batch(("25544", "41882"))
    stop = START + timedelta(hours=6)
    jd, fr = utc_jd_fr_range(START, stop, 30.0)
    points = subsatellite_points(batch, jd, fr)
    assert points.sunlit is not None
    tracks = [
        GroundTrack(sat, points.lat_deg[i], points.lon_deg[i], sunlit=points.sunlit[i])
        for i, sat in enumerate(batch.ids)
    ]
    figure = groundtrack_figure(tracks)
    times = utc_datetimes(jd, fr)
    eclipses = [e for e in find_eclipses(batch, START, stop) if e.catalog_id == "25544"]
    assert len(eclipses) >= 3  # the ISS is in shadow once an orbit
    inside = np.zeros(len(times), dtype=bool)
    near_edge = np.zeros(len(times), dtype=bool)
    for eclipse in eclipses:
        for i, at in enumerate(times):
            entry_s = (at - eclipse.penumbra_entry).total_seconds()
            exit_s = (eclipse.penumbra_exit - at).total_seconds()
            inside[i] |= entry_s > 0 and exit_s > 0
            near_edge[i] |= min(abs(entry_s), abs(exit_s)) < ECLIPSE_EDGE_S
    drawn = {
        (round(float(x), 9), round(float(y), 9))
        for lon, lat in _pieces(figure, "eclipse:25544:")
        for x, y in zip(lon, lat, strict=True)
        if abs(x) != 180.0  # the cut points the antimeridian adds
    }
    for sample in np.flatnonzero(~near_edge).tolist():
        lon0, lat0 = points.lon_deg[0, sample], points.lat_deg[0, sample]
        key = (round(float(lon0), 9), round(float(lat0), 9))
        assert (key in drawn) == bool(inside[sample]), (times[sample], inside[sample])
    assert artists(figure, "eclipse:41882:") == {}
