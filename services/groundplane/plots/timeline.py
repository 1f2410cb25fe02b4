"""Pass timeline: one row per station × satellite, one bar per pass from AOS to LOS (UTC).

Bars are coloured by the pass's maximum elevation; a pass clipped by the window is hatched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.passes import Pass
from groundplane.plots.dates import date_num, utc_date_axis

ROW_HEIGHT = 0.8
MAX_ELEVATION_RANGE_DEG = (0.0, 90.0)


def rows_of(
    passes: Sequence[Pass], site_order: Sequence[str] = (), satellite_order: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The (site id, catalog id) rows with at least one pass.

    Sites in ``site_order`` and satellites in ``satellite_order`` come first in that order; the
    rest follow sorted by id.
    """
    site_rank = {site: i for i, site in enumerate(site_order)}
    sat_rank = {sat: i for i, sat in enumerate(satellite_order)}

    def key(row: tuple[str, str]) -> tuple[int, str, int, str]:
        site, sat = row
        return (site_rank.get(site, len(site_rank)), site, sat_rank.get(sat, len(sat_rank)), sat)

    return sorted({(p.site_id, p.catalog_id) for p in passes}, key=key)


def timeline_figure(  # noqa: PLR0913 - the passes, the window and optional labels by keyword
    passes: Sequence[Pass],
    start: datetime,
    end: datetime,
    *,
    site_names: Mapping[str, str] | None = None,
    satellite_names: Mapping[str, str] | None = None,
    title: str = "",
) -> Figure:
    """A Gantt chart of ``passes`` over ``start`` … ``end``.

    Row ``i`` (y = ``i``, top row first) is ``rows_of(passes, site_names, satellite_names)[i]``
    (the order of the name mappings orders the rows); the bar of a pass is the
    rectangle ``x = date2num(aos)``, ``width = date2num(los) − date2num(aos)`` with gid
    ``pass:<site>:<sat>:<aos ISO>``. The x axis spans exactly the window.
    """
    if not start < end:
        raise InvalidArgument(f"the window must have start < end, got {start} … {end}")
    site_names = site_names or {}
    satellite_names = satellite_names or {}
    rows = rows_of(passes, list(site_names), list(satellite_names))
    row_of = {row: i for i, row in enumerate(rows)}
    height_in = min(40.0, 1.6 + 0.28 * max(len(rows), 1))
    figure = Figure(figsize=(10.0, height_in), layout="constrained")
    ax = figure.add_subplot()
    norm = Normalize(*MAX_ELEVATION_RANGE_DEG)
    cmap = colormaps["viridis"]
    for found in passes:
        y = row_of[(found.site_id, found.catalog_id)]
        left = date_num(found.aos)
        width = date_num(found.los) - left
        ax.barh(
            y,
            width,
            left=left,
            height=ROW_HEIGHT,
            color=cmap(norm(found.max_elevation_deg)),
            edgecolor="0.2",
            linewidth=0.4,
            hatch="///" if found.aos_clipped or found.los_clipped else None,
            gid=f"pass:{found.site_id}:{found.catalog_id}:{found.aos.isoformat()}",
        )
    labels = []
    for site_id, catalog_id in rows:
        site = site_names.get(site_id) or site_id
        sat = satellite_names.get(catalog_id) or catalog_id
        labels.append(f"{site} · {sat}")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    ax.set_xlim(date_num(start), date_num(end))
    utc_date_axis(ax.xaxis)
    ax.grid(True, axis="x", color="0.85", linewidth=0.6)
    ax.set_xlabel("UTC")
    scalar = figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        pad=0.01,
        fraction=0.03,
        label="max elevation (°)",
    )
    scalar.ax.tick_params(labelsize=7)
    ax.set_title(title or f"{len(passes)} passes (hatched: cut by the window)", fontsize=10)
    return figure
