"""What ``groundplane up`` adds around the handoff manager.

* :class:`RefreshedPasses`: the manager's pass source, replaced wholesale whenever the system
  predicts a new horizon of passes with tracking (the same predictions routing gets), so a run of
  any length has windows ahead of it.
* :class:`IslLineOfSight`: whether two satellites see each other (the segment between them clears
  the Earth and is no longer than ``max_range_km``), from SGP4 at the instant asked.
* :class:`CountingBackend` and :class:`ExecutionLog`: the synthetic backend that also counts every
  execution of a job item's request id, so duplicate executions are seen at the nodes themselves.
* :class:`JobLoad`: submits the run's jobs to the manager and follows their progress.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

import numpy as np
import structlog

from groundplane.handoff.manager import HandoffManager
from groundplane.handoff.planner import PassSchedule, PassWindow
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument, NotFound
from groundplane.links.model import line_of_sight
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr
from groundplane.orbit.passes import Pass
from groundplane.system.report import JobCounters

log = structlog.get_logger("groundplane.system.handoff")

ISL_MAX_RANGE_KM = 5_000.0
"""Longest inter-satellite link the handoff planner counts as usable."""
JOB_PREFIX = "up-job-"
"""Job ids of the run's own jobs (``up-job-<run>-<k>``); item request ids are ``<job>.i<n>``."""
JOB_POLL_WALL_S = 0.5


class RefreshedPasses:
    """A :class:`~groundplane.handoff.planner.PassSource` replaced by :meth:`update`."""

    def __init__(self) -> None:
        self._schedule = PassSchedule(())

    def update(self, passes: Iterable[Pass]) -> None:
        """Take a new set of predicted passes (the previous set is dropped)."""
        self._schedule = PassSchedule.from_passes(passes)

    def windows(self, start: datetime, stop: datetime) -> Sequence[PassWindow]:
        return self._schedule.windows(start, stop)


class IslLineOfSight:
    """``isl_in_view(a, b, at)`` for the handoff planner, from the elements of ``batch``."""

    def __init__(self, batch: SatelliteBatch, max_range_km: float = ISL_MAX_RANGE_KM) -> None:
        if not (math.isfinite(max_range_km) and max_range_km > 0):
            raise InvalidArgument(f"expected max_range_km > 0, got {max_range_km}")
        self._batch = batch
        self._max_range_km = max_range_km

    def __call__(self, sat_a: str, sat_b: str, at: datetime) -> bool:
        try:
            pair = self._batch.subset([self._batch.index_of(sat_a), self._batch.index_of(sat_b)])
        except NotFound:
            return False
        jd, fr = utc_jd_fr(at)
        positions = propagate(pair, jd, fr).r_teme_km[:, 0, :]
        if not np.all(np.isfinite(positions)):
            return False
        a = (float(positions[0, 0]), float(positions[0, 1]), float(positions[0, 2]))
        b = (float(positions[1, 0]), float(positions[1, 1]), float(positions[1, 2]))
        return math.dist(a, b) <= self._max_range_km and line_of_sight(a, b)


class ExecutionLog:
    """How many times the nodes executed each job item's request id."""

    def __init__(self, prefix: str = JOB_PREFIX) -> None:
        self._prefix = prefix
        self.executions: Counter[str] = Counter()

    def record(self, request_id: str) -> None:
        if request_id.startswith(self._prefix):
            self.executions[request_id] += 1

    def duplicates(self) -> int:
        """Items executed more than once."""
        return sum(1 for count in self.executions.values() if count > 1)


class CountingBackend(SyntheticBackend):
    """The synthetic backend, also recording every execution in an :class:`ExecutionLog`."""

    def __init__(
        self, specs: Sequence[SyntheticModelSpec], clock: Clock, executions: ExecutionLog
    ) -> None:
        super().__init__(specs, clock)
        self._executions = executions

    def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self._executions.record(request.request_id)
        return super().generate(request)


class JobLoad:
    """Submits ``jobs`` jobs of ``items`` prompts to the manager and follows them until done."""

    def __init__(  # noqa: PLR0913 - the manager, the counters and the job load's shape by keyword
        self,
        manager: HandoffManager,
        counters: JobCounters,
        executions: ExecutionLog,
        *,
        run_id: str,
        model: str,
        jobs: int,
        items: int,
        max_tokens: int = 32,
    ) -> None:
        if jobs < 0 or items < 1:
            raise InvalidArgument(f"expected jobs ≥ 0 and items ≥ 1, got {jobs} and {items}")
        self._manager = manager
        self._counters = counters
        self._executions = executions
        self._job_ids = [f"{JOB_PREFIX}{run_id}-{k}" for k in range(jobs)]
        self._model = model
        self._items = items
        self._max_tokens = max_tokens

    @property
    def job_ids(self) -> list[str]:
        return list(self._job_ids)

    async def run(self) -> None:
        for job_id in self._job_ids:
            prompts = [f"item {n} of job {job_id}" for n in range(self._items)]
            await self._manager.submit_job(
                self._model, prompts, max_tokens=self._max_tokens, job_id=job_id
            )
            self._counters.items += self._items
        while True:
            if self.update():
                log.info("jobs_done", jobs=len(self._job_ids))
                return
            await asyncio.sleep(JOB_POLL_WALL_S)

    def update(self) -> bool:
        """Refresh the counters; True when every job is done."""
        done, all_done = 0, True
        for job_id in self._job_ids:
            try:
                info = self._manager.get_job(job_id)
            except GroundplaneError:
                all_done = False
                continue
            done += info.done_count
            all_done = all_done and info.state == "done"
        self._counters.completed_items = done
        self._counters.duplicate_items = self._executions.duplicates()
        return all_done
