"""A session's turns: one at a time, at the session's epoch, each recorded on the ground before
it is returned; a lost node is recovered from (see the manager's module doc)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.config import ManagerConfig
from groundplane.handoff.moves import Mover
from groundplane.handoff.nodes import NodePort
from groundplane.handoff.sessions import LiveSession, TurnResult
from groundplane.handoff.store import HandoffStore, TurnRecord
from groundplane.handoff.tasks import ManagerTasks
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = structlog.get_logger("groundplane.handoff.manager")


class Turns:
    """Runs session turns on the serving node and records their answers."""

    def __init__(  # noqa: PLR0913 - the manager's shared parts, each injected by keyword
        self,
        *,
        nodes: NodePort,
        store: HandoffStore,
        clock: Clock,
        mover: Mover,
        tasks: ManagerTasks,
        config: ManagerConfig,
    ) -> None:
        self._nodes = nodes
        self._store = store
        self._clock = clock
        self._mover = mover
        self._tasks = tasks
        self._config = config

    def _wall(self, until: datetime) -> float:
        return max(0.0, (until - self._clock.now()).total_seconds() / self._clock.speed)

    async def run(  # noqa: PLR0912, PLR0915 - one retry loop whose counters and recovery span attempts
        self, session: LiveSession, prompt: str, max_tokens: int, deadline: datetime, turn_id: str
    ) -> TurnResult:
        """Send the turn until it is answered at the session's epoch, or ``deadline``."""
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
                return self._result(session, stored, attempts, replayed=True)
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
                    return self._result(session, stored, attempts, replayed=True)
                record = session.record
                index, epoch = len(session.turns), record.epoch
                attempts += 1
                try:
                    answer = await self._nodes.run_turn(
                        record.satellite_id,
                        record.station_id,
                        session_id=session.session_id,
                        epoch=epoch,
                        model=session.model,
                        prompt=prompt,
                        max_tokens=max_tokens,
                        request_id=f"{session.session_id}.t{index}.e{epoch}",
                        deadline=min(
                            deadline,
                            self._clock.now() + timedelta(seconds=self._config.turn_attempt_s),
                        ),
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
                    lost = not self._mover.serving(session, self._clock.now())
                    if (
                        lost
                        or failures_here >= 2
                        or isinstance(error, FailedPrecondition | NotFound)
                    ):
                        failures_here = 0
                        recovery = (epoch, f"turn failed: {error}")
                    continue
                if not answer.applied or answer.epoch != epoch:
                    recovery = (epoch, "answer was not applied at the epoch")
                    continue
                turn = TurnRecord(
                    index,
                    turn_id,
                    prompt,
                    answer.text,
                    record.satellite_id,
                    epoch,
                    self._clock.now(),
                )
                self._store.add_turn(session.session_id, turn)
                session.turns.append(turn.turn)
                session.last_active = turn.answered_at
                return self._result(session, turn, attempts, replayed=False)
            finally:
                session.lock.release()

    def _result(
        self, session: LiveSession, turn: TurnRecord, attempts: int, *, replayed: bool
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

    async def _wait_resumed(self, session: LiveSession, deadline: datetime) -> None:
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
        self, session: LiveSession, epoch: int, reason: str, deadline: datetime
    ) -> None:
        """Start (or join) the session's recovery off ``epoch`` and wait for it until
        ``deadline``. The recovery is a manager task: a caller that stops waiting (its deadline,
        its cancellation) never cancels a move halfway, e.g. after the old node was fenced."""
        task = session.recovery
        if task is None or task.done():
            task = self._tasks.spawn(
                self._mover.recover_off(session, epoch, reason),
                f"handoff-recovery:{session.session_id}",
            )
            session.recovery = task
        await asyncio.wait({task}, timeout=self._wall(deadline))
