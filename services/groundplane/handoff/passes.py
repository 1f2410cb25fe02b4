"""The handoff manager's pass windows, predicted from the newest catalog view.

:class:`RefreshedPasses` is the manager's :class:`~groundplane.handoff.planner.PassSource`: a
:class:`~groundplane.handoff.planner.PassSchedule` replaced wholesale by every prediction. While
:meth:`RefreshedPasses.run` runs it predicts the passes of the catalog source's newest view over
``horizon_s`` of simulated time with :func:`groundplane.orbit.passes.find_passes` in a worker
thread (the event loop keeps serving), again as soon as the view changes (an element added or
replaced through tracking) and every half horizon, so a run of any length has windows ahead of
it. A view that changes during a prediction is predicted again right after; a prediction that
fails is logged and the passes held stay until the next one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import structlog

from groundplane.handoff.catalog import CatalogSource, CatalogView
from groundplane.handoff.planner import PassSchedule, PassWindow
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.passes import Pass, find_passes

log = structlog.get_logger("groundplane.handoff.passes")

DEFAULT_HORIZON_S = 4 * 3600.0
"""Simulated seconds of passes each prediction covers."""


class RefreshedPasses:
    """A pass source predicted from ``catalog`` (see the module doc)."""

    def __init__(
        self,
        catalog: CatalogSource,
        clock: Clock,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
    ) -> None:
        if not (math.isfinite(horizon_s) and horizon_s > 0):
            raise InvalidArgument(f"expected horizon_s > 0 simulated seconds, got {horizon_s}")
        self._catalog = catalog
        self._clock = clock
        self._horizon_s = horizon_s
        self._schedule = PassSchedule(())
        self._changed = asyncio.Event()
        self._predicted = asyncio.Event()
        self._next_prediction = asyncio.Event()
        self.predicted_version: int | None = None
        """Catalog revision of the passes held (None before the first prediction)."""
        self.attempted_version: int | None = None
        """Catalog revision of the last prediction tried (failed or not)."""
        catalog.add_listener(self._on_view)

    def update(self, passes: Iterable[Pass]) -> None:
        """Take a new set of predicted passes (the previous set is dropped)."""
        self._schedule = PassSchedule.from_passes(passes)

    def windows(self, start: datetime, stop: datetime) -> Sequence[PassWindow]:
        return self._schedule.windows(start, stop)

    @property
    def ready(self) -> bool:
        """A first prediction exists."""
        return self._predicted.is_set()

    async def wait_ready(self, timeout_s: float | None) -> None:
        """Until a first prediction exists (TimeoutError after ``timeout_s`` wall seconds;
        None: as long as it takes, e.g. while tracking is unreachable)."""
        async with asyncio.timeout(timeout_s):
            await self._predicted.wait()

    async def wait_for_version(
        self, version: int, timeout_s: float, *, attempted: bool = False
    ) -> None:
        """Until the passes held were predicted from catalog revision ``version`` or a later
        one (``attempted``: until a prediction of it was tried, failed or not); TimeoutError
        after ``timeout_s`` wall seconds."""
        async with asyncio.timeout(timeout_s):
            while True:
                seen = self.attempted_version if attempted else self.predicted_version
                if seen is not None and seen >= version:
                    return
                await self._next_prediction.wait()

    async def run(self) -> None:
        """Predict now, on every new view and every half horizon, until cancelled."""
        while True:
            self._changed.clear()
            view = self._catalog.current()
            if view is None:
                await self._changed.wait()
                continue
            try:
                await self._predict(view)
            except Exception:  # a bad view keeps the last passes; the next view or period retries
                log.exception("handoff_passes_failed", version=view.version)
            self.attempted_version = view.version
            done, self._next_prediction = self._next_prediction, asyncio.Event()
            done.set()
            if self._changed.is_set():
                continue  # a newer view arrived while predicting
            try:
                async with asyncio.timeout(self._horizon_s / 2 / self._clock.speed):
                    await self._changed.wait()
            except TimeoutError:
                pass  # half a horizon passed: predict further ahead

    async def _predict(self, view: CatalogView) -> None:
        start = self._clock.now()
        stop = start + timedelta(seconds=self._horizon_s)
        passes = await asyncio.to_thread(find_passes, view.batch, view.sites, start, stop)
        self.update(passes)
        self.predicted_version = view.version
        self._predicted.set()
        log.info("handoff_passes_predicted", version=view.version, passes=len(passes))

    def _on_view(self, _view: CatalogView) -> None:
        self._changed.set()
