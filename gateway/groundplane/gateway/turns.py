"""Session turns through the handoff service.

A call with a ``session_id`` is a turn of a conversation whose state lives on one satellite at a
time and moves before that satellite sets. The gateway does not pick the satellite for such a
turn: it hands the turn to the handoff manager (``groundplane.handoff.v1.HandoffService``), which
knows the session's current assignment, holds the turn across a handoff and records exactly one
answer per turn id. :class:`SessionTurns` is that hand-off as the gateway sees it, and
:class:`GrpcSessionTurns` its one implementation: the ``HandoffService`` reached over gRPC, in
``groundplane up`` (on loopback) as in a split deployment.

* **Opening.** The first turn of a session id opens it (``GetSession``; on NOT_FOUND
  ``CreateSession`` with the caller's session id); a turn whose model differs from the session's
  is refused FAILED_PRECONDITION. Known sessions are remembered (bounded); a SendTurn answered
  NOT_FOUND (the handoff service lost the session) forgets it, so the next turn opens it again.
* **Deadline.** The turn's deadline (an instant of the shared simulated clock) travels in
  ``SendTurnRequest.deadline``; the RPC's own gRPC deadline is the same instant in wall seconds
  plus :data:`REPLY_SLACK_S`, so the manager's answer at its deadline (DEADLINE_EXCEEDED with its
  reason) arrives before the channel gives up.
* **Idempotency.** The turn id is the idempotency key: the manager answers a turn id it already
  recorded from its store (``replayed``, nothing runs), and a second call with the same id while
  the first still runs waits for the session's lock and then answers from the store. An empty
  turn id would make the manager draw a fresh one per RPC, so the adapter draws one itself,
  once per turn, before the first RPC.
* **Retries.** A SendTurn that ends UNAVAILABLE (handoff restarting, connection lost, the reply
  lost on the way back) is sent again with the same turn id, after a jittered
  :class:`~groundplane.mqtt.client.Backoff` delay, at most :data:`MAX_SENDS` times in all and
  never past the deadline, and waits for the channel to be ready. It is not retried when the
  session is checkpointed (no satellite holds it before its resume time): that UNAVAILABLE goes
  back to the caller with the resume time as its next opportunity. GetSession and CreateSession
  are re-sent after UNAVAILABLE the same way (a repeated CreateSession answers ALREADY_EXISTS).
* **Errors.** Every other status comes back as its domain error
  (:func:`~groundplane.kernel.errors.error_from_status`, the message prefixed ``handoff:``), so
  the caller of the gateway sees the handoff service's code.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import grpc

from groundplane.handoff.v1 import handoff_pb2 as hpb
from groundplane.handoff.v1 import handoff_pb2_grpc as hpb_grpc
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    Unavailable,
    error_from_status,
)
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.mqtt.client import Backoff

KNOWN_SESSIONS = 100_000
"""Session ids whose existence and model an adapter remembers (oldest forgotten first)."""
CONTROL_CALL_S = 5.0
"""Wall seconds a GetSession/CreateSession call may take."""
REPLY_SLACK_S = 1.0
"""Wall seconds a SendTurn RPC may outlive the turn's deadline (the manager answers at it)."""
MAX_SENDS = 4
"""SendTurn RPCs one turn may take (the first and its retries after UNAVAILABLE)."""
SEND_BACKOFF = Backoff(base_s=0.05, factor=2.0, cap_s=1.0, jitter=0.2)
"""Delay before each SendTurn retry."""
SESSION_CHECKPOINTED = "checkpointed"
_Reply = TypeVar("_Reply")
"""``Session.state`` of a session no satellite holds until its ``resume_at``."""


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

    def forget(self, session_id: str) -> None:
        self._models.pop(session_id, None)

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


