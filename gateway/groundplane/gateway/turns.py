"""Session turns through the handoff manager.

A call with a ``session_id`` is a turn of a conversation whose state lives on one satellite at a
time and moves before that satellite sets. The gateway does not pick the satellite for such a
turn: it hands the turn to the handoff manager (``groundplane.handoff.v1.HandoffService``), which
knows the session's current assignment, holds the turn across a handoff and records exactly one
answer per turn id. :class:`SessionTurns` is that hand-off as the gateway sees it:

* :class:`ManagerSessionTurns` calls a :class:`~groundplane.handoff.manager.HandoffManager` in the
  same process (``groundplane up``);
* :class:`GrpcSessionTurns` calls a ``HandoffService`` over gRPC (split deployments).

Both open the session on its first turn (``CreateSession`` with the caller's session id) and
refuse a turn whose model differs from the session's. Manager errors keep their kind (and so
their status code); an UNAVAILABLE of a checkpointed session carries the session's resume time as
the next opportunity.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc

from groundplane.handoff.manager import HandoffManager
from groundplane.handoff.v1 import handoff_pb2 as hpb
from groundplane.handoff.v1 import handoff_pb2_grpc as hpb_grpc
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    NotFound,
    Unavailable,
    error_from_status,
)
from groundplane.kernel.timestamps import from_timestamp, to_timestamp

KNOWN_SESSIONS = 100_000
"""Session ids whose existence and model an adapter remembers (oldest forgotten first)."""
CONTROL_CALL_S = 5.0
"""Wall seconds a GetSession/CreateSession call may take."""


@dataclass(frozen=True, slots=True)
class SessionTurn:
    """One answered turn, as the handoff manager recorded it."""

    text: str
    satellite_id: str
    station_id: str
    session_epoch: int
    attempts: int
    replayed: bool
    """True when the turn id was already answered: the stored answer, nothing ran."""


class SessionTurns(Protocol):
    """Where the gateway sends session turns."""

    async def send_turn(  # noqa: PLR0913 - a turn is session, model, prompt, idempotency key, cap, deadline
        self,
        session_id: str,
        model: str,
        prompt: str,
        *,
        turn_id: str,
        max_tokens: int,
        deadline: datetime,
    ) -> SessionTurn:
        """Answer one turn of ``session_id`` (opened on first use) before ``deadline``.

        ``deadline`` is an instant of the system clock; ``turn_id`` is the idempotency key (a
        turn id already answered returns the stored answer).
        """
        ...


class _KnownSessions:
    """Session id → model of the sessions known to exist (bounded, oldest dropped)."""

    def __init__(self) -> None:
        self._models: OrderedDict[str, str] = OrderedDict()
        self._opening: dict[str, asyncio.Lock] = {}

    def model(self, session_id: str) -> str | None:
        return self._models.get(session_id)

    def remember(self, session_id: str, model: str) -> None:
        self._models[session_id] = model
        self._models.move_to_end(session_id)
        while len(self._models) > KNOWN_SESSIONS:
            self._models.popitem(last=False)

    def lock(self, session_id: str) -> asyncio.Lock:
        return self._opening.setdefault(session_id, asyncio.Lock())

    def release(self, session_id: str, lock: asyncio.Lock) -> None:
        if not lock.locked() and self._opening.get(session_id) is lock:
            del self._opening[session_id]


def _check_model(session_id: str, held: str, asked: str) -> None:
    if held != asked:
        raise FailedPrecondition(
            f"session {session_id!r} talks to model {held!r}; got a turn for {asked!r} (open "
            "another session for another model)"
        )


class ManagerSessionTurns:
    """:class:`SessionTurns` on a :class:`HandoffManager` in the same process."""

    def __init__(self, manager: HandoffManager) -> None:
        self._manager = manager
        self._known = _KnownSessions()

    async def send_turn(  # noqa: PLR0913 - the SessionTurns.send_turn signature
        self,
        session_id: str,
        model: str,
        prompt: str,
        *,
        turn_id: str,
        max_tokens: int,
        deadline: datetime,
    ) -> SessionTurn:
        await self._open(session_id, model)
        result = await self._manager.send_turn(
            session_id, prompt, deadline=deadline, max_tokens=max_tokens, turn_id=turn_id
        )
        return SessionTurn(
            result.text,
            result.satellite_id,
            result.station_id,
            result.session_epoch,
            result.attempts,
            result.replayed,
        )

    async def _open(self, session_id: str, model: str) -> None:
        held = self._known.model(session_id)
        if held is not None:
            _check_model(session_id, held, model)
            return
        lock = self._known.lock(session_id)
        try:
            async with lock:
                try:
                    info = self._manager.get_session(session_id)
                except NotFound:
                    try:
                        info = await self._manager.create_session(model, session_id=session_id)
                    except AlreadyExists:
                        info = self._manager.get_session(session_id)
                self._known.remember(session_id, info.model)
                _check_model(session_id, info.model, model)
        finally:
            self._known.release(session_id, lock)


class GrpcSessionTurns:
    """:class:`SessionTurns` on a ``HandoffService`` reached over gRPC (``channel``)."""

    def __init__(self, channel: grpc.aio.Channel, clock: Clock) -> None:
        self._stub = hpb_grpc.HandoffServiceStub(channel)
        self._clock = clock
        self._known = _KnownSessions()

    def _wall_s(self, deadline: datetime) -> float:
        return (deadline - self._clock.now()).total_seconds() / self._clock.speed

    async def send_turn(  # noqa: PLR0913 - the SessionTurns.send_turn signature
        self,
        session_id: str,
        model: str,
        prompt: str,
        *,
        turn_id: str,
        max_tokens: int,
        deadline: datetime,
    ) -> SessionTurn:
        await self._open(session_id, model, deadline)
        timeout_s = self._wall_s(deadline)
        if timeout_s <= 0:
            raise DeadlineExceeded(
                f"turn {turn_id!r} of session {session_id!r} has no time left before its deadline"
            )
        try:
            reply = await self._stub.SendTurn(
                hpb.SendTurnRequest(
                    session_id=session_id,
                    prompt=prompt,
                    max_tokens=max_tokens,
                    turn_id=turn_id,
                    deadline=to_timestamp(deadline),
                ),
                timeout=timeout_s + 1.0,  # the manager answers at its deadline; a little slack
            )
        except grpc.aio.AioRpcError as error:
            raise await self._error(error, session_id) from None
        return SessionTurn(
            reply.text,
            reply.satellite_id,
            "",  # the station is not part of SendTurnResponse
            reply.session_epoch,
            reply.attempts,
            reply.replayed,
        )

    async def _open(self, session_id: str, model: str, deadline: datetime) -> None:
        held = self._known.model(session_id)
        if held is not None:
            _check_model(session_id, held, model)
            return
        lock = self._known.lock(session_id)
        timeout_s = max(0.01, min(CONTROL_CALL_S, self._wall_s(deadline)))
        try:
            async with lock:
                try:
                    reply = await self._stub.GetSession(
                        hpb.GetSessionRequest(session_id=session_id), timeout=timeout_s
                    )
                    held = reply.session.model
                except grpc.aio.AioRpcError as error:
                    if error.code() is not grpc.StatusCode.NOT_FOUND:
                        raise await self._error(error, session_id) from None
                    try:
                        created = await self._stub.CreateSession(
                            hpb.CreateSessionRequest(model=model, session_id=session_id),
                            timeout=timeout_s,
                        )
                        held = created.session.model
                    except grpc.aio.AioRpcError as create_error:
                        if create_error.code() is not grpc.StatusCode.ALREADY_EXISTS:
                            raise await self._error(create_error, session_id) from None
                        held = model  # opened meanwhile by another gateway; checked on use
                self._known.remember(session_id, held)
                _check_model(session_id, held, model)
        finally:
            self._known.release(session_id, lock)

    async def _error(self, error: grpc.aio.AioRpcError, session_id: str) -> GroundplaneError:
        """The domain error of a HandoffService status; UNAVAILABLE learns the resume time."""
        mapped = error_from_status(error.code(), error.details() or "", "handoff")
        if not isinstance(mapped, Unavailable) or error.code() is not grpc.StatusCode.UNAVAILABLE:
            return mapped
        try:
            reply = await self._stub.GetSession(
                hpb.GetSessionRequest(session_id=session_id), timeout=CONTROL_CALL_S
            )
        except grpc.aio.AioRpcError:
            return mapped
        if reply.session.HasField("resume_at"):
            return Unavailable(
                mapped.message,
                next_opportunity=from_timestamp(reply.session.resume_at, "session resume_at"),
            )
        return mapped
