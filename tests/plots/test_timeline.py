"""Pass timeline: one bar per predicted pass, on its station × satellite row, AOS to LOS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import matplotlib.dates as mdates
import pytest
from matplotlib.patches import Rectangle

from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import find_passes
from groundplane.orbit.sites import parse_sites_csv
from groundplane.plots.timeline import rows_of, timeline_figure

from ..data import DATA
from .figures import artists

START = datetime(2026, 8, 15, tzinfo=UTC)
END = START + timedelta(hours=12)
#: date2num is days; a microsecond is 1.2e-11 days.
DAY_TOL = 1e-9


def _num(moment: datetime) -> float:
    return float(mdates.date2num(moment))  # type: ignore[no-untyped-call]  # untyped module


def test_timeline_bars_are_the_predicted_passes_on_their_rows() -> None:
    """Every pass of the predictor is one bar from date2num(AOS) to date2num(LOS) on the row of
    its station × satellite (labelled with both names, in the given station order); passes cut
    by the window are hatched; the x axis is exactly the window."""
    sites = parse_sites_csv((DATA / "ground-stations.csv").read_text(), 10.0)
    wanted = ("25544", "20580", "27640")
    by_id = {e.catalog_id: e for e in parse_elements((DATA / "satellites-2026-08.3le").read_text())}
    batch = SatelliteBatch(list(wanted), [by_id[i].to_satrec() for i in wanted])
    passes = find_passes(batch, sites, START, END)
    assert len(passes) > 20
    assert any(p.aos_clipped or p.los_clipped for p in passes)  # the hatching is exercised
    site_names = {s.id: s.name for s in sites}
    sat_names = {i: by_id[i].name for i in wanted}
    figure = timeline_figure(passes, START, END, site_names=site_names, satellite_names=sat_names)
    (ax, _colourbar) = figure.axes
    rows = rows_of(passes, list(site_names), list(sat_names))
    site_order = [s.id for s in sites]
    assert [site_order.index(site) for site, _ in rows] == sorted(
        site_order.index(site) for site, _ in rows
    )
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{site_names[site]} · {sat_names[sat]}" for site, sat in rows]
    bars = artists(figure, "pass:")
    assert len(bars) == len(passes)
    for found in passes:
        bar = bars[f"pass:{found.site_id}:{found.catalog_id}:{found.aos.isoformat()}"]
        assert isinstance(bar, Rectangle)
        assert bar.get_x() == pytest.approx(_num(found.aos), abs=DAY_TOL)
        assert bar.get_x() + bar.get_width() == pytest.approx(_num(found.los), abs=DAY_TOL)
        row = rows.index((found.site_id, found.catalog_id))
        assert bar.get_y() + bar.get_height() / 2 == pytest.approx(row)
        assert bool(bar.get_hatch()) == (found.aos_clipped or found.los_clipped)
    assert ax.get_xlim() == pytest.approx((_num(START), _num(END)))


def test_timeline_with_no_passes_is_an_empty_chart_of_the_window() -> None:
    """No passes still gives a chart of the window (no rows, no bars), not an error."""
    figure = timeline_figure([], START, END)
    assert not artists(figure, "pass:")
    assert figure.axes[0].get_xlim() == pytest.approx((_num(START), _num(END)))
