"""A session as the manager holds it while it is open, and what the manager reports about it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from groundplane.handoff import store as st
from groundplane.handoff.nodes import SessionSnapshot, Turn
from groundplane.handoff.planner import HandoffSettings, PassWindow, TransferPath
from groundplane.handoff.store import HandoffEvent, SessionRecord


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


@dataclass
class LiveSession:
    """An open session: its stored record, the ground copy of its transcript, the pass serving
    it, and the lock that runs its turns and moves one at a time."""

    record: SessionRecord
    turns: list[Turn]
    last_active: datetime
    """When its last turn was answered (or it was opened): idle sessions expire from this."""
    window: PassWindow | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    planned_epoch: int = -1
    recovery: asyncio.Task[None] | None = None
    """The recovery a turn asked for (a manager task: no caller's deadline can cancel it)."""

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def model(self) -> str:
        return self.record.model

    def snapshot(self, epoch: int) -> SessionSnapshot:
        """The ground copy of the session under ``epoch``."""
        return SessionSnapshot(self.session_id, self.model, epoch, tuple(self.turns))

    def event(  # noqa: PLR0913 - the fields of a HandoffEvent the record cannot supply
        self,
        state: str,
        at: datetime,
        planned_at: datetime,
        los: datetime,
        to: PassWindow | None,
        *,
        path: TransferPath = TransferPath.NONE,
        bytes_moved: int = 0,
        interruption_s: float = 0.0,
        detail: str = "",
    ) -> HandoffEvent:
        """A handoff event of this session, from where its record says it is to ``to``."""
        return HandoffEvent(
            "session",
            self.session_id,
            state,
            at,
            planned_at,
            los,
            self.record.satellite_id,
            self.record.station_id,
            to.satellite_id if to else "",
            to.station_id if to else "",
            path.value,
            bytes_moved,
            interruption_s,
            detail,
        )


def session_info(
    record: SessionRecord,
    turns: list[Turn],
    window: PassWindow | None,
    settings: HandoffSettings,
) -> SessionInfo:
    tokens = sum(t.tokens for t in turns)
    return SessionInfo(
        record.session_id,
        record.model,
        record.state,
        record.satellite_id,
        record.station_id,
        record.epoch,
        len(turns),
        tokens,
        settings.state_bytes(record.model, tokens),
        window.los if window and record.state == st.ACTIVE else None,
        record.resume_at,
    )
