"""SendTurn's deadline handling in HandoffServicer, against a manager stand-in that records the
deadline it is given (no network: the servicer method is called directly)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.handoff.manager import HandoffManager, TurnResult
from groundplane.handoff.servicer import DEFAULT_TURN_S, HandoffServicer
from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument, status_for

from .fakes import EPOCH

SPEED = 20.0
ONE_MICROSECOND = timedelta(microseconds=1)


class RecordingManager:
    """Answers every turn at once and records the deadline it came with."""

    def __init__(self) -> None:
        self.deadlines: list[datetime] = []

    async def send_turn(
        self, session_id: str, prompt: str, *, deadline: datetime, max_tokens: int, turn_id: str
    ) -> TurnResult:
        self.deadlines.append(deadline)
        return TurnResult(session_id, 0, turn_id, "ok", "sat-a", "gs1", 1, 1, False)


class Context:
    """The part of a gRPC servicer context SendTurn reads."""

    def __init__(self, time_remaining_s: float | None) -> None:
        self._remaining = time_remaining_s

    def time_remaining(self) -> float | None:
        return self._remaining


def _servicer() -> tuple[HandoffServicer, RecordingManager, SimulatedClock]:
    clock = SimulatedClock(EPOCH, speed=SPEED, monotonic=lambda: 0.0)  # time stands still
    manager = RecordingManager()
    return HandoffServicer(cast(HandoffManager, manager), clock), manager, clock


def _context(time_remaining_s: float | None) -> grpc.aio.ServicerContext[Any, Any]:
    return cast("grpc.aio.ServicerContext[Any, Any]", Context(time_remaining_s))


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (0, 1_999_999_999)],
)
async def test_an_out_of_range_deadline_is_invalid_argument_naming_the_range(
    seconds: int, nanos: int
) -> None:
    """A deadline Timestamp outside what a UTC instant can be (seconds beyond year 9999 or
    before year 1, nanos beyond a second) is INVALID_ARGUMENT saying what was expected and what
    came, not an internal error; nothing reaches the manager."""
    servicer, manager, _clock = _servicer()
    request = pb.SendTurnRequest(
        session_id="s", prompt="hi", deadline=Timestamp(seconds=seconds, nanos=nanos)
    )
    with pytest.raises(InvalidArgument) as refused:
        await servicer.SendTurn(request, _context(None))
    assert status_for(refused.value)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert "expected deadline" in refused.value.message
    assert f"seconds={seconds}" in refused.value.message
    assert manager.deadlines == []


@pytest.mark.parametrize(
    ("time_remaining_s", "expected_s"),
    [
        (None, DEFAULT_TURN_S),  # no gRPC deadline: the default
        (100.0, DEFAULT_TURN_S),  # a distant gRPC deadline: still the default
        (0.5, 0.5 * SPEED),  # the call ends sooner: its wall seconds at the clock's speed
        (0.0, 0.0),
    ],
)
async def test_an_unset_deadline_is_the_default_or_the_calls_grpc_deadline_if_sooner(
    time_remaining_s: float | None, expected_s: float
) -> None:
    """Without a deadline in the request, the turn's deadline is now + 60 simulated s, or the
    call's own gRPC deadline (wall seconds remaining × the clock's speed) when that is sooner."""
    servicer, manager, clock = _servicer()
    await servicer.SendTurn(
        pb.SendTurnRequest(session_id="s", prompt="hi"), _context(time_remaining_s)
    )
    assert len(manager.deadlines) == 1
    expected = clock.now() + timedelta(seconds=expected_s)
    assert abs(manager.deadlines[0] - expected) <= ONE_MICROSECOND
