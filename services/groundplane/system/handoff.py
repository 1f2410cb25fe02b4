"""What ``groundplane up`` adds around the handoff manager for its run's report (the pass windows
and ISL line of sight are the handoff package's own: :mod:`groundplane.handoff.passes`,
:mod:`groundplane.handoff.isl`).

* :class:`CountingBackend` and :class:`ExecutionLog`: the synthetic backend that also counts every
  execution of a job item's request id, so duplicate executions are seen at the nodes themselves.
* :class:`ExecutionFiles`: the same count read from the nodes shards' ``--execution-log`` files
  (JSON lines), when the nodes run in processes of their own.
* :class:`JobLoad`: submits the run's jobs to the manager and follows their progress, through a
  :class:`JobService`: the manager object in-process (:class:`ManagerJobs`) or its gRPC
  ``HandoffService`` (:class:`GrpcJobs`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import structlog

from groundplane.handoff.manager import HandoffManager
from groundplane.handoff.v1 import handoff_pb2, handoff_pb2_grpc
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument, error_from_status
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.node.executions import read_execution_log
from groundplane.system.report import JobCounters

log = structlog.get_logger("groundplane.system.handoff")

JOB_PREFIX = "up-job-"
"""Job ids of the run's own jobs (``up-job-<run>-<k>``); item request ids are ``<job>.i<n>``."""
JOB_POLL_WALL_S = 0.5
GRPC_CALL_TIMEOUT_S = 10.0
"""Wall seconds one call to the handoff service may take."""


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


@dataclass(frozen=True)
class JobProgress:
    """Where one job stands: ``running`` or ``done``, and its items with a kept result."""

    state: str
    done_count: int


class JobService(Protocol):
    """What :class:`JobLoad` needs of the handoff manager: submit a job, read its progress."""

    async def submit_job(
        self, model: str, prompts: Sequence[str], *, max_tokens: int, job_id: str
    ) -> None: ...

    async def get_job(self, job_id: str) -> JobProgress: ...


class ManagerJobs:
    """:class:`JobService` on the in-process manager (``groundplane up --in-process``)."""

    def __init__(self, manager: HandoffManager) -> None:
        self._manager = manager

    async def submit_job(
        self, model: str, prompts: Sequence[str], *, max_tokens: int, job_id: str
    ) -> None:
        await self._manager.submit_job(model, prompts, max_tokens=max_tokens, job_id=job_id)

    async def get_job(self, job_id: str) -> JobProgress:
        info = self._manager.get_job(job_id)
        return JobProgress(info.state, info.done_count)


class GrpcJobs:
    """:class:`JobService` over ``groundplane.handoff.v1.HandoffService`` (SubmitJob, GetJob).

    A failed call raises the kernel error of its status code (UNAVAILABLE while the handoff
    process restarts, NOT_FOUND for an unknown job).
    """

    def __init__(
        self,
        stub: handoff_pb2_grpc.HandoffServiceAsyncStub,
        *,
        timeout_s: float = GRPC_CALL_TIMEOUT_S,
    ) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def submit_job(
        self, model: str, prompts: Sequence[str], *, max_tokens: int, job_id: str
    ) -> None:
        request = handoff_pb2.SubmitJobRequest(
            model=model, prompts=list(prompts), max_tokens=max_tokens, job_id=job_id
        )
        try:
            await self._stub.SubmitJob(request, timeout=self._timeout_s, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            raise _rpc_error(error, "SubmitJob") from None

    async def get_job(self, job_id: str) -> JobProgress:
        try:
            response = await self._stub.GetJob(
                handoff_pb2.GetJobRequest(job_id=job_id), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise _rpc_error(error, "GetJob") from None
        return JobProgress(response.job.state, response.job.done_count)


def _rpc_error(error: grpc.aio.AioRpcError, method: str) -> GroundplaneError:
    return error_from_status(error.code(), error.details() or "", upstream=f"handoff {method}")


class DuplicateSource(Protocol):
    """Counts job items the nodes executed more than once."""

    def duplicates(self) -> int: ...


class ExecutionFiles:
    """Duplicate executions from the nodes shards' ``--execution-log`` files.

    Each shard appends one JSON line per backend execution (``groundplane.node.executions``);
    :meth:`duplicates` reads every file again (a file not there yet counts as empty, a torn last
    line is skipped) and counts the job items executed more than once over all of them.
    """

    def __init__(self, paths: Sequence[Path], prefix: str = JOB_PREFIX) -> None:
        self._paths = tuple(paths)
        self._prefix = prefix

    def duplicates(self) -> int:
        counts: Counter[str] = Counter()
        for path in self._paths:
            counts.update(read_execution_log(path).counts(self._prefix))
        return sum(1 for count in counts.values() if count > 1)


class JobLoad:
    """Submits ``jobs`` jobs of ``items`` prompts to the manager and follows them until done."""

    def __init__(  # noqa: PLR0913 - the job service, the counters and the load's shape by keyword
        self,
        service: JobService,
        counters: JobCounters,
        executions: DuplicateSource,
        *,
        run_id: str,
        model: str,
        jobs: int,
        items: int,
        max_tokens: int = 32,
    ) -> None:
        if jobs < 0 or items < 1:
            raise InvalidArgument(f"expected jobs ≥ 0 and items ≥ 1, got {jobs} and {items}")
        self._service = service
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
            await self._service.submit_job(
                self._model, prompts, max_tokens=self._max_tokens, job_id=job_id
            )
            self._counters.items += self._items
        while True:
            if await self.update():
                log.info("jobs_done", jobs=len(self._job_ids))
                return
            await asyncio.sleep(JOB_POLL_WALL_S)

    async def update(self) -> bool:
        """Refresh the counters; True when every job is done."""
        done, all_done = 0, True
        for job_id in self._job_ids:
            try:
                progress = await self._service.get_job(job_id)
            except GroundplaneError:
                all_done = False
                continue
            done += progress.done_count
            all_done = all_done and progress.state == "done"
        self._counters.completed_items = done
        self._counters.duplicate_items = self._executions.duplicates()
        return all_done
