"""Whether two satellites see each other, for the handoff planner's ISL paths.

:class:`IslLineOfSight` answers ``isl_in_view(a, b, at)`` from the catalog source's newest view
at every call (an element replaced through tracking is used from its next question on): the two
satellites are propagated with SGP4 to ``at`` and the segment between them must clear the Earth
(:func:`groundplane.links.client.line_of_sight`, the link emulator's own test) and be no longer
than ``max_range_km``. A satellite missing from the view, or no view yet, has no ISL.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from groundplane.handoff.catalog import CatalogSource
from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.links.client import line_of_sight
from groundplane.orbit.geometry import propagate, utc_jd_fr

ISL_MAX_RANGE_KM = 5_000.0
"""Longest inter-satellite link the handoff planner counts as usable."""


class IslLineOfSight:
    """``isl_in_view(a, b, at)`` over the newest view of ``catalog``."""

    def __init__(self, catalog: CatalogSource, max_range_km: float = ISL_MAX_RANGE_KM) -> None:
        if not (math.isfinite(max_range_km) and max_range_km > 0):
            raise InvalidArgument(f"expected max_range_km > 0, got {max_range_km}")
        self._catalog = catalog
        self._max_range_km = max_range_km

    def __call__(self, sat_a: str, sat_b: str, at: datetime) -> bool:
        view = self._catalog.current()
        if view is None:
            return False
        batch = view.batch
        try:
            pair = batch.subset([batch.index_of(sat_a), batch.index_of(sat_b)])
        except NotFound:
            return False
        jd, fr = utc_jd_fr(at)
        positions = propagate(pair, jd, fr).r_teme_km[:, 0, :]
        if not np.all(np.isfinite(positions)):
            return False
        a = (float(positions[0, 0]), float(positions[0, 1]), float(positions[0, 2]))
        b = (float(positions[1, 0]), float(positions[1, 1]), float(positions[1, 2]))
        return math.dist(a, b) <= self._max_range_km and line_of_sight(a, b)