class GrpcSessionTurns:
    """:class:`SessionTurns` on a ``HandoffService`` reached over gRPC (``channel``).

    ``clock`` is the shared simulated clock the turn deadlines are instants of; ``backoff``
    spaces the retries of a SendTurn that ended UNAVAILABLE (see the module doc).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        clock: Clock,
        *,
        backoff: Backoff = SEND_BACKOFF,
        max_sends: int = MAX_SENDS,
        rng: random.Random | None = None,
    ) -> None:
        self._stub = hpb_grpc.HandoffServiceStub(channel)
        self._clock = clock
        self._backoff = backoff
        self._max_sends = max(1, max_sends)
        self._rng = rng or random.Random()
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
        turn_id = turn_id or uuid.uuid4().hex  # one id for every RPC of this turn
        await self._open(session_id, model, deadline)
        request = hpb.SendTurnRequest(
            session_id=session_id,
            prompt=prompt,
            max_tokens=max_tokens,
            turn_id=turn_id,
            deadline=to_timestamp(deadline),
        )
        sends = 0
        while True:
            timeout_s = self._wall_s(deadline)
            if timeout_s <= 0:
                raise DeadlineExceeded(
                    f"turn {turn_id!r} of session {session_id!r} has no time left before its "
                    f"deadline after {sends} SendTurn calls; retry with the same turn id"
                )
            sends += 1
            try:
                reply = await self._stub.SendTurn(
                    request, timeout=timeout_s + REPLY_SLACK_S, wait_for_ready=sends > 1
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.NOT_FOUND:
                    self._known.forget(session_id)
                mapped, retryable = await self._error(error, session_id, deadline)
                if not retryable or sends >= self._max_sends:
                    raise mapped from None
                delay_s = min(self._backoff.delay_s(sends - 1, self._rng), self._wall_s(deadline))
                await asyncio.sleep(max(0.0, delay_s))
                continue
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
        try:
            async with lock:
                try:
                    reply = await self._control(
                        self._stub.GetSession,
                        hpb.GetSessionRequest(session_id=session_id),
                        deadline,
                    )
                    held = reply.session.model
                except grpc.aio.AioRpcError as error:
                    if error.code() is not grpc.StatusCode.NOT_FOUND:
                        raise _mapped(error) from None
                    try:
                        created = await self._control(
                            self._stub.CreateSession,
                            hpb.CreateSessionRequest(model=model, session_id=session_id),
                            deadline,
                        )
                        held = created.session.model
                    except grpc.aio.AioRpcError as create_error:
                        if create_error.code() is not grpc.StatusCode.ALREADY_EXISTS:
                            raise _mapped(create_error) from None
                        # Opened meanwhile (another gateway, or our own call whose reply was
                        # lost); the model is checked on use.
                        held = model
                self._known.remember(session_id, held)
                _check_model(session_id, held, model)
        finally:
            self._known.release(session_id, lock)

    async def _control(
        self, method: Callable[..., Awaitable[_Reply]], request: object, deadline: datetime
    ) -> _Reply:
        """A GetSession or CreateSession call (each at most :data:`CONTROL_CALL_S`, never past
        the deadline), sent again after UNAVAILABLE like SendTurn: both are safe to repeat (a
        repeated CreateSession answers ALREADY_EXISTS)."""
        sends = 0
        while True:
            sends += 1
            timeout_s = max(0.01, min(CONTROL_CALL_S, self._wall_s(deadline)))
            try:
                return await method(request, timeout=timeout_s, wait_for_ready=sends > 1)
            except grpc.aio.AioRpcError as error:
                left_s = self._wall_s(deadline)
                if (
                    error.code() is not grpc.StatusCode.UNAVAILABLE
                    or sends >= self._max_sends
                    or left_s <= 0
                ):
                    raise
                await asyncio.sleep(min(self._backoff.delay_s(sends - 1, self._rng), left_s))

    async def _error(
        self, error: grpc.aio.AioRpcError, session_id: str, deadline: datetime
    ) -> tuple[GroundplaneError, bool]:
        """The domain error of a SendTurn status, and whether sending again may help: only an
        UNAVAILABLE of a session that is not checkpointed. A checkpointed session's UNAVAILABLE
        learns the session's resume time (its next opportunity)."""
        mapped = _mapped(error)
        if error.code() is not grpc.StatusCode.UNAVAILABLE:
            return mapped, False
        try:
            reply = await self._stub.GetSession(
                hpb.GetSessionRequest(session_id=session_id),
                timeout=max(0.01, min(CONTROL_CALL_S, self._wall_s(deadline))),
            )
        except grpc.aio.AioRpcError:
            return mapped, True  # unreachable: a retry may find it back
        if reply.session.state != SESSION_CHECKPOINTED:
            return mapped, True
        if reply.session.HasField("resume_at"):
            mapped = Unavailable(
                mapped.message,
                next_opportunity=from_timestamp(reply.session.resume_at, "session resume_at"),
            )
        return mapped, False


def _mapped(error: grpc.aio.AioRpcError) -> GroundplaneError:
    """The domain error of a HandoffService status (NOT_FOUND stays NotFound, …)."""
    return error_from_status(error.code(), error.details() or "", "handoff")
