"""Sky plot: the passes of satellites over one site on a polar chart of the sky.

North is up, azimuth runs clockwise, the zenith is at the centre and the horizon (elevation 0°)
on the ring at radius 90: the radius is the zenith angle ``90° − elevation``. The site's threshold
``max(min elevation, mask(azimuth))`` is drawn as a line with the blocked sky below it shaded.
Each pass is one line of look angles from AOS to LOS, with AOS, TCA and LOS labelled (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import numpy as np
from matplotlib.figure import Figure
from matplotlib.projections.polar import PolarAxes

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import FloatArray, SatelliteBatch, look_angles, utc_jd_fr
from groundplane.orbit.passes import Pass
from groundplane.orbit.sites import Site

DEFAULT_STEP_S = 10.0
"""Seconds between the look angles drawn for a pass (AOS, TCA and LOS are always drawn)."""


@dataclass(frozen=True)
class SkyTrack:
    """The look angles of one pass at ``times`` (AOS first, LOS last, TCA among them)."""

    found: Pass
    times: tuple[datetime, ...]
    azimuth_deg: FloatArray
    elevation_deg: FloatArray


def pass_times(found: Pass, step_s: float = DEFAULT_STEP_S) -> list[datetime]:
    """AOS, AOS + step, … before LOS, then LOS; TCA inserted where it falls."""
    if not (math.isfinite(step_s) and step_s > 0):
        raise InvalidArgument(f"step_s must be positive seconds, got {step_s}")
    count = math.ceil(found.duration_s / step_s)
    grid = [found.aos + timedelta(seconds=i * step_s) for i in range(count)]
    return sorted({*grid, found.tca, found.los})


def sky_tracks(
    batch: SatelliteBatch, site: Site, passes: Sequence[Pass], step_s: float = DEFAULT_STEP_S
) -> list[SkyTrack]:
    """Look angles (:func:`~groundplane.orbit.geometry.look_angles`) along each pass."""
    tracks = []
    for found in passes:
        if found.site_id != site.id:
            raise InvalidArgument(
                f"pass of {found.catalog_id} is over site {found.site_id!r}, expected {site.id!r}"
            )
        times = pass_times(found, step_s)
        jd, fr = utc_jd_fr(times)
        one = batch.subset([batch.index_of(found.catalog_id)])
        looks = look_angles(one, [site], jd, fr)
        tracks.append(
            SkyTrack(found, tuple(times), looks.azimuth_deg[0, 0], looks.elevation_deg[0, 0])
        )
    return tracks


def hms(moment: datetime) -> str:
    """``HH:MM:SS`` of a UTC instant rounded to the nearest second."""
    return (moment + timedelta(microseconds=500_000)).strftime("%H:%M:%S")


def sky_figure(
    site: Site,
    tracks: Sequence[SkyTrack],
    *,
    names: Mapping[str, str] | None = None,
    title: str = "",
) -> Figure:
    """A polar sky plot of ``tracks`` over ``site`` (radius = zenith angle, degrees).

    Artists: ``horizon`` (the threshold line), ``mask`` (the blocked sky), ``pass:i`` (pass
    ``i``'s look angles as theta = azimuth in radians, r = 90 − elevation) and ``aos:i``,
    ``tca:i``, ``los:i`` (the labels, placed at the look angles of those instants).
    """
    names = names or {}
    figure = Figure(figsize=(6.4, 7.0), layout="constrained")
    ax = cast(PolarAxes, figure.add_subplot(projection="polar"))
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)

    azimuth = np.union1d(np.linspace(0.0, 360.0, 721), [p[0] for p in site.mask.points])
    threshold = site.threshold_deg(azimuth)
    lowest = min(0.0, float(threshold.min()))
    r_max = 90.0 - lowest
    theta = np.radians(azimuth)
    ax.fill_between(
        theta, 90.0 - threshold, r_max, color="0.85", zorder=0, gid="mask", label="blocked"
    )
    ax.plot(theta, 90.0 - threshold, color="0.35", linewidth=1.2, gid="horizon")

    colours = [f"C{i % 10}" for i in range(len(tracks))]
    for index, (track, colour) in enumerate(zip(tracks, colours, strict=True)):
        found = track.found
        name = names.get(found.catalog_id, "")
        label = f"{found.catalog_id} {name}".strip() + f", max {found.max_elevation_deg:.0f}°"
        t_rad = np.radians(track.azimuth_deg)
        r_deg = 90.0 - track.elevation_deg
        ax.plot(t_rad, r_deg, color=colour, linewidth=1.6, gid=f"pass:{index}", label=label)
        for key, moment, clipped in (
            ("aos", found.aos, found.aos_clipped),
            ("tca", found.tca, False),
            ("los", found.los, found.los_clipped),
        ):
            at = track.times.index(moment)
            word = "window " + ("start" if key == "aos" else "end") if clipped else key.upper()
            ax.annotate(
                f"{word} {hms(moment)}",
                xy=(float(t_rad[at]), float(r_deg[at])),
                # Alternate above and below the point: neighbouring passes share horizon points.
                xytext=(4, 4) if index % 2 == 0 else (4, -10),
                textcoords="offset points",
                fontsize=7,
                color=colour,
                gid=f"{key}:{index}",
            )
            ax.plot([t_rad[at]], [r_deg[at]], marker="o" if key == "tca" else ".", color=colour)

    ax.set_rlim(0.0, r_max)
    rings = [r for r in (30.0, 60.0, 90.0) if r <= r_max]
    ax.set_rticks(rings)
    ax.set_yticklabels([f"{90.0 - r:.0f}°" for r in rings])
    ax.set_rlabel_position(135.0)
    ax.set_xticks(np.radians(np.arange(0.0, 360.0, 45.0)))
    ax.set_xticklabels(["N", "NE", "E", "SE", "S", "SW", "W", "NW"])
    where = f"{site.name or site.id} ({site.lat_deg:.3f}°, {site.lon_deg:.3f}°)"
    ax.set_title(title or f"Passes over {where}, times UTC", fontsize=10)
    if tracks:
        figure.legend(loc="outside lower center", fontsize=7, ncols=2, frameon=False)
    return figure
