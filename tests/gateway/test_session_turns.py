"""Session turns go from the gateway to the handoff manager (through :class:`SessionTurns`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from groundplane.gateway.auth import Tenant
from groundplane.gateway.execution import InferAnswer, Token
from groundplane.gateway.service import InferCall, InferenceGateway
from groundplane.gateway.servicer import NEXT_OPPORTUNITY_KEY, error_metadata
from groundplane.gateway.sources import LocalTableSource
from groundplane.gateway.turns import SessionTurn
from groundplane.kernel.clock import SimulatedClock, format_utc
from groundplane.kernel.errors import DeadlineExceeded, GroundplaneError, Unavailable

from .conftest import FIRST, SECOND, route_table
from .test_gateway_units import CALL, FakeCaller

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
SPEED = 10.0
TENANT = Tenant("alpha", max_concurrent=4, max_queued=4)


class FakeTurns:
    """Records every turn; answers, fails or hangs as told."""

    def __init__(self, *, error: GroundplaneError | None = None, hang: bool = False) -> None:
        self.error = error
        self.hang = hang
        self.turns: list[tuple[str, str, str, str, int, datetime]] = []

    async def send_turn(
        self,
        session_id: str,
        model: str,
        prompt: str,
        *,
        turn_id: str,
        max_tokens: int,
        deadline: datetime,
    ) -> SessionTurn:
        self.turns.append((session_id, model, prompt, turn_id, max_tokens, deadline))
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return SessionTurn(f"answer to {prompt}", "sat-9", "gs-2", 3, 2, turn_id == "replay")


def gateway(turns: FakeTurns, caller: FakeCaller) -> tuple[InferenceGateway, SimulatedClock]:
    clock = SimulatedClock(T0, speed=SPEED)
    return (
        InferenceGateway(
            clock=clock,
            caller=caller,
            tables=LocalTableSource(route_table(1)),
            session_turns=turns,
        ),
        clock,
    )


def session_call(key: str = "") -> InferCall:
    return InferCall(
        model=CALL.model,
        prompt="how far is the horizon?",
        lat_deg=CALL.lat_deg,
        lon_deg=CALL.lon_deg,
        session_id="chat-1",
        idempotency_key=key,
        max_tokens=16,
    )


async def test_a_session_turn_goes_to_the_manager_and_a_stateless_call_does_not() -> None:
    """A call with a session id reaches SessionTurns with the tenant-scoped session id, the
    caller's idempotency key as turn id, its token budget and the call's remaining deadline on
    the system clock (remaining wall s × speed, minus the gateway's margin); the answer names the
    manager's satellite and station and counts its attempts; the node caller is not used. A call
    without a session id still goes to the nodes through the route table."""
    caller = FakeCaller({FIRST: ["a"], SECOND: ["a"]}, {})
    turns = FakeTurns()
    gw, clock = gateway(turns, caller)
    answer = await gw.infer(session_call("key-7"), TENANT, 5.0)
    assert caller.calls == []
    [(session_id, model, prompt, turn_id, max_tokens, deadline)] = turns.turns
    assert (session_id, model, prompt, turn_id, max_tokens) == (
        "alpha:chat-1",
        CALL.model,
        "how far is the horizon?",
        "key-7",
        16,
    )
    expected = clock.now() + timedelta(seconds=(5.0 - gw.config.deadline_margin_s) * SPEED)
    assert abs(deadline - expected) <= timedelta(seconds=0.1 * SPEED)
    assert (answer.text, answer.satellite_id, answer.station_id, answer.attempts) == (
        "answer to how far is the horizon?",
        "sat-9",
        "gs-2",
        2,
    )
    stateless = await gw.infer(CALL, TENANT, 5.0)
    assert stateless.text == "a"
    assert caller.calls == [FIRST]
    assert len(turns.turns) == 1


async def test_a_streamed_turn_without_a_key_gets_a_fresh_turn_id_and_one_token() -> None:
    """Without an idempotency key each call gets its own turn id (two calls, two ids); a streamed
    session turn yields the whole recorded answer as one token, then the answer."""
    turns = FakeTurns()
    gw, _ = gateway(turns, FakeCaller({}, {}))
    events: list[Token | InferAnswer] = [e async for e in gw.stream(session_call(), TENANT, 5.0)]
    await gw.infer(session_call(), TENANT, 5.0)
    assert len(events) == 2
    assert isinstance(events[0], Token)
    assert isinstance(events[1], InferAnswer)
    assert events[0].text == events[1].text == "answer to how far is the horizon?"
    first_id, second_id = turns.turns[0][3], turns.turns[1][3]
    assert first_id
    assert second_id
    assert first_id != second_id


async def test_manager_errors_keep_their_code_and_next_opportunity() -> None:
    """UNAVAILABLE from the manager (a checkpointed session) reaches the caller as UNAVAILABLE
    with the resume time as the next-opportunity trailer; a manager that does not answer within
    the call's budget ends the call DEADLINE_EXCEEDED."""
    resume = T0 + timedelta(minutes=7)
    gw, clock = gateway(
        FakeTurns(error=Unavailable("checkpointed", next_opportunity=resume)), FakeCaller({}, {})
    )
    with pytest.raises(Unavailable) as refused:
        await gw.infer(session_call("k"), TENANT, 5.0)
    assert refused.value.next_opportunity == resume
    assert (NEXT_OPPORTUNITY_KEY, format_utc(resume)) in error_metadata(refused.value, clock)

    hung, _ = gateway(FakeTurns(hang=True), FakeCaller({}, {}))
    async with asyncio.timeout(2.0):
        with pytest.raises(DeadlineExceeded):
            await hung.infer(session_call("k"), TENANT, 0.2)
