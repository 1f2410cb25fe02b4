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
from groundplane.kernel.errors import (
    DeadlineExceeded,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from groundplane.kernel.validation import bounded_id

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
        bounded_id("model", model)
        if job_id:
            bounded_id("job_id", job_id)
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
        sent_to = self._store.item_nodes(job_id)
        # [0]: the item time to plan with; [1]: its running mean; [2]: a slowly decaying
        # maximum. Planning with the larger one keeps a slow spell from leaving items without
        # an answer at LOS (each such item must wait for its node to come back).
        first = self._config.job_item_estimate_s
        estimate = [first, first, first]
        margin_s = self._config.settings.lead_margin_s
        previous: PassWindow | None = None
        paused_since: datetime | None = None
        while pending:
            now = self._clock.now()
            self._release_lost(record.job_id, sent_to)
            among = _pinned_only(pending, sent_to)
            window = self._window(record, estimate[0] + margin_s, among, paused_since, now)
            if window is None:
                if paused_since is None:
                    paused_since = now
                    nxt = self._coverage.next_aos(record.model, now, among=among)
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
                        self._worker(record, window, pending, sent_to, stop_at, estimate),
                        name=f"handoff-job:{job_id}:w{worker}",
                    )
            if pending and self._clock.now() < stop_at - timedelta(seconds=estimate[0]):
                await self._clock.sleep(self._config.pause_s)  # node trouble, or items elsewhere
        self._store.finish_job(job_id, self._clock.now())
        log.info("handoff_job_done", job_id=job_id, items=record.item_count)

    def _window(
        self,
        record: st.JobRecord,
        min_remaining_s: float,
        among: set[str] | None,
        paused_since: datetime | None,
        now: datetime,
    ) -> PassWindow | None:
        """The window to run items on: energy-aware, a sunlit node while the job has waited less
        than ``job_sunlight_wait_s`` for one, then any fit node."""
        settings = self._config.settings
        if settings.energy_aware:
            sunlit = self._coverage.best_now(
                record.model, min_remaining_s, among=among, sunlit_only=True
            )
            waited_s = (now - paused_since).total_seconds() if paused_since is not None else 0.0
            if sunlit is not None or waited_s < settings.job_sunlight_wait_s:
                return sunlit
        return self._coverage.best_now(record.model, min_remaining_s, among=among)

    def _release_lost(self, job_id: str, sent_to: dict[int, str]) -> None:
        """Forget the node of items sent to a node the directory saw die: its execution died
        with it and its late answer is refused as stale, so the item may run elsewhere."""
        for index, satellite_id in list(sent_to.items()):
            if self._coverage.lost(satellite_id):
                log.info("handoff_job_item_node_lost", job_id=job_id, item=index, node=satellite_id)
                self._store.release_item(job_id, index)
                del sent_to[index]

    async def _worker(  # noqa: PLR0913, PLR0917 - the job, its window, its queues and its budget
        self,
        record: st.JobRecord,
        window: PassWindow,
        pending: deque[tuple[int, str]],
        sent_to: dict[int, str],
        stop_at: datetime,
        estimate: list[float],
    ) -> None:
        """Run pending items on ``window`` until ``stop_at``: items never sent, or sent to this
        satellite without an answer (it answers their request id from what it already ran)."""
        while pending:
            started = self._clock.now()
            if started + timedelta(seconds=estimate[0]) > stop_at:
                return
            item = _take(pending, sent_to, window.satellite_id)
            if item is None:
                return  # the rest may have run on another node: only that node is asked
            index, prompt = item
            self._store.dispatch_item(record.job_id, index, window.satellite_id)
            sent_to[index] = window.satellite_id
            try:
                # The whole pass: an answer slower than the estimate is still awaited (a
                # shorter deadline would leave an item that ran, or still runs, in doubt).
                text = await self._nodes.run_prompt(
                    window.satellite_id,
                    window.station_id,
                    model=record.model,
                    prompt=prompt,
                    max_tokens=record.max_tokens,
                    request_id=f"{record.job_id}.i{index}",
                    deadline=window.los,
                )
            except GroundplaneError as error:
                pending.appendleft((index, prompt))
                if not isinstance(error, DeadlineExceeded | Unavailable):
                    # The node answered with a refusal at admission: it did not run the item.
                    self._store.release_item(record.job_id, index)
                    del sent_to[index]
                log.info(
                    "handoff_job_item_failed",
                    job_id=record.job_id,
                    item=index,
                    error=str(error),
                    sent_to=sent_to.get(index, ""),
                )
                return
            self._store.complete_item(
                record.job_id, index, text, window.satellite_id, self._clock.now()
            )
            sent_to.pop(index, None)
            took_s = (self._clock.now() - started).total_seconds()
            estimate[1] += 0.3 * (took_s - estimate[1])
            estimate[2] = max(took_s, 0.9 * estimate[2])
            estimate[0] = max(estimate[1], estimate[2])


def _pinned_only(pending: deque[tuple[int, str]], sent_to: dict[int, str]) -> set[str] | None:
    """When every pending item was sent to a node without an answer: those nodes (the job waits
    for one of them); else None (any node will do for the others)."""
    if all(index in sent_to for index, _ in pending):
        return {sent_to[index] for index, _ in pending}
    return None


def _take(
    pending: deque[tuple[int, str]], sent_to: dict[int, str], satellite_id: str
) -> tuple[int, str] | None:
    """Remove and return the first pending item that may run on ``satellite_id``."""
    for item in pending:
        if sent_to.get(item[0], satellite_id) == satellite_id:
            pending.remove(item)
            return item
    return None
