"""When and how a session moves: its supervisor, the per-link transfer schedule, and the
make-before-break move itself.

A move, with the session's lock held: reserve a new epoch (persisted); export the state from the
old node with that epoch as the fence (the old node refuses later turns at once, and a late answer
of the old epoch is rejected because it carries the old epoch); wait the modelled transfer time;
import the ground copy on the successor under the new epoch; switch the route, the checkpoint and
the event in one store transaction. With no successor the session is checkpointed instead (the
route cleared, resuming at the next AOS). A failed step leaves the old route in the store; the
supervisor (or the next turn) tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.config import RETRY_CAP_S, ManagerConfig
from groundplane.handoff.coverage import Coverage
from groundplane.handoff.events import EventFeed, with_id
from groundplane.handoff.metrics import HandoffMetrics
from groundplane.handoff.nodes import NodePort, SessionSnapshot
from groundplane.handoff.planner import (
    HandoffPlan,
    IslInView,
    LinkKey,
    PassWindow,
    PlanKind,
    TransferPath,
    choose_path,
    link_key,
    plan_handoff,
    reserved_after_s,
    transfer_time_s,
)
from groundplane.handoff.sessions import LiveSession
from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError

log = structlog.get_logger("groundplane.handoff.manager")


class LinkSchedule:
    """Per-link transfer schedule: the planned transfer time of every session leaving by a link.

    A session is on at most one link: reserving it on another releases the first.
    """

    def __init__(self) -> None:
        self._transfers: dict[LinkKey, dict[str, float]] = {}
        self._link_of: dict[str, LinkKey] = {}

    def reserve(self, session_id: str, plan: HandoffPlan) -> None:
        key = link_key(plan)
        if self._link_of.get(session_id) != key:
            self.release(session_id)
            self._link_of[session_id] = key
        self._transfers.setdefault(key, {})[session_id] = plan.transfer_s

    def release(self, session_id: str) -> None:
        key = self._link_of.pop(session_id, None)
        if key is None:
            return
        transfers = self._transfers.get(key)
        if transfers is not None:
            transfers.pop(session_id, None)
            if not transfers:
                del self._transfers[key]

    def reserved_after_s(self, session_id: str) -> float:
        """Transfer time the sessions after this one on its link need (it must finish first)."""
        return reserved_after_s(self._transfers[self._link_of[session_id]], session_id)


class Mover:
    """Supervises sessions and moves them between passes (see the module doc)."""

    def __init__(  # noqa: PLR0913 - the manager's shared parts, each injected by keyword
        self,
        *,
        nodes: NodePort,
        store: HandoffStore,
        clock: Clock,
        coverage: Coverage,
        events: EventFeed,
        metrics: HandoffMetrics,
        config: ManagerConfig,
        isl_in_view: IslInView | None,
    ) -> None:
        self._nodes = nodes
        self._store = store
        self._clock = clock
        self._coverage = coverage
        self._events = events
        self._metrics = metrics
        self._config = config
        self._settings = config.settings
        self._isl_in_view = isl_in_view
        self.links = LinkSchedule()
        self._overhead_s = 0.0
        """Measured handoff time beyond the state transfer (added to the lead margin)."""
        self._reported_bytes_per_token: dict[str, int] = {}

    # -- supervision -----------------------------------------------------------------------------

    async def supervise(self, session: LiveSession) -> None:
        """Supervise the session until it is closed; a bug is logged and supervision restarts
        after a pause (doubling up to ``RETRY_CAP_S``), the manager and other sessions unharmed."""
        pause_s = self._config.pause_s
        while session.record.state != st.CLOSED:
            try:
                await self._supervision(session)
            except Exception:
                log.exception(
                    "handoff_supervisor_crashed", session_id=session.session_id, retry_s=pause_s
                )
                await self._clock.sleep(pause_s)
                pause_s = min(2 * pause_s, RETRY_CAP_S)

    async def _supervision(self, session: LiveSession) -> None:
        settings = self._settings
        while session.record.state != st.CLOSED:
            session.wake.clear()
            now = self._clock.now()
            if not session.active.is_set():
                window = self._coverage.best_now(
                    session.model, settings.lead_margin_s + settings.min_dwell_s
                )
                if window is not None:
                    async with session.lock:
                        if not session.active.is_set() and session.record.state != st.CLOSED:
                            await self.move(session, window, export=False, resume=True)
                    continue
                nxt = self._coverage.next_aos(session.model, now)
                until = now + timedelta(seconds=settings.horizon_s)
                await self._sleep_until(session, nxt.aos if nxt else until)
                continue
            if not self.serving(session, now):
                async with session.lock:
                    if session.active.is_set() and not self.serving(session, self._clock.now()):
                        await self.recover(session, reason="serving node lost or out of view")
                continue
            window = session.window
            assert window is not None
            plan = self._plan(session, window, now)
            if session.planned_epoch != session.record.epoch:
                session.planned_epoch = session.record.epoch
                self._events.emit(
                    session.event("planned", self._clock.now(), plan.at, plan.los, plan.successor)
                )
            if plan.at > now:
                await self._sleep_until(session, plan.at)
                continue
            async with session.lock:
                if session.record.state == st.CLOSED or not session.active.is_set():
                    continue
                now = self._clock.now()
                if not self.serving(session, now):
                    # The lock came too late (a turn in flight, a busy loop): the pass ended
                    # before the move could start. Exporting from a node out of view would only
                    # wait out its deadline: move from the ground checkpoint, and say so.
                    late_s = (now - plan.los).total_seconds()
                    await self.recover(
                        session,
                        reason=f"late: the pass ended {late_s:.1f} s before the handoff planned "
                        f"at {plan.at.isoformat()} could start",
                        planned_at=plan.at,
                    )
                    continue
                successor = plan.successor if plan.kind is PlanKind.HANDOFF else None
                await self.move(session, successor, export=True, planned_at=plan.at)

    def _plan(self, session: LiveSession, window: PassWindow, now: datetime) -> HandoffPlan:
        """Plan the session's move off ``window`` and record its transfer in the schedule of
        the link it uses; the plan starts early enough to leave the link to the transfers
        scheduled after it (see the manager's module doc)."""
        windows = self._coverage.windows(now)
        state_bytes = self.state_bytes(session)
        eligible = self._coverage.eligible(session.model)

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
        self.links.reserve(session.session_id, plan)
        reserved_s = self.links.reserved_after_s(session.session_id)
        if reserved_s > 0:
            plan = plan_with(reserved_s)
            self.links.reserve(session.session_id, plan)
        return plan

    def state_bytes(self, session: LiveSession) -> int:
        """Modelled state size: context tokens × bytes per token (as configured, or as the
        nodes reported in exports when they report more)."""
        tokens = sum(t.tokens for t in session.turns)
        configured = self._settings.state_bytes(session.model, tokens)
        return max(configured, tokens * self._reported_bytes_per_token.get(session.model, 0))

    def serving(self, session: LiveSession, now: datetime) -> bool:
        """The session's node is alive and its pass covers ``now``."""
        return self._coverage.serving(session.record.satellite_id, session.window, now)

    async def _sleep_until(self, session: LiveSession, until: datetime) -> None:
        limit = self._clock.now() + timedelta(seconds=self._config.replan_interval_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wall(min(until, limit))):
                await session.wake.wait()

    def _wall(self, until: datetime) -> float:
        return max(0.0, (until - self._clock.now()).total_seconds() / self._clock.speed)

    def _deadline(self, seconds: float) -> datetime:
        return self._clock.now() + timedelta(seconds=seconds)

    # -- recovery --------------------------------------------------------------------------------

    async def recover_off(self, session: LiveSession, epoch: int, reason: str) -> None:
        """Take the lock and recover the session if it is still active at ``epoch`` (a manager
        task a turn asked for; see :meth:`recover`)."""
        try:
            async with session.lock:
                if (
                    session.record.state == st.CLOSED
                    or not session.active.is_set()
                    or session.record.epoch != epoch
                ):
                    return  # closed, checkpointed or moved meanwhile: nothing left to recover
                await self.recover(session, reason=reason)
        except Exception:  # a bug: logged; the next failed turn asks again
            log.exception("handoff_recovery_crashed", session_id=session.session_id)

    async def recover(
        self, session: LiveSession, *, reason: str, planned_at: datetime | None = None
    ) -> None:
        """With the lock held: move off a lost node (or a pass that ended), from the ground
        checkpoint."""
        alive = self.serving(session, self._clock.now())
        exclude = None if alive else session.record.satellite_id
        target = self._coverage.best_now(
            session.model,
            self._settings.lead_margin_s,
            exclude=exclude,
        )
        self._metrics.handoff("recovered")
        await self.move(session, target, export=alive, reason=reason, planned_at=planned_at)

    # -- the move --------------------------------------------------------------------------------

    async def move(  # noqa: PLR0913 - a move's flags (export, resume, reason) are keywords
        self,
        session: LiveSession,
        target: PassWindow | None,
        *,
        export: bool,
        planned_at: datetime | None = None,
        reason: str = "",
        resume: bool = False,
    ) -> None:
        """With the lock held: copy the state to ``target`` (None: checkpoint) and switch.

        ``export``: fence and export from the serving node (else the state comes from the
        ground copy); ``resume``: a checkpointed session resumes on ``target``.
        """
        started = self._clock.now()
        record = session.record
        los = session.window.los if session.window else started
        planned_at = planned_at or started
        self._events.emit(
            session.event("started", self._clock.now(), planned_at, los, target, detail=reason)
        )
        new_epoch = self._store.reserve_epoch(session.session_id)
        ground = session.snapshot(new_epoch)
        state_bytes = self.state_bytes(session)
        same_satellite = target is not None and target.satellite_id == record.satellite_id
        try:
            if export and record.satellite_id and session.turns and not same_satellite:
                state_bytes = await self._fence_and_export(session, ground, state_bytes)
            if target is None or not record.satellite_id or resume or not export:
                # From the ground store (or to it): the state goes one way over the ground.
                path = TransferPath.GROUND
                transfer_s = transfer_time_s(state_bytes, self._settings.ground_rate_bps)
            else:
                path, transfer_s = choose_path(
                    record.satellite_id,
                    target.satellite_id,
                    state_bytes,
                    started,
                    self._settings,
                    isl_in_view=self._isl_in_view,
                )
            if not session.turns:
                transfer_s = 0.0
            await self._clock.sleep(transfer_s)  # the modelled serialisation of the state
            if target is None:
                now = self._clock.now()
                resume_window = self._coverage.next_aos(session.model, now)
                event = session.event(
                    "checkpointed",
                    self._clock.now(),
                    planned_at,
                    los,
                    None,
                    path=path,
                    bytes_moved=state_bytes,
                    detail=reason or "no successor in view",
                )
                self._switch(
                    session,
                    None,
                    event,
                    ground,
                    state_bytes,
                    since=now,
                    resume_at=resume_window.aos if resume_window else None,
                )
                return
            if not same_satellite or session.turns:
                await self._nodes.import_state(
                    target.satellite_id,
                    target.station_id,
                    ground,
                    request_id=f"{session.session_id}.i{new_epoch}",
                    deadline=self._deadline(self._config.operation_s),
                )
                if same_satellite:
                    path = TransferPath.NONE  # another station: only the session epoch moves on
            now = self._clock.now()
            interruption_s = (now - started).total_seconds()
            detail = reason
            if not resume and session.window is not None and now > los:
                # Never claimed as a clean move: the state reached the successor after the pass
                # it left had ended (the control round trips took longer than the margin).
                lead_s = (los - started).total_seconds()
                late = (
                    f"late: ended {(now - los).total_seconds():.1f} s after LOS, started "
                    f"{abs(lead_s):.1f} s {'before' if lead_s >= 0 else 'after'} it"
                )
                detail = f"{reason}; {late}" if reason else late
            event = session.event(
                "resumed" if resume else "completed",
                now,
                planned_at,
                los,
                target,
                path=path,
                bytes_moved=state_bytes if path is not TransferPath.NONE else 0,
                interruption_s=interruption_s,
                detail=detail,
            )
            self._switch(session, target, event, ground, state_bytes, since=now)
            self._metrics.interruption(interruption_s)
            # Learn the control overhead (round trips, commits) beyond the transfer: the next
            # plans start that much earlier. Rises at once, decays slowly.
            overhead_s = max(0.0, interruption_s - transfer_s)
            self._overhead_s = max(overhead_s, self._overhead_s * 0.9 + overhead_s * 0.1)
        except GroundplaneError as error:
            self._metrics.handoff("failed")
            self._events.emit(
                session.event(
                    "failed", self._clock.now(), planned_at, los, target, detail=str(error)
                )
            )
            log.warning("handoff_failed", session_id=session.session_id, error=str(error))
            # The old route stays; the supervisor (or the next turn) tries again.
            await self._clock.sleep(self._config.pause_s)

    async def _fence_and_export(
        self, session: LiveSession, ground: SessionSnapshot, state_bytes: int
    ) -> int:
        """Fence the session on its node at ``ground.epoch`` and export it; the state size to
        move (the node's figure when it gave one). A failed export is logged and the ground copy
        is moved: it is the checkpoint."""
        record = session.record
        try:
            exported = await self._nodes.export_state(
                record.satellite_id,
                record.station_id,
                session.session_id,
                fence_epoch=ground.epoch,
                request_id=f"{session.session_id}.x{ground.epoch}",
                deadline=self._deadline(self._config.operation_s),
            )
        except GroundplaneError as error:
            log.info("handoff_export_failed", session_id=session.session_id, error=str(error))
            return state_bytes
        if exported.context_tokens:
            reported = exported.state_bytes // exported.context_tokens
            known = self._reported_bytes_per_token.get(session.model, 0)
            self._reported_bytes_per_token[session.model] = max(known, reported)
        if not exported.snapshot.same_content(ground):
            log.warning("handoff_export_differs", session_id=session.session_id)
        return exported.state_bytes or state_bytes

    def _switch(  # noqa: PLR0913 - one store transaction needs route, event and checkpoint
        self,
        session: LiveSession,
        to: PassWindow | None,
        event: HandoffEvent,
        ground: SessionSnapshot,
        state_bytes: int,
        *,
        since: datetime,
        resume_at: datetime | None = None,
    ) -> None:
        """Route the session to ``to`` (None: checkpointed until ``resume_at``) with its
        checkpoint and ``event`` in one store transaction; count and publish the event."""
        event_id = self._store.assign(
            session.session_id,
            satellite_id=to.satellite_id if to else "",
            station_id=to.station_id if to else "",
            epoch=ground.epoch,
            since=since,
            state=st.ACTIVE if to else st.CHECKPOINTED,
            resume_at=resume_at,
            checkpoint=(self._nodes.checkpoint_bytes(ground), state_bytes),
            event=event,
        )
        session.record = self._store.session(session.session_id)
        session.window = to
        if to is None:
            session.active.clear()
        else:
            session.active.set()
        self.links.release(session.session_id)
        self._metrics.handoff(event.state)
        self._metrics.moved(event.path, event.bytes_moved)
        self._events.publish(with_id(event, event_id))
