"""Jobs: lists of prompts run on whichever node is in view (see the manager's module doc)."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.config import RETRY_CAP_S, ManagerConfig
from groundplane.handoff.coverage import Coverage
from groundplane.handoff.events import EventFeed
from groundplane.handoff.metrics import HandoffMetrics
from groundplane.handoff.nodes import NodePort
from groundplane.handoff.planner import PassWindow, TransferPath
from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.handoff.tasks import ManagerTasks
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument, NotFound, Unavailable

log = structlog.get_logger("groundplane.handoff.manager")


@dataclass(frozen=True, slots=True)
class JobInfo:
    job_id: str
    model: str
    state: str
    item_count: int
    done_count: int
    results: dict[int, str]


class Jobs:
    """Runs every job of the store to its end, each as a manager task."""

    def __init__(  # noqa: PLR0913 - the manager's shared parts, each injected by keyword
        self,
        *,
        nodes: NodePort,
        store: HandoffStore,
        clock: Clock,
        coverage: Coverage,
        events: EventFeed,
        metrics: HandoffMetrics,
        tasks: ManagerTasks,
        config: ManagerConfig,
    ) -> None:
        self._nodes = nodes
        self._store = store
        self._clock = clock
        self._coverage = coverage
        self._events = events
        self._metrics = metrics
        self._tasks = tasks
        self._config = config

    def submit(
        self, model: str, prompts: Sequence[str], *, max_tokens: int, job_id: str | None
    ) -> JobInfo:
        if not model:
            raise InvalidArgument("expected a model name for the job, got ''")
        if not prompts or any(not p for p in prompts):
            raise InvalidArgument("expected at least one prompt and no empty prompt in the job")
        if not 1 <= max_tokens <= 8192:
            raise InvalidArgument(f"expected 1 ≤ max_tokens ≤ 8192, got {max_tokens}")
        if not self._tasks.running:
            raise Unavailable("the handoff manager is not running; retry shortly")
        job_id = job_id or f"j-{uuid.uuid4().hex[:16]}"
        self._store.create_job(job_id, model, max_tokens, list(prompts), self._clock.now())
        self._tasks.spawn(self.run(job_id), f"handoff-job:{job_id}")
        return self.get(job_id)

    def get(self, job_id: str, *, include_results: bool = False) -> JobInfo:
        record = self._store.job(job_id)
        results = self._store.item_results(job_id) if include_results else {}
        return JobInfo(
            record.job_id,
            record.model,
            record.state,
            record.item_count,
            record.done_count,
            results,
        )

    async def run(self, job_id: str) -> None:
        """Run the job to the end; a bug is logged and the job restarts from the store (its kept
        results stay) after a pause, the manager and other jobs unharmed."""
        pause_s = self._config.pause_s
        while True:
            try:
                await self._job(job_id)
            except NotFound:
                log.warning("handoff_job_missing", job_id=job_id)
                return
            except Exception:
                log.exception("handoff_job_crashed", job_id=job_id, retry_s=pause_s)
                await self._clock.sleep(pause_s)
                pause_s = min(2 * pause_s, RETRY_CAP_S)
            else:
                return

    async def _job(self, job_id: str) -> None:
        record = self._store.job(job_id)
        pending: deque[tuple[int, str]] = deque(self._store.pending_items(job_id))
        estimate = [self._config.job_item_estimate_s]
        margin_s = self._config.settings.lead_margin_s
        previous: PassWindow | None = None
        paused_since: datetime | None = None
        while pending:
            now = self._clock.now()
            window = self._coverage.best_now(record.model, estimate[0] + margin_s)
            if window is None:
                if paused_since is None:
                    paused_since = now
                    nxt = self._coverage.next_aos(record.model, now)
                    self._events.emit(
                        HandoffEvent(
                            "job",
                            job_id,
                            "checkpointed",
                            now,
                            now,
                            previous.los if previous else now,
                            previous.satellite_id if previous else "",
                            previous.station_id if previous else "",
                            nxt.satellite_id if nxt else "",
                            nxt.station_id if nxt else "",
                            TransferPath.GROUND.value,
                            0,
                            0.0,
                            f"paused with {len(pending)} items left"
                            + (f"; resumes at {nxt.aos.isoformat()}" if nxt else ""),
                        )
                    )
                await self._clock.sleep(self._config.pause_s)
                continue
            if previous is not None and (
                window.satellite_id != previous.satellite_id or paused_since is not None
            ):
                gap_s = (now - (paused_since or now)).total_seconds()
                self._metrics.handoff("completed")
                self._events.emit(
                    HandoffEvent(
                        "job",
                        job_id,
                        "completed",
                        now,
                        now,
                        previous.los,
                        previous.satellite_id,
                        previous.station_id,
                        window.satellite_id,
                        window.station_id,
                        TransferPath.NONE.value,
                        0,
                        gap_s,
                        f"{len(pending)} items left; progress is kept in the ground store",
                    )
                )
            paused_since = None
            previous = window
            stop_at = window.los - timedelta(seconds=margin_s)
            async with asyncio.TaskGroup() as workers:
                for worker in range(self._config.job_parallelism):
                    workers.create_task(
                        self._worker(record, window, pending, stop_at, estimate),
                        name=f"handoff-job:{job_id}:w{worker}",
                    )
            if pending and self._clock.now() < stop_at - timedelta(seconds=estimate[0]):
                await self._clock.sleep(self._config.pause_s)  # node trouble
        self._store.finish_job(job_id, self._clock.now())
        log.info("handoff_job_done", job_id=job_id, items=record.item_count)

    async def _worker(
        self,
        record: st.JobRecord,
        window: PassWindow,
        pending: deque[tuple[int, str]],
        stop_at: datetime,
        estimate: list[float],
    ) -> None:
        while pending:
            started = self._clock.now()
            if started + timedelta(seconds=estimate[0]) > stop_at:
                return
            index, prompt = pending.popleft()
            try:
                text = await self._nodes.run_prompt(
                    window.satellite_id,
                    window.station_id,
                    model=record.model,
                    prompt=prompt,
                    max_tokens=record.max_tokens,
                    request_id=f"{record.job_id}.i{index}",
                    deadline=min(window.los, started + timedelta(seconds=3 * estimate[0] + 1)),
                )
            except GroundplaneError as error:
                pending.appendleft((index, prompt))
                log.info(
                    "handoff_job_item_failed", job_id=record.job_id, item=index, error=str(error)
                )
                return
            self._store.complete_item(
                record.job_id, index, text, window.satellite_id, self._clock.now()
            )
            took_s = (self._clock.now() - started).total_seconds()
            estimate[0] += 0.3 * (took_s - estimate[0])
