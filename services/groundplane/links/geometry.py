"""Ground-link geometry from tracking: which (station, satellite) links are up at an instant.

:class:`TrackedGroundGeometry` is the link emulator's ``ground_geometry`` provider in a running
system. One call propagates every satellite once (``SatrecArray``) and computes look angles from
every station at that instant (tracking's :func:`~groundplane.orbit.geometry.look_angles`,
vectorised over satellites × stations); a link is up while the satellite is above the station's
threshold (``max(min elevation, horizon mask at the azimuth)``, the same rule routing and pass
prediction use). Only the pairs that are up are returned: the emulator treats absent pairs as down.

One instant of a few hundred satellites × a dozen stations costs well under a millisecond, so the
emulator may call it on the event loop once per tick; for very large constellations wrap it with
:func:`asyncio.to_thread` in a feed that caches the latest sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from groundplane.kernel.errors import InvalidArgument
from groundplane.links.model import LinkGeometry
from groundplane.orbit.geometry import SatelliteBatch, SiteFrames, look_angles, utc_jd_fr
from groundplane.orbit.sites import Site

GroundKey = tuple[str, str]


class TrackedGroundGeometry:
    """``(at) -> {(station, satellite): LinkGeometry}`` for the pairs in view at ``at``."""

    def __init__(self, batch: SatelliteBatch, stations: Sequence[Site]) -> None:
        if not stations:
            raise InvalidArgument("expected at least one ground station, got none")
        self._batch = batch
        self._frames = SiteFrames(stations)
        self.samples_total = 0

    @property
    def station_ids(self) -> tuple[str, ...]:
        return self._frames.ids

    def __call__(self, at: datetime) -> dict[GroundKey, LinkGeometry]:
        return self.sample(at)

    def sample(self, at: datetime) -> dict[GroundKey, LinkGeometry]:
        """Every link up at ``at`` with its slant range and elevation."""
        self.samples_total += 1
        if len(self._batch) == 0:
            return {}
        jd, fr = utc_jd_fr(at)
        angles = look_angles(self._batch, self._frames, jd, fr)
        elevation = angles.elevation_deg[:, :, 0]  # (S, K)
        azimuth = angles.azimuth_deg[:, :, 0]
        site_index = np.broadcast_to(np.arange(len(self._frames)), elevation.shape)
        # NaN (SGP4 could not place the satellite) compares False: never up.
        with np.errstate(invalid="ignore"):
            threshold = self._frames.threshold_deg(site_index, np.nan_to_num(azimuth))
            up = elevation >= threshold
        sat_idx, site_idx = np.nonzero(up)
        ranges = angles.range_km[sat_idx, site_idx, 0]
        elevations = elevation[sat_idx, site_idx]
        sat_ids, site_ids = self._batch.ids, self._frames.ids
        return {
            (site_ids[int(k)], sat_ids[int(s)]): LinkGeometry(True, float(rng), float(el))
            for s, k, rng, el in zip(
                sat_idx.tolist(),
                site_idx.tolist(),
                ranges.tolist(),
                elevations.tolist(),
                strict=True,
            )
        }


class FixedGroundGeometry:
    """Every given pair always up at ``range_km`` (benchmarks: no geometry, no light time)."""

    def __init__(self, pairs: Sequence[GroundKey], range_km: float = 0.0) -> None:
        self._links = {pair: LinkGeometry(True, range_km, 90.0) for pair in pairs}

    def __call__(self, at: datetime) -> dict[GroundKey, LinkGeometry]:
        return dict(self._links)


class SwitchableGroundGeometry:
    """A ground-geometry provider whose satellites and stations can be replaced while it runs.

    The link emulator keeps calling the same provider; :meth:`use` swaps in the geometry of a
    new catalog (a whole :class:`TrackedGroundGeometry`, one reference assignment, so a sample
    running in a worker thread finishes on the geometry it started with). The next sample, at
    the next tick, uses the new one. With no stations nothing is in view.
    """

    def __init__(self) -> None:
        self._geometry: TrackedGroundGeometry | None = None
        self.switches = 0

    def use(self, batch: SatelliteBatch, stations: Sequence[Site]) -> None:
        self._geometry = TrackedGroundGeometry(batch, stations) if stations else None
        self.switches += 1

    def __call__(self, at: datetime) -> dict[GroundKey, LinkGeometry]:
        geometry = self._geometry
        return geometry.sample(at) if geometry is not None else {}
