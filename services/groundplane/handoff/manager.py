"""The handoff manager: sessions and jobs that outlive a satellite pass.

::

    manager = HandoffManager(nodes, directory, clock, HandoffStore(path), passes)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(manager.run(), name="handoff-manager")
        await manager.wait_ready()
        info = await manager.create_session("synth-7b")
        turn = await manager.send_turn(info.session_id, "hello", deadline=clock.now() + 30 s)

**Sessions.** A session is served by one (satellite, station) pass at a time under a *session
epoch*. Every turn goes through :meth:`HandoffManager.send_turn`, which sends it to the serving
node with ``session_epoch`` = the current epoch and a request id derived from (session, turn
index, epoch), and records the answer in the ground store before returning it: the ground copy of
the transcript is the checkpoint a session resumes from. Turns of one session run one at a time.

A supervisor task per session re-plans every few seconds (:func:`planner.plan_handoff`) and at
the plan time, holding the session's lock (a turn in flight finishes first; turns sent meanwhile
wait), it: reserves a new epoch (persisted), exports the state from the old node with that epoch
as the fence (the old node refuses later turns at once, and any late answer of the old epoch is
rejected because it carries the old epoch), waits the modelled transfer time of
``context tokens × bytes per token`` at the chosen path's rate, imports the state on the
successor under the new epoch, and switches the route in one store transaction. The time turns
were held is the *interruption*. When no successor can take it, the state is checkpointed to the
ground store and the session resumes at the next AOS; turns sent meanwhile wait within their
deadline or fail ``UNAVAILABLE`` with the next AOS as ``next_opportunity``.

Sessions leaving one pass by one path share that link (:class:`planner.LinkKey`), so the manager
keeps a per-link transfer schedule: every plan records its session's transfer time under its
link, and the session's plan time moves earlier by the transfer times of the sessions after it
on that link (:func:`planner.reserved_after_s`: back to back in session id order, the last ending
at LOS − margin). The schedule is deterministic (it depends on the set of sessions and their
state sizes, not on the order they plan in); each session re-plans at least every
``replan_interval_s``, so a change in the schedule reaches every member within that. A session
leaves the schedule when it moves, is checkpointed or closed, or plans on another link.

A node that dies (its Will) or stops answering is replaced at once: the session is imported from
the ground checkpoint at a new epoch on the best node in view, and the turn in flight is sent
again there (same turn index, new epoch, so it runs against the same context); its first answer
is the only one recorded and returned. Such a recovery runs as a manager task, one at a time per
session; a turn waits for it within its own deadline, so a caller giving up never leaves a move
half done (the old node fenced, the store still pointing at it).

**Jobs.** A job is a list of prompts run on whichever node is in view, ``job_parallelism`` at a
time; dispatch to a node stops one item-time (plus the margin) before its LOS, so nothing is in
flight at LOS; the job moves to the best node in view or pauses until the next AOS. Item ``i``
always has the request id ``<job>.i<i>``, so an item re-sent to the same node (after a manager
restart, a lost reply) is answered from the node's stored result and never runs twice there; its
result is kept once (the first). The store records where a pending item was sent before it is
sent, and an attempt awaits its answer until LOS: an item whose answer did not come may have run
there, so it goes only to that satellite again (any station) until the node answers, refuses it
at admission, or is seen dead; it never runs a second time on another node.

A session move that ends after the LOS of the pass it leaves says so in its event's detail
(``late: ...``); a planned move whose pass ended before it could start moves from the ground
checkpoint.

Every task belongs to the manager's TaskGroup and is named; every network wait has a deadline.
A bug in one session's supervisor or one job's task is logged with its traceback and that task
restarts after a pause; the manager and the other sessions and jobs keep running. A watcher that
falls more than ``watch_queue`` events behind is ended with RESOURCE_EXHAUSTED naming the event
id to resume after.

**Modules.** :class:`HandoffManager` is the façade; the work is done by :mod:`.turns` (a session's
turns), :mod:`.moves` (supervision, the per-link schedule and the move), :mod:`.jobs`,
:mod:`.events` (the stored and watched event feed), :mod:`.coverage` (passes joined with node
liveness) and :mod:`.tasks` (the manager's TaskGroup). The nodes are reached only through a
:class:`~groundplane.handoff.nodes.NodePort` (``nodes``); the node directory is read for liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.config import ManagerConfig
from groundplane.handoff.coverage import Coverage
from groundplane.handoff.events import EventFeed
from groundplane.handoff.jobs import JobInfo, Jobs
from groundplane.handoff.metrics import HandoffMetrics
from groundplane.handoff.moves import Mover
from groundplane.handoff.nodes import NodePort, Turn
from groundplane.handoff.planner import IslInView, PassSource
from groundplane.handoff.sessions import LiveSession, SessionInfo, TurnResult, session_info
from groundplane.handoff.store import HandoffEvent, HandoffStore, SessionRecord
from groundplane.handoff.tasks import ManagerTasks
from groundplane.handoff.turns import Turns
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    Unavailable,
)
from groundplane.kernel.validation import bounded_id
from groundplane.node.client import NodeDirectory, NodeView

log = structlog.get_logger("groundplane.handoff.manager")

__all__ = ["HandoffManager", "JobInfo", "ManagerConfig", "SessionInfo", "TurnResult"]


class HandoffManager:
    """Owns sessions and jobs across passes (see the module doc)."""

    def __init__(  # noqa: PLR0913 - five required ports, the rest optional tunables
        self,
        nodes: NodePort,
        directory: NodeDirectory,
        clock: Clock,
        store: HandoffStore,
        passes: PassSource,
        *,
        config: ManagerConfig | None = None,
        isl_in_view: IslInView | None = None,
        metrics: HandoffMetrics | None = None,
    ) -> None:
        self._nodes = nodes
        self._directory = directory
        self._clock = clock
        self._store = store
        self._config = config or ManagerConfig()
        self._settings = self._config.settings
        self.metrics = metrics or HandoffMetrics()
        self._sessions: dict[str, LiveSession] = {}
        self.metrics.count_sessions(self._count_sessions)
        self._tasks = ManagerTasks()
        self._ready = asyncio.Event()
        self._node_states: dict[str, tuple[int, int]] = {}
        self._coverage = Coverage(passes, directory, clock, self._settings)
        self._events = EventFeed(store, watch_queue=self._config.watch_queue)
        self._mover = Mover(
            nodes=nodes,
            store=store,
            clock=clock,
            coverage=self._coverage,
            events=self._events,
            metrics=self.metrics,
            config=self._config,
            isl_in_view=isl_in_view,
        )
        self._turns = Turns(
            nodes=nodes,
            store=store,
            clock=clock,
            mover=self._mover,
            tasks=self._tasks,
            config=self._config,
        )
        self._jobs = Jobs(
            nodes=nodes,
            store=store,
            clock=clock,
            coverage=self._coverage,
            events=self._events,
            metrics=self.metrics,
            tasks=self._tasks,
            config=self._config,
        )

    def _count_sessions(self) -> dict[str, int]:
        """Open sessions by state (for the metrics scrape, on its thread: a copy, read only)."""
        return dict(Counter(session.record.state for session in tuple(self._sessions.values())))

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Restore every session and job from the store and serve until cancelled."""
        remove = self._directory.add_listener(self._on_node)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks.attach(tasks)
                for record in self._store.sessions():
                    self._adopt(record)
                for job_id in self._store.jobs():
                    tasks.create_task(self._jobs.run(job_id), name=f"handoff-job:{job_id}")
                if self._config.session_idle_ttl_s > 0:
                    tasks.create_task(self._expire_idle(), name="handoff-idle-sessions")
                self._ready.set()
                await asyncio.Event().wait()
        finally:
            self._tasks.attach(None)
            self._ready.clear()
            remove()
            self._events.close()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    def _wall(self, until: datetime) -> float:
        return max(0.0, (until - self._clock.now()).total_seconds() / self._clock.speed)

    def _adopt(self, record: SessionRecord) -> LiveSession:
        stored = self._store.turns(record.session_id)
        last_active = max([record.created_at, *(t.answered_at for t in stored)])
        session = LiveSession(record, [t.turn for t in stored], last_active)
        if record.state == st.ACTIVE:
            session.window = self._coverage.window_of(record.satellite_id, record.station_id)
            session.active.set()
        self._sessions[record.session_id] = session
        self._tasks.start(
            self._mover.supervise(session), name=f"handoff-session:{record.session_id}"
        )
        return session

    async def _expire_idle(self) -> None:
        """Close every session idle for longer than ``session_idle_ttl_s`` (checked every
        quarter of it, at most every simulated minute)."""
        ttl_s = self._config.session_idle_ttl_s
        while True:
            now = self._clock.now()
            for session in list(self._sessions.values()):
                idle_s = (now - session.last_active).total_seconds()
                if idle_s <= ttl_s or session.lock.locked():
                    continue
                log.info("session_expired", session_id=session.session_id, idle_s=idle_s)
                with contextlib.suppress(GroundplaneError, TimeoutError):
                    await self.close_session(session.session_id)
            await self._clock.sleep(min(ttl_s / 4.0, 60.0))

    def _on_node(self, view: NodeView) -> None:
        key = (view.epoch, view.state)
        if self._node_states.get(view.satellite_id) == key:
            return  # a load report: nothing changed for sessions
        self._node_states[view.satellite_id] = key
        if view.alive:
            for session in self._sessions.values():
                if not session.active.is_set():
                    session.wake.set()  # a node came back: a checkpointed session may resume
            return
        for session in self._sessions.values():
            if session.record.satellite_id == view.satellite_id:
                session.wake.set()

    # -- sessions --------------------------------------------------------------------------------

    async def create_session(self, model: str, *, session_id: str | None = None) -> SessionInfo:
        """Open a session on the best node in view (or checkpointed until the next AOS)."""
        if not model:
            raise InvalidArgument("expected a model name for the session, got ''")
        bounded_id("model", model)
        session_id = bounded_id("session_id", session_id) if session_id else None
        session_id = session_id or f"s-{uuid.uuid4().hex[:16]}"
        now = self._clock.now()
        window = self._coverage.best_now(
            model, self._settings.lead_margin_s + self._settings.min_dwell_s
        )
        resume = None
        if window is None:
            resume = self._coverage.next_aos(model, now)
        record = SessionRecord(
            session_id=session_id,
            model=model,
            state=st.ACTIVE if window else st.CHECKPOINTED,
            satellite_id=window.satellite_id if window else "",
            station_id=window.station_id if window else "",
            epoch=0,
            reserved_epoch=0,
            since=now,
            resume_at=resume.aos if resume else None,
            created_at=now,
        )
        if not self._tasks.running:
            raise Unavailable("the handoff manager is not running; retry shortly")
        self._store.create_session(record)
        self._adopt(record)
        return self.get_session(session_id)

    def get_session(self, session_id: str) -> SessionInfo:
        bounded_id("session_id", session_id)
        session = self._sessions.get(session_id)
        if session is not None:
            return session_info(session.record, session.turns, session.window, self._settings)
        record = self._store.session(session_id)
        turns = [t.turn for t in self._store.turns(session_id)]
        return session_info(record, turns, None, self._settings)

    def session_turns(self, session_id: str) -> list[Turn]:
        """The ground copy of a session's transcript."""
        return [t.turn for t in self._store.turns(session_id)]

    async def close_session(self, session_id: str) -> SessionInfo:
        session = self._session(session_id)
        async with asyncio.timeout(self._config.operation_s / self._clock.speed + 5.0):
            async with session.lock:
                self._store.close_session(session_id)
                session.record = self._store.session(session_id)
                session.active.clear()
                session.wake.set()
                # Closed sessions live in the store only (reads fall back to it).
                self._sessions.pop(session_id, None)
                self._mover.links.release(session_id)
                if session.record.satellite_id and session.turns:
                    with contextlib.suppress(GroundplaneError):
                        await self._nodes.fence(
                            session.record.satellite_id,
                            session.record.station_id,
                            session_id,
                            self._store.reserve_epoch(session_id),
                            deadline=self._clock.now()
                            + timedelta(seconds=self._config.operation_s),
                        )
        return self.get_session(session_id)

    def _session(self, session_id: str) -> LiveSession:
        bounded_id("session_id", session_id)
        session = self._sessions.get(session_id)
        if session is None:
            self._store.session(session_id)  # NotFound with a teaching message
            raise FailedPrecondition(f"session {session_id!r} is closed")
        if session.record.state == st.CLOSED:
            raise FailedPrecondition(f"session {session_id!r} is closed; open a new one")
        return session

    async def send_turn(
        self,
        session_id: str,
        prompt: str,
        *,
        deadline: datetime,
        max_tokens: int = 32,
        turn_id: str = "",
    ) -> TurnResult:
        """Send one turn; exactly one answer is recorded and returned (see the module doc).

        ``turn_id`` is the caller's idempotency key: a turn id already answered returns the
        stored answer without running anything.
        """
        if not prompt:
            raise InvalidArgument("expected a non-empty prompt for the turn, got ''")
        if not 1 <= max_tokens <= 8192:
            raise InvalidArgument(f"expected 1 ≤ max_tokens ≤ 8192, got {max_tokens}")
        if turn_id:
            bounded_id("turn_id", turn_id)
        session = self._session(session_id)
        return await self._tasks.call(
            self._turns.run(session, prompt, max_tokens, deadline, turn_id or uuid.uuid4().hex),
            f"handoff-turn:{session_id}:{turn_id}",
            self._wall(deadline) + 1.0,
        )

    # -- events ----------------------------------------------------------------------------------

    def list_handoffs(
        self, *, subject_id: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[HandoffEvent]:
        return self._events.list(subject_id=subject_id, after_id=after_id, limit=limit)

    def watch(
        self, *, subject_id: str | None = None, after_id: int | None = None
    ) -> AsyncGenerator[HandoffEvent, None]:
        """Handoff events as they happen (after replaying history past ``after_id`` if given).

        A watcher that lets more than ``watch_queue`` events wait gets, after the events queued
        for it, :class:`ResourceExhausted` naming the event id to resume from (``after_id``).
        """
        return self._events.watch(subject_id=subject_id, after_id=after_id)

    # -- jobs ------------------------------------------------------------------------------------

    async def submit_job(
        self,
        model: str,
        prompts: Sequence[str],
        *,
        max_tokens: int = 32,
        job_id: str | None = None,
    ) -> JobInfo:
        return self._jobs.submit(model, prompts, max_tokens=max_tokens, job_id=job_id)

    def get_job(self, job_id: str, *, include_results: bool = False) -> JobInfo:
        return self._jobs.get(job_id, include_results=include_results)
