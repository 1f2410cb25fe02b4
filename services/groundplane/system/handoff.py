"""What ``groundplane up`` adds around the handoff manager for its run's report (the pass windows
and ISL line of sight are the handoff package's own: :mod:`groundplane.handoff.passes`,
:mod:`groundplane.handoff.isl`).

* :class:`CountingBackend` and :class:`ExecutionLog`: the synthetic backend that also counts every
  execution of a job item's request id, so duplicate executions are seen at the nodes themselves.
* :class:`JobLoad`: submits the run's jobs to the manager and follows their progress.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import structlog

from groundplane.handoff.manager import HandoffManager
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.system.report import JobCounters

log = structlog.get_logger("groundplane.system.handoff")

JOB_PREFIX = "up-job-"
"""Job ids of the run's own jobs (``up-job-<run>-<k>``); item request ids are ``<job>.i<n>``."""
JOB_POLL_WALL_S = 0.5


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
