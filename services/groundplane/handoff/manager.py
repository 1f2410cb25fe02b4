"""The handoff manager: sessions and jobs that outlive a satellite pass.

::

    manager = HandoffManager(requester, directory, clock, HandoffStore(path), passes)
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
result is kept once (the first).

Every task belongs to the manager's TaskGroup and is named; every network wait has a deadline.
A bug in one session's supervisor or one job's task is logged with its traceback and that task
restarts after a pause; the manager and the other sessions and jobs keep running. A watcher that
falls more than ``watch_queue`` events behind is ended with RESOURCE_EXHAUSTED naming the event
id to resume after.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.metrics import HandoffMetrics
from groundplane.handoff.planner import (
    HandoffPlan,
    HandoffSettings,
    IslInView,
    LinkKey,
    PassSource,
    PassWindow,
    PlanKind,
    TransferPath,
    choose_path,
    link_key,
    next_aos,
    plan_handoff,
    rank_windows,
    reserved_after_s,
    transfer_time_s,
)
from groundplane.handoff.store import HandoffEvent, HandoffStore, SessionRecord, TurnRecord
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.directory import NodeDirectory, NodeView
from groundplane.node.requester import Requester
from groundplane.node.sessions import SessionState, Turn, decode_session, encode_session
from groundplane.node.v1 import node_pb2

log = structlog.get_logger("groundplane.handoff.manager")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Manager behaviour; times are simulated seconds unless named ``_wall_s``."""

    settings: HandoffSettings = field(default_factory=HandoffSettings)
    turn_attempt_s: float = 10.0
    """Deadline of one attempt of a turn on one node."""
    operation_s: float = 10.0
    """Deadline of one export/import."""
    replan_interval_s: float = 5.0
    """A plan is recomputed at least this often (the state grows with every turn)."""
    job_parallelism: int = 2
    job_item_estimate_s: float = 5.0
    """Initial estimate of one job item's duration (then measured)."""
    watch_queue: int = 10_000
    """Events a watcher may have waiting; a watcher further behind is ended (it may resume)."""

    def __post_init__(self) -> None:
        for name in ("turn_attempt_s", "operation_s", "replan_interval_s", "job_item_estimate_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.job_parallelism < 1:
            raise InvalidArgument(f"job_parallelism must be ≥ 1, got {self.job_parallelism}")


@dataclass(eq=False)
class _Watcher:
    """One :meth:`HandoffManager.watch` stream. ``None`` in the queue ends it: the manager
    stopped, or (``fell_behind``) more than ``watch_queue`` events were waiting for it."""

    queue: asyncio.Queue[HandoffEvent | None] = field(default_factory=asyncio.Queue)
    fell_behind: bool = False


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    model: str
    state: str
    """``active``, ``checkpointed`` or ``closed``."""
    satellite_id: str
    station_id: str
    session_epoch: int
    turns: int
    context_tokens: int
    state_bytes: int
    los: datetime | None
    """End of the serving pass (None when checkpointed)."""
    resume_at: datetime | None
    """Next AOS when checkpointed."""


@dataclass(frozen=True, slots=True)
class TurnResult:
    session_id: str
    turn_index: int
    turn_id: str
    text: str
    satellite_id: str
    station_id: str
    session_epoch: int
    attempts: int
    replayed: bool
    """True when ``turn_id`` was already answered: the stored answer, nothing ran."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    job_id: str
    model: str
    state: str
    item_count: int
    done_count: int
    results: dict[int, str]


REPLAY_PAGE = 1000
"""Events read from the store at a time when a watch replays history."""
RETRY_CAP_S = 60.0
"""Longest pause (simulated s) before a session's or job's task retries after a bug."""


@dataclass
class _Session:
    record: SessionRecord
    turns: list[Turn]
    window: PassWindow | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    planned_epoch: int = -1
    recovery: asyncio.Task[None] | None = None
    """The recovery a turn asked for (a manager task: no caller's deadline can cancel it)."""
    link: LinkKey | None = None
    """The link whose transfer schedule holds this session's planned transfer."""

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def model(self) -> str:
        return self.record.model


class HandoffManager:
    """Owns sessions and jobs across passes (see the module doc)."""

    def __init__(
        self,
        requester: Requester,
        directory: NodeDirectory,
        clock: Clock,
        store: HandoffStore,
        passes: PassSource,
        *,
        config: ManagerConfig | None = None,
        isl_in_view: IslInView | None = None,
        metrics: HandoffMetrics | None = None,
    ) -> None:
        self._requester = requester
        self._directory = directory
        self._clock = clock
        self._store = store
        self._passes = passes
        self._config = config or ManagerConfig()
        self._settings = self._config.settings
        self._isl_in_view = isl_in_view
        self.metrics = metrics or HandoffMetrics()
        self._sessions: dict[str, _Session] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        self._watchers: set[_Watcher] = set()
        self._node_states: dict[str, tuple[int, int]] = {}
        self._reported_bytes_per_token: dict[str, int] = {}
        self._overhead_s = 0.0
        """Measured handoff time beyond the state transfer (added to the lead margin)."""
        self._links: dict[LinkKey, dict[str, float]] = {}
        """Per-link transfer schedule: session id → planned transfer time (s)."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Restore every session and job from the store and serve until cancelled."""
        remove = self._directory.add_listener(self._on_node)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for record in self._store.sessions():
                    self._adopt(record)
                for job_id in self._store.jobs():
                    tasks.create_task(self._run_job(job_id), name=f"handoff-job:{job_id}")
                self._ready.set()
                await asyncio.Event().wait()
        finally:
            self._tasks = None
            self._ready.clear()
            remove()
            for watcher in self._watchers:
                watcher.queue.put_nowait(None)  # unbounded: the end always gets in

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        try:
            if self._tasks is None:
                raise RuntimeError("not running")
            return self._tasks.create_task(work, name=name)
        except RuntimeError:  # not started, or the TaskGroup is shutting down
            work.close()
            raise Unavailable("the handoff manager is not running; retry shortly") from None

    async def _in_manager(self, work: Coroutine[Any, Any, _T], name: str, wait_s: float) -> _T:
        """Run ``work`` as a manager task (it dies with the manager); wait ``wait_s`` wall s."""
        outcome: asyncio.Future[_T] = asyncio.get_running_loop().create_future()

        async def settle() -> None:
            try:
                value = await work
            except asyncio.CancelledError:
                if not outcome.done():
                    outcome.set_exception(
                        Unavailable(f"{name} was interrupted: the handoff manager stopped; retry")
                    )
                raise
            except Exception as error:  # answered to the caller; the manager keeps serving
                if not isinstance(error, GroundplaneError):
                    log.exception("handoff_task_failed", task=name)
                outcome.set_exception(error)
            else:
                outcome.set_result(value)

        try:
            task = self._spawn(settle(), name)
        except Unavailable:
            work.close()
            raise
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                return await asyncio.shield(outcome)
        except TimeoutError:
            task.cancel()
            raise DeadlineExceeded(f"{name} did not finish before its deadline") from None

    def _wall(self, until: datetime) -> float:
        return max(0.0, (until - self._clock.now()).total_seconds() / self._clock.speed)

    def _adopt(self, record: SessionRecord) -> _Session:
        session = _Session(record, [t.turn for t in self._store.turns(record.session_id)])
        if record.state == st.ACTIVE:
            session.window = self._window_of(record.satellite_id, record.station_id)
            session.active.set()
        self._sessions[record.session_id] = session
        assert self._tasks is not None
        self._tasks.create_task(
            self._supervise(session), name=f"handoff-session:{record.session_id}"
        )
        return session

    # -- queries on passes and nodes -------------------------------------------------------------

    def _windows(self, now: datetime) -> Sequence[PassWindow]:
        return self._passes.windows(now, now + timedelta(seconds=self._settings.horizon_s))

    def _window_of(self, satellite_id: str, station_id: str) -> PassWindow | None:
        now = self._clock.now()
        for window in self._passes.windows(now, now + timedelta(microseconds=1)):
            if (
                window.satellite_id == satellite_id
                and window.station_id == station_id
                and window.covers(now)
            ):
                return window
        return None

    def _eligible(self, model: str) -> Callable[[str], bool]:
        def check(satellite_id: str) -> bool:
            view = self._directory.get(satellite_id)
            return view is not None and view.accepting and view.serves(model)

        return check

    def _best_now(
        self, model: str, min_remaining_s: float, exclude: str | None = None
    ) -> PassWindow | None:
        now = self._clock.now()
        ranked = rank_windows(
            self._windows(now),
            now,
            self._settings.policy,
            rate_bps=self._settings.ground_rate_bps,
            min_remaining_s=min_remaining_s,
            exclude_satellite=exclude,
            eligible=self._eligible(model),
        )
        return ranked[0] if ranked else None

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

    # -- sessions: public API --------------------------------------------------------------------

    async def create_session(self, model: str, *, session_id: str | None = None) -> SessionInfo:
        """Open a session on the best node in view (or checkpointed until the next AOS)."""
        if not model:
            raise InvalidArgument("expected a model name for the session, got ''")
        session_id = session_id or f"s-{uuid.uuid4().hex[:16]}"
        now = self._clock.now()
        window = self._best_now(model, self._settings.lead_margin_s + self._settings.min_dwell_s)
        resume = None
        if window is None:
            resume = next_aos(self._windows(now), now, eligible=self._eligible(model))
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
        if self._tasks is None:
            raise Unavailable("the handoff manager is not running; retry shortly")
        self._store.create_session(record)
        self._adopt(record)
        return self.get_session(session_id)

    def get_session(self, session_id: str) -> SessionInfo:
        session = self._sessions.get(session_id)
        record = session.record if session else self._store.session(session_id)
        turns = session.turns if session else [t.turn for t in self._store.turns(session_id)]
        tokens = sum(t.tokens for t in turns)
        window = session.window if session else None
        return SessionInfo(
            record.session_id,
            record.model,
            record.state,
            record.satellite_id,
            record.station_id,
            record.epoch,
            len(turns),
            tokens,
            self._settings.state_bytes(record.model, tokens),
            window.los if window and record.state == st.ACTIVE else None,
            record.resume_at,
        )

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
                self._release_link(session)
                if session.record.satellite_id and session.turns:
                    with contextlib.suppress(GroundplaneError):
                        await self._requester.fence_session(
                            session.record.satellite_id,
                            session.record.station_id,
                            session_id,
                            self._store.reserve_epoch(session_id),
                            deadline=self._deadline(self._config.operation_s),
                        )
        return self.get_session(session_id)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            self._store.session(session_id)  # NotFound with a teaching message
            raise FailedPrecondition(f"session {session_id!r} is closed")
        if session.record.state == st.CLOSED:
            raise FailedPrecondition(f"session {session_id!r} is closed; open a new one")
        return session

    def _deadline(self, seconds: float) -> datetime:
        return self._clock.now() + timedelta(seconds=seconds)

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
        session = self._session(session_id)
        return await self._in_manager(
            self._turn(session, prompt, max_tokens, deadline, turn_id or uuid.uuid4().hex),
            f"handoff-turn:{session_id}:{turn_id}",
            self._wall(deadline) + 1.0,
        )

    async def _turn(
        self, session: _Session, prompt: str, max_tokens: int, deadline: datetime, turn_id: str
    ) -> TurnResult:
        attempts = 0
        failures_here = 0
        recovery: tuple[int, str] | None = None
        while True:
            if recovery is not None:
                await self._await_recovery(session, *recovery, deadline)
                recovery = None
            if session.record.state == st.CLOSED:
                raise FailedPrecondition(
                    f"session {session.session_id!r} is closed; open a new one"
                )
            stored = self._store.turn_by_id(session.session_id, turn_id)
            if stored is not None:
                return self._turn_result(session, stored, attempts, replayed=True)
            if self._clock.now() >= deadline:
                raise DeadlineExceeded(
                    f"turn {turn_id!r} of session {session.session_id!r} got no answer before "
                    f"its deadline {deadline.isoformat()} after {attempts} attempts; retry with "
                    "the same turn id"
                )
            if not session.active.is_set():
                await self._wait_resumed(session, deadline)
                continue
            try:
                async with asyncio.timeout(self._wall(deadline)):
                    await session.lock.acquire()
            except TimeoutError:
                continue
            try:
                if not session.active.is_set():
                    continue
                # Another call with the same turn id may have answered it while this one
                # waited for the lock: answer from the store, never run the turn twice.
                stored = self._store.turn_by_id(session.session_id, turn_id)
                if stored is not None:
                    return self._turn_result(session, stored, attempts, replayed=True)
                record = session.record
                index, epoch = len(session.turns), record.epoch
                attempts += 1
                request = node_pb2.InferRequest(
                    model=session.model,
                    prompt=prompt,
                    max_tokens=max_tokens,
                    session_id=session.session_id,
                    session_epoch=epoch,
                )
                try:
                    outcome = await self._requester.infer(
                        record.satellite_id,
                        record.station_id,
                        request,
                        request_id=f"{session.session_id}.t{index}.e{epoch}",
                        deadline=min(deadline, self._deadline(self._config.turn_attempt_s)),
                    )
                except ResourceExhausted as error:
                    wait_s = min(error.retry_after_s or 1.0, 5.0)
                    await self._clock.sleep(wait_s)
                    continue
                except (Unavailable, DeadlineExceeded, FailedPrecondition, NotFound) as error:
                    failures_here += 1
                    log.info(
                        "handoff_turn_attempt_failed",
                        session_id=session.session_id,
                        satellite_id=record.satellite_id,
                        error=str(error),
                    )
                    lost = not self._serving(session, self._clock.now())
                    if (
                        lost
                        or failures_here >= 2
                        or isinstance(error, FailedPrecondition | NotFound)
                    ):
                        failures_here = 0
                        recovery = (epoch, f"turn failed: {error}")
                    continue
                result = outcome.result
                if not result.session_applied or result.session_epoch != epoch:
                    recovery = (epoch, "answer was not applied at the epoch")
                    continue
                turn = TurnRecord(
                    index,
                    turn_id,
                    prompt,
                    result.text,
                    record.satellite_id,
                    epoch,
                    self._clock.now(),
                )
                self._store.add_turn(session.session_id, turn)
                session.turns.append(turn.turn)
                return self._turn_result(session, turn, attempts, replayed=False)
            finally:
                session.lock.release()

    def _turn_result(
        self, session: _Session, turn: TurnRecord, attempts: int, *, replayed: bool
    ) -> TurnResult:
        station = session.record.station_id if turn.epoch == session.record.epoch else ""
        return TurnResult(
            session.session_id,
            turn.index,
            turn.turn_id,
            turn.answer,
            turn.satellite_id,
            station,
            turn.epoch,
            attempts,
            replayed,
        )

    async def _wait_resumed(self, session: _Session, deadline: datetime) -> None:
        resume_at = session.record.resume_at
        if resume_at is None or resume_at > deadline:
            raise Unavailable(
                f"session {session.session_id!r} is checkpointed: no satellite serving "
                f"{session.model!r} is in view; "
                + (
                    f"it resumes at the next AOS {resume_at.isoformat()}"
                    if resume_at
                    else "no pass is predicted within the planning horizon"
                ),
                next_opportunity=resume_at,
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wall(deadline)):
                await session.active.wait()

    async def _await_recovery(
        self, session: _Session, epoch: int, reason: str, deadline: datetime
    ) -> None:
        """Start (or join) the session's recovery off ``epoch`` and wait for it until
        ``deadline``. The recovery is a manager task: a caller that stops waiting (its deadline,
        its cancellation) never cancels a move halfway, e.g. after the old node was fenced."""
        task = session.recovery
        if task is None or task.done():
            task = self._spawn(
                self._recovery(session, epoch, reason), f"handoff-recovery:{session.session_id}"
            )
            session.recovery = task
        await asyncio.wait({task}, timeout=self._wall(deadline))

    async def _recovery(self, session: _Session, epoch: int, reason: str) -> None:
        try:
            async with session.lock:
                if (
                    session.record.state == st.CLOSED
                    or not session.active.is_set()
                    or session.record.epoch != epoch
                ):
                    return  # closed, checkpointed or moved meanwhile: nothing left to recover
                await self._recover(session, reason=reason)
        except Exception:  # a bug: logged; the next failed turn asks again
            log.exception("handoff_recovery_crashed", session_id=session.session_id)

    # -- sessions: supervision and moves ---------------------------------------------------------

    async def _supervise(self, session: _Session) -> None:
        """Supervise the session until it is closed; a bug is logged and supervision restarts
        after a pause (doubling up to ``RETRY_CAP_S``), the manager and other sessions unharmed."""
        pause_s = min(1.0, self._config.replan_interval_s)
        while session.record.state != st.CLOSED:
            try:
                await self._supervision(session)
            except Exception:
                log.exception(
                    "handoff_supervisor_crashed", session_id=session.session_id, retry_s=pause_s
                )
                await self._clock.sleep(pause_s)
                pause_s = min(2 * pause_s, RETRY_CAP_S)

    async def _supervision(self, session: _Session) -> None:
        settings = self._settings
        while session.record.state != st.CLOSED:
            session.wake.clear()
            now = self._clock.now()
            if not session.active.is_set():
                window = self._best_now(
                    session.model, settings.lead_margin_s + settings.min_dwell_s
                )
                if window is not None:
                    async with session.lock:
                        if not session.active.is_set() and session.record.state != st.CLOSED:
                            await self._move(session, window, export=False, resume=True)
                    continue
                nxt = next_aos(self._windows(now), now, eligible=self._eligible(session.model))
                until = now + timedelta(seconds=settings.horizon_s)
                await self._sleep_until(session, nxt.aos if nxt else until)
                continue
            if not self._serving(session, now):
                async with session.lock:
                    if session.active.is_set() and not self._serving(session, self._clock.now()):
                        await self._recover(session, reason="serving node lost or out of view")
                continue
            window = session.window
            assert window is not None
            plan = self._plan(session, window, now)
            if session.planned_epoch != session.record.epoch:
                session.planned_epoch = session.record.epoch
                self._emit(self._event(session, "planned", plan.at, plan.los, plan.successor))
            if plan.at > now:
                await self._sleep_until(session, plan.at)
                continue
            async with session.lock:
                if session.record.state == st.CLOSED or not session.active.is_set():
                    continue
                if plan.kind is PlanKind.HANDOFF and plan.successor is not None:
                    await self._move(session, plan.successor, export=True, planned_at=plan.at)
                else:
                    await self._move(session, None, export=True, planned_at=plan.at)

    def _plan(self, session: _Session, window: PassWindow, now: datetime) -> HandoffPlan:
        """Plan the session's move off ``window`` and record its transfer in the schedule of
        the link it uses; the plan starts early enough to leave the link to the transfers
        scheduled after it (see the module doc)."""
        windows = self._windows(now)
        state_bytes = self._state_bytes(session)
        eligible = self._eligible(session.model)

        def plan_with(link_reserved_s: float) -> HandoffPlan:
            return plan_handoff(
                window,
                windows,
                now,
                state_bytes,
                self._settings,
                isl_in_view=self._isl_in_view,
                eligible=eligible,
                overhead_s=self._overhead_s,
                link_reserved_s=link_reserved_s,
            )

        plan = plan_with(0.0)
        self._reserve_link(session, plan)
        reserved_s = reserved_after_s(self._links[link_key(plan)], session.session_id)
        if reserved_s > 0:
            plan = plan_with(reserved_s)
            self._reserve_link(session, plan)
        return plan

    def _reserve_link(self, session: _Session, plan: HandoffPlan) -> None:
        key = link_key(plan)
        if session.link != key:
            self._release_link(session)
            session.link = key
        self._links.setdefault(key, {})[session.session_id] = plan.transfer_s

    def _release_link(self, session: _Session) -> None:
        key, session.link = session.link, None
        if key is None:
            return
        transfers = self._links.get(key)
        if transfers is not None:
            transfers.pop(session.session_id, None)
            if not transfers:
                del self._links[key]

    def _state_bytes(self, session: _Session) -> int:
        """Modelled state size: context tokens × bytes per token (as configured, or as the
        nodes reported in exports when they report more)."""
        tokens = sum(t.tokens for t in session.turns)
        configured = self._settings.state_bytes(session.model, tokens)
        return max(configured, tokens * self._reported_bytes_per_token.get(session.model, 0))

    def _serving(self, session: _Session, now: datetime) -> bool:
        """The session's node is alive and its pass covers ``now``."""
        view = self._directory.get(session.record.satellite_id)
        window = session.window
        return window is not None and window.covers(now) and view is not None and view.alive

    async def _sleep_until(self, session: _Session, until: datetime) -> None:
        limit = self._clock.now() + timedelta(seconds=self._config.replan_interval_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wall(min(until, limit))):
                await session.wake.wait()

    def _event(
        self,
        session: _Session,
        state: str,
        planned_at: datetime,
        los: datetime,
        to: PassWindow | None,
        *,
        path: TransferPath = TransferPath.NONE,
        bytes_moved: int = 0,
        interruption_s: float = 0.0,
        detail: str = "",
    ) -> HandoffEvent:
        return HandoffEvent(
            "session",
            session.session_id,
            state,
            self._clock.now(),
            planned_at,
            los,
            session.record.satellite_id,
            session.record.station_id,
            to.satellite_id if to else "",
            to.station_id if to else "",
            path.value,
            bytes_moved,
            interruption_s,
            detail,
        )

    async def _recover(self, session: _Session, *, reason: str) -> None:
        """With the lock held: move off a lost node, from the ground checkpoint."""
        alive = self._serving(session, self._clock.now())
        exclude = None if alive else session.record.satellite_id
        target = self._best_now(
            session.model,
            self._settings.lead_margin_s,
            exclude=exclude,
        )
        self.metrics.handoff("recovered")
        await self._move(session, target, export=alive, reason=reason)

    async def _move(
        self,
        session: _Session,
        target: PassWindow | None,
        *,
        export: bool,
        planned_at: datetime | None = None,
        reason: str = "",
        resume: bool = False,
    ) -> None:
        """With the lock held: copy the state to ``target`` (None: checkpoint) and switch."""
        settings = self._settings
        started = self._clock.now()
        record = session.record
        los = session.window.los if session.window else started
        self._emit(
            self._event(session, "started", planned_at or started, los, target, detail=reason)
        )
        new_epoch = self._store.reserve_epoch(session.session_id)
        ground = SessionState(session.session_id, session.model, new_epoch, tuple(session.turns))
        state_bytes = self._state_bytes(session)
        snapshot = encode_session(ground)
        same_satellite = target is not None and target.satellite_id == record.satellite_id
        try:
            if export and record.satellite_id and session.turns and not same_satellite:
                try:
                    exported = await self._requester.export_session(
                        record.satellite_id,
                        record.station_id,
                        session.session_id,
                        fence_epoch=new_epoch,
                        request_id=f"{session.session_id}.x{new_epoch}",
                        deadline=self._deadline(self._config.operation_s),
                    )
                except GroundplaneError as error:
                    log.info(
                        "handoff_export_failed", session_id=session.session_id, error=str(error)
                    )
                else:
                    state_bytes = exported.state_bytes or state_bytes
                    if exported.context_tokens:
                        reported = exported.state_bytes // exported.context_tokens
                        known = self._reported_bytes_per_token.get(session.model, 0)
                        self._reported_bytes_per_token[session.model] = max(known, reported)
                    if decode_session(exported.snapshot).content_sha256 == ground.content_sha256:
                        snapshot = exported.snapshot
                    else:
                        log.warning("handoff_export_differs", session_id=session.session_id)
            if target is None:
                path, transfer_s = (
                    TransferPath.GROUND,
                    transfer_time_s(state_bytes, settings.ground_rate_bps),
                )
            elif not record.satellite_id or resume or not export:
                # From the ground store: the state only goes up.
                path, transfer_s = (
                    TransferPath.GROUND,
                    transfer_time_s(state_bytes, settings.ground_rate_bps),
                )
            else:
                path, transfer_s = choose_path(
                    record.satellite_id,
                    target.satellite_id,
                    state_bytes,
                    started,
                    settings,
                    isl_in_view=self._isl_in_view,
                )
            if not session.turns:
                transfer_s = 0.0
            await self._clock.sleep(transfer_s)  # the modelled serialisation of the state
            now = self._clock.now()
            if target is None:
                resume_window = next_aos(
                    self._windows(now), now, eligible=self._eligible(session.model)
                )
                resume_at = resume_window.aos if resume_window else None
                event = self._event(
                    session,
                    "checkpointed",
                    planned_at or started,
                    los,
                    None,
                    path=path,
                    bytes_moved=state_bytes,
                    detail=reason or "no successor in view",
                )
                event_id = self._store.assign(
                    session.session_id,
                    satellite_id="",
                    station_id="",
                    epoch=new_epoch,
                    since=now,
                    state=st.CHECKPOINTED,
                    resume_at=resume_at,
                    checkpoint=(snapshot, state_bytes),
                    event=event,
                )
                session.record = self._store.session(session.session_id)
                session.window = None
                session.active.clear()
                self._release_link(session)
                self.metrics.handoff("checkpointed")
                self.metrics.moved(path.value, state_bytes)
                self._publish(_with_id(event, event_id))
                return
            if not same_satellite:
                await self._requester.import_session(
                    target.satellite_id,
                    target.station_id,
                    snapshot,
                    session_epoch=new_epoch,
                    request_id=f"{session.session_id}.i{new_epoch}",
                    deadline=self._deadline(self._config.operation_s),
                )
            elif session.turns:
                # Same satellite, another station: only the session epoch moves on.
                await self._requester.import_session(
                    target.satellite_id,
                    target.station_id,
                    snapshot,
                    session_epoch=new_epoch,
                    request_id=f"{session.session_id}.i{new_epoch}",
                    deadline=self._deadline(self._config.operation_s),
                )
                path = TransferPath.NONE
            now = self._clock.now()
            interruption_s = (now - started).total_seconds()
            event = self._event(
                session,
                "resumed" if resume else "completed",
                planned_at or started,
                los,
                target,
                path=path,
                bytes_moved=state_bytes if path is not TransferPath.NONE else 0,
                interruption_s=interruption_s,
                detail=reason,
            )
            event_id = self._store.assign(
                session.session_id,
                satellite_id=target.satellite_id,
                station_id=target.station_id,
                epoch=new_epoch,
                since=now,
                checkpoint=(snapshot, state_bytes),
                event=event,
            )
            session.record = self._store.session(session.session_id)
            session.window = target
            session.active.set()
            self._release_link(session)
            self.metrics.handoff("resumed" if resume else "completed")
            self.metrics.moved(path.value, event.bytes_moved)
            self.metrics.interruption(interruption_s)
            # Learn the control overhead (round trips, commits) beyond the transfer: the next
            # plans start that much earlier. Rises at once, decays slowly.
            overhead_s = max(0.0, interruption_s - transfer_s)
            self._overhead_s = max(overhead_s, self._overhead_s * 0.9 + overhead_s * 0.1)
            self._publish(_with_id(event, event_id))
        except GroundplaneError as error:
            self.metrics.handoff("failed")
            self._emit(
                self._event(
                    session, "failed", planned_at or started, los, target, detail=str(error)
                )
            )
            log.warning("handoff_failed", session_id=session.session_id, error=str(error))
            # The old route stays; the supervisor (or the next turn) tries again.
            await self._clock.sleep(min(1.0, self._config.replan_interval_s))

    # -- events ----------------------------------------------------------------------------------

    def _emit(self, event: HandoffEvent) -> None:
        event_id = self._store.add_event(event)
        self._publish(_with_id(event, event_id))

    def _publish(self, event: HandoffEvent) -> None:
        for watcher in list(self._watchers):
            if watcher.queue.qsize() >= self._config.watch_queue:
                # Too far behind: end its stream after what it has queued (it may resume).
                watcher.fell_behind = True
                self._watchers.discard(watcher)
                watcher.queue.put_nowait(None)
            else:
                watcher.queue.put_nowait(event)

    def list_handoffs(
        self, *, subject_id: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[HandoffEvent]:
        return self._store.events(subject_id=subject_id, after_id=after_id, limit=limit)

    async def watch(
        self, *, subject_id: str | None = None, after_id: int | None = None
    ) -> AsyncGenerator[HandoffEvent, None]:
        """Handoff events as they happen (after replaying history past ``after_id`` if given).

        A watcher that lets more than ``watch_queue`` events wait gets, after the events queued
        for it, :class:`ResourceExhausted` naming the event id to resume from (``after_id``).
        """
        watcher = _Watcher()
        self._watchers.add(watcher)
        # Everything up to ``last`` was delivered or is not wanted (no await since registering,
        # so every later event is in the queue).
        last = self._store.last_event_id() if after_id is None else after_id
        try:
            if after_id is not None:
                while True:
                    page = self._store.events(
                        subject_id=subject_id, after_id=last, limit=REPLAY_PAGE
                    )
                    for event in page:
                        last = event.event_id
                        yield event
                    if len(page) < REPLAY_PAGE:
                        break
            while True:
                item = await watcher.queue.get()
                if item is None:
                    if watcher.fell_behind:
                        raise ResourceExhausted(
                            f"watcher fell behind: more than {self._config.watch_queue} events "
                            f"were waiting for it; resume with replay and after_event_id={last}"
                        )
                    return
                if item.event_id <= last:
                    continue
                last = item.event_id
                if subject_id and item.subject_id != subject_id:
                    continue
                yield item
        finally:
            self._watchers.discard(watcher)

    # -- jobs ------------------------------------------------------------------------------------

    async def submit_job(
        self,
        model: str,
        prompts: Sequence[str],
        *,
        max_tokens: int = 32,
        job_id: str | None = None,
    ) -> JobInfo:
        if not model:
            raise InvalidArgument("expected a model name for the job, got ''")
        if not prompts or any(not p for p in prompts):
            raise InvalidArgument("expected at least one prompt and no empty prompt in the job")
        if not 1 <= max_tokens <= 8192:
            raise InvalidArgument(f"expected 1 ≤ max_tokens ≤ 8192, got {max_tokens}")
        if self._tasks is None:
            raise Unavailable("the handoff manager is not running; retry shortly")
        job_id = job_id or f"j-{uuid.uuid4().hex[:16]}"
        self._store.create_job(job_id, model, max_tokens, list(prompts), self._clock.now())
        self._spawn(self._run_job(job_id), f"handoff-job:{job_id}")
        return self.get_job(job_id)

    def get_job(self, job_id: str, *, include_results: bool = False) -> JobInfo:
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

    async def _run_job(self, job_id: str) -> None:
        """Run the job to the end; a bug is logged and the job restarts from the store (its kept
        results stay) after a pause, the manager and other jobs unharmed."""
        pause_s = min(1.0, self._config.replan_interval_s)
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
        margin_s = self._settings.lead_margin_s
        previous: PassWindow | None = None
        paused_since: datetime | None = None
        while pending:
            now = self._clock.now()
            window = self._best_now(record.model, estimate[0] + margin_s)
            if window is None:
                if paused_since is None:
                    paused_since = now
                    nxt = next_aos(self._windows(now), now, eligible=self._eligible(record.model))
                    self._emit(
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
                await self._clock.sleep(min(1.0, self._config.replan_interval_s))
                continue
            if previous is not None and (
                window.satellite_id != previous.satellite_id or paused_since is not None
            ):
                gap_s = (now - (paused_since or now)).total_seconds()
                self.metrics.handoff("completed")
                self._emit(
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
                        self._job_worker(record, window, pending, stop_at, estimate),
                        name=f"handoff-job:{job_id}:w{worker}",
                    )
            if pending and self._clock.now() < stop_at - timedelta(seconds=estimate[0]):
                await self._clock.sleep(min(1.0, self._config.replan_interval_s))  # node trouble
        self._store.finish_job(job_id, self._clock.now())
        log.info("handoff_job_done", job_id=job_id, items=record.item_count)

    async def _job_worker(
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
                outcome = await self._requester.infer(
                    window.satellite_id,
                    window.station_id,
                    node_pb2.InferRequest(
                        model=record.model, prompt=prompt, max_tokens=record.max_tokens
                    ),
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
                record.job_id, index, outcome.text, window.satellite_id, self._clock.now()
            )
            took_s = (self._clock.now() - started).total_seconds()
            estimate[0] += 0.3 * (took_s - estimate[0])


def _with_id(event: HandoffEvent, event_id: int) -> HandoffEvent:
    return HandoffEvent(
        event.subject_kind,
        event.subject_id,
        event.state,
        event.at,
        event.planned_at,
        event.los,
        event.from_satellite,
        event.from_station,
        event.to_satellite,
        event.to_station,
        event.path,
        event.bytes_moved,
        event.interruption_s,
        event.detail,
        event_id,
    )
