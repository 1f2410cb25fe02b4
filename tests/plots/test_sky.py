"""Sky plot: its points are the library's look angles, its labels the pass predictor's times."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.projections.polar import PolarAxes
from matplotlib.text import Annotation

from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import SatelliteBatch, look_angles, utc_jd_fr
from groundplane.orbit.passes import find_passes
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.plots.sky import hms, sky_figure, sky_tracks

from ..data import DATA
from .figures import artist, artists

ELEMENTS = DATA / "satellites-2026-08.3le"
START = datetime(2026, 8, 15, tzinfo=UTC)
END = START + timedelta(hours=24)
#: The figure holds exactly what was computed; only float round trips through radians differ.
EXACT_DEG = 1e-9


def _iss() -> SatelliteBatch:
    (iss,) = [e for e in parse_elements(ELEMENTS.read_text()) if e.catalog_id == "25544"]
    return SatelliteBatch([iss.catalog_id], [iss.to_satrec()])


MASKED = Site(
    "cambridge",
    52.2,
    0.1,
    30.0,
    name="Cambridge",
    min_elevation_deg=10.0,
    mask=HorizonMask.from_points([(0.0, 5.0), (90.0, 25.0), (180.0, 5.0), (270.0, 18.0)]),
)


def test_sky_plot_points_are_the_look_angles_at_the_pass_times() -> None:
    """Each pass line holds (azimuth in radians, 90 − elevation) of look angles the library
    computes independently at AOS, every 10 s after it, TCA and LOS; the chart has north up,
    azimuth clockwise and the horizon on the outer ring."""
    batch = _iss()
    passes = find_passes(batch, [MASKED], START, END)
    assert len(passes) >= 3
    figure = sky_figure(MASKED, sky_tracks(batch, MASKED, passes, step_s=10.0))
    (ax,) = figure.axes
    assert isinstance(ax, PolarAxes)
    assert ax.get_theta_offset() == pytest.approx(math.pi / 2)  # azimuth 0 (north) is up
    assert ax.get_theta_direction() == -1  # clockwise
    assert ax.get_ylim() == (0.0, 90.0)  # zenith at the centre, elevation 0° on the rim
    for index, found in enumerate(passes):
        count = math.ceil(found.duration_s / 10.0)
        times = sorted(
            {*(found.aos + timedelta(seconds=10.0 * i) for i in range(count)), found.tca, found.los}
        )
        looks = look_angles(batch, [MASKED], *utc_jd_fr(times))
        line = artist(figure, f"pass:{index}")
        assert isinstance(line, Line2D)
        theta = np.asarray(line.get_xdata(), dtype=float)
        r = np.asarray(line.get_ydata(), dtype=float)
        assert theta.size == len(times)
        np.testing.assert_allclose(np.degrees(theta), looks.azimuth_deg[0, 0], atol=EXACT_DEG)
        np.testing.assert_allclose(90.0 - r, looks.elevation_deg[0, 0], atol=EXACT_DEG)
        # Inside the pass the satellite is at or above the site's threshold (mask or minimum).
        threshold = MASKED.threshold_deg(looks.azimuth_deg[0, 0])
        assert np.all(looks.elevation_deg[0, 0] >= threshold - 1e-3)
        # The predictor's peak comes from its interpolated state (≲ 10 m from SGP4's).
        assert np.max(90.0 - r) == pytest.approx(found.max_elevation_deg, abs=1e-3)


def test_sky_plot_labels_aos_tca_los_with_the_predicted_utc_times_at_their_points() -> None:
    """The AOS, TCA and LOS labels read the pass predictor's times (UTC, to the second) and sit
    on the look angles of those instants."""
    batch = _iss()
    passes = find_passes(batch, [MASKED], START, END)
    figure = sky_figure(MASKED, sky_tracks(batch, MASKED, passes))
    for index, found in enumerate(passes):
        for key, moment in (("aos", found.aos), ("tca", found.tca), ("los", found.los)):
            label = artist(figure, f"{key}:{index}")
            assert isinstance(label, Annotation)
            word, clock = label.get_text().split(" ")
            assert word == key.upper()
            shown = datetime.combine(
                moment.date(), datetime.strptime(clock, "%H:%M:%S").time(), UTC
            )
            assert abs((shown - moment).total_seconds()) <= 0.5
            looks = look_angles(batch, [MASKED], *utc_jd_fr([moment]))
            theta, r = label.xy
            assert math.degrees(theta) == pytest.approx(looks.azimuth_deg[0, 0, 0], abs=1e-9)
            assert 90.0 - r == pytest.approx(looks.elevation_deg[0, 0, 0], abs=1e-9)


def test_sky_plot_draws_the_site_threshold_as_its_horizon() -> None:
    """The horizon line is the site's threshold max(min elevation, mask) at every drawn azimuth,
    including the mask's own points (its corners), and the sky below it is shaded."""
    figure = sky_figure(MASKED, [])
    horizon = artist(figure, "horizon")
    assert isinstance(horizon, Line2D)
    azimuth = np.degrees(np.asarray(horizon.get_xdata(), dtype=float))
    r = np.asarray(horizon.get_ydata(), dtype=float)
    np.testing.assert_allclose(90.0 - r, MASKED.threshold_deg(azimuth), atol=EXACT_DEG)
    assert {0.0, 90.0, 180.0, 270.0} <= set(np.round(azimuth, 9).tolist())
    assert (90.0 - r).max() == pytest.approx(25.0)  # the mask's peak at 90°
    assert (90.0 - r).min() == pytest.approx(10.0)  # the minimum elevation elsewhere
    assert artists(figure, "mask")


def test_sky_plot_with_a_negative_threshold_widens_the_rim_and_labels_clipped_ends() -> None:
    """A site whose threshold dips below 0° gets a rim beyond the horizon ring, and a pass cut by
    the window is labelled "window start"/"window end" instead of AOS/LOS."""
    site = Site("mast", 40.0, -30.0, 30.0, min_elevation_deg=-2.0, mask=HorizonMask(((0.0, -2.0),)))
    batch = _iss()
    passes = find_passes(batch, [site], START, END)
    assert passes
    first = passes[0]
    start = first.aos + timedelta(seconds=60)
    clipped = find_passes(batch, [site], start, first.los - timedelta(seconds=60))
    (found,) = clipped
    assert found.aos_clipped
    assert found.los_clipped
    figure = sky_figure(site, sky_tracks(batch, site, clipped))
    (ax,) = figure.axes
    assert ax.get_ylim() == (0.0, 92.0)
    aos, los = artist(figure, "aos:0"), artist(figure, "los:0")
    assert isinstance(aos, Annotation)
    assert isinstance(los, Annotation)
    assert aos.get_text() == f"window start {hms(found.aos)}"
    assert los.get_text() == f"window end {hms(found.los)}"
