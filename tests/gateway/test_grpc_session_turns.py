"""GrpcSessionTurns against a real HandoffService: a manager driving real node agents over a
private Mosquitto (the handoff tests' system), served by GrpcServer on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest

from groundplane.gateway.turns import REPLY_SLACK_S, GrpcSessionTurns
from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.planner import HandoffSettings
from groundplane.handoff.servicer import HandoffServicer
from groundplane.handoff.v1 import handoff_pb2 as hpb
from groundplane.kernel.errors import DeadlineExceeded, FailedPrecondition, NotFound
from groundplane.kernel.serving import GrpcServer
from groundplane.node.backends import predict_answer
from groundplane.node.sessions import Turn

from ..handoff.conftest import (
    BATCH,
    CHAT,
    SATELLITES,
    System,
    SystemFactory,
    cycling_schedule,
    make_system,
)

__all__ = ["make_system"]  # the handoff tests' fixture, used here too

pytestmark = pytest.mark.slow

MAX_TOKENS = 8
CALL_TIMEOUT_S = 10.0
"""Wall seconds any one turn may take (a few round trips through the emulator)."""
CONFIG = ManagerConfig(
    settings=HandoffSettings(
        lead_margin_s=2.0,
        min_dwell_s=5.0,
        ground_rate_bps=1e9,
        bytes_per_token={"chat": 65_536},
    ),
    replan_interval_s=3.0,
)
SEND_TURN = "/groundplane.handoff.v1.HandoffService/SendTurn"


class LoseFirstReply(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]  # generic only in grpc-stubs
    """Lets the first SendTurn run on the server, then drops its reply: the caller sees
    UNAVAILABLE, as when the connection breaks after the manager answered. Records every
    SendTurn request it passes on."""

    def __init__(self) -> None:
        self.sent: list[hpb.SendTurnRequest] = []
        self.lose_next = True

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        if client_call_details.method not in (SEND_TURN, SEND_TURN.encode()):
            return call
        self.sent.append(request)
        if not self.lose_next:
            return call
        self.lose_next = False
        await call  # the manager ran and recorded the turn
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "Socket closed (the reply was lost on the way back)",
            None,
        )


@dataclass
class Handoff:
    system: System
    server: GrpcServer
    turns: GrpcSessionTurns
    interceptor: LoseFirstReply
    servers: list[GrpcServer] = field(default_factory=list)

    def executions(self, session_id: str) -> list[tuple[str, str]]:
        """Node executions of the session's turns (satellite, request id)."""
        return [e for e in self.system.executions if e[1].startswith(f"{session_id}.t")]

    def deadline_in(self, seconds: float) -> Any:
        return self.system.clock.now() + timedelta(seconds=seconds * self.system.clock.speed)


async def serve(manager: HandoffManager, system: System, address: str) -> GrpcServer:
    server = GrpcServer(
        [HandoffServicer(manager, system.clock).binding()],
        address=address,
        drain_grace_s=0.2,
        unready_delay_s=0,
    )
    await server.start()
    return server


@contextlib.asynccontextmanager
async def running_handoff(make_system: SystemFactory, speed: float) -> AsyncIterator[Handoff]:
    async with make_system(cycling_schedule(), config=CONFIG, speed=speed) as system:
        manager = await system.start_manager("handoff-grpc")
        server = await serve(manager, system, "127.0.0.1:0")
        interceptor = LoseFirstReply()
        interceptor.lose_next = False
        async with grpc.aio.insecure_channel(
            server.target,
            interceptors=[interceptor],  # type: ignore[list-item]  # grpc-stubs: a sync-style union
        ) as channel:
            running = Handoff(system, server, GrpcSessionTurns(channel, system.clock), interceptor)
            running.servers.append(server)
            try:
                yield running
            finally:
                for each in running.servers:
                    await each.stop()


@pytest.fixture
async def handoff(make_system: SystemFactory) -> AsyncIterator[Handoff]:
    """The handoff system at 25× (chat turns take a few wall milliseconds)."""
    async with running_handoff(make_system, 25.0) as running:
        yield running


@pytest.fixture
async def realtime_handoff(make_system: SystemFactory) -> AsyncIterator[Handoff]:
    """The handoff system at 1× (a batch-model turn takes 5 wall seconds)."""
    async with running_handoff(make_system, 1.0) as running:
        yield running


async def test_a_first_turn_opens_the_session_and_is_answered(handoff: Handoff) -> None:
    """A turn of a session the handoff service does not know opens it (GetSession NOT_FOUND,
    then CreateSession with that id) and is answered by a satellite in view with the synthetic
    model's answer; the next turn carries the context; a turn for another model is refused
    FAILED_PRECONDITION without reaching a node."""
    turns = handoff.turns
    first = await turns.send_turn(
        "chat-1",
        "chat",
        "first question",
        turn_id="t0",
        max_tokens=MAX_TOKENS,
        deadline=handoff.deadline_in(CALL_TIMEOUT_S),
    )
    assert first.text == predict_answer(CHAT, (), "first question", MAX_TOKENS).text
    assert first.satellite_id in SATELLITES
    assert not first.replayed
    assert first.attempts >= 1
    second = await turns.send_turn(
        "chat-1",
        "chat",
        "second question",
        turn_id="t1",
        max_tokens=MAX_TOKENS,
        deadline=handoff.deadline_in(CALL_TIMEOUT_S),
    )
    context = (Turn("first question", first.text),)
    assert second.text == predict_answer(CHAT, context, "second question", MAX_TOKENS).text
    assert handoff.system.manager.get_session("chat-1").turns == 2
    with pytest.raises(FailedPrecondition, match="talks to model 'chat'"):
        await turns.send_turn(
            "chat-1",
            "batch",
            "third question",
            turn_id="t2",
            max_tokens=MAX_TOKENS,
            deadline=handoff.deadline_in(CALL_TIMEOUT_S),
        )
    assert len(handoff.executions("chat-1")) == 2


async def test_the_same_turn_id_again_answers_from_the_store(handoff: Handoff) -> None:
    """A caller's retry with the same turn id (its idempotency key) returns the recorded answer
    marked replayed; the node ran the turn once."""
    turns = handoff.turns
    first, again = [
        await turns.send_turn(
            "chat-2",
            "chat",
            "say it once",
            turn_id="key-1",
            max_tokens=MAX_TOKENS,
            deadline=handoff.deadline_in(CALL_TIMEOUT_S),
        )
        for _ in range(2)
    ]
    assert again.text == first.text
    assert (first.replayed, again.replayed) == (False, True)
    assert len(handoff.executions("chat-2")) == 1


async def test_a_lost_reply_is_sent_again_with_the_same_turn_id_and_runs_once(
    handoff: Handoff,
) -> None:
    """The manager answers the first SendTurn but its reply is lost (UNAVAILABLE): the adapter
    sends the turn again with the same turn id (drawn by the adapter when the caller gave none)
    and gets the recorded answer; the node ran the turn once."""
    handoff.interceptor.lose_next = True
    turn = await handoff.turns.send_turn(
        "chat-3",
        "chat",
        "do not run me twice",
        turn_id="",
        max_tokens=MAX_TOKENS,
        deadline=handoff.deadline_in(CALL_TIMEOUT_S),
    )
    first, second = handoff.interceptor.sent
    assert first.turn_id
    assert second.turn_id == first.turn_id
    assert turn.text == predict_answer(CHAT, (), "do not run me twice", MAX_TOKENS).text
    assert turn.replayed
    assert len(handoff.executions("chat-3")) == 1
    assert handoff.system.manager.get_session("chat-3").turns == 1


async def test_a_turn_while_the_handoff_service_restarts_waits_for_it(handoff: Handoff) -> None:
    """The handoff service is down when a session's first turn starts and back on the same
    address half a second later: the adapter's calls (GetSession, CreateSession, SendTurn) are
    sent again until it answers, within the turn's deadline, and the turn is answered once."""
    address = handoff.server.target
    await handoff.server.stop()
    turn = asyncio.create_task(
        handoff.turns.send_turn(
            "chat-6",
            "chat",
            "are you back?",
            turn_id="t0",
            max_tokens=MAX_TOKENS,
            deadline=handoff.deadline_in(CALL_TIMEOUT_S),
        ),
        name="test-turn-during-restart",
    )
    await asyncio.sleep(0.5)  # the outage: the calls of the turn fail meanwhile
    assert not turn.done()
    handoff.servers.append(await serve(handoff.system.manager, handoff.system, address))
    async with asyncio.timeout(CALL_TIMEOUT_S):
        answered = await turn
    assert answered.text == predict_answer(CHAT, (), "are you back?", MAX_TOKENS).text
    assert len(handoff.executions("chat-6")) == 1


async def test_the_deadline_travels_to_the_manager_and_bounds_the_call(
    realtime_handoff: Handoff,
) -> None:
    """A turn that takes 5 s (the batch model at 1×) with a deadline 1.5 s away ends
    DEADLINE_EXCEEDED from the handoff service (mapped to the domain error, naming the turn's
    deadline: the instant travelled in the request), no earlier than the deadline and no later
    than the deadline plus the reply slack; a turn whose deadline already passed fails at once
    without a SendTurn."""
    handoff = realtime_handoff
    turns = handoff.turns
    budget_s = 1.5
    deadline = handoff.deadline_in(budget_s)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"^handoff: ") as late:
        await turns.send_turn(
            "batch-1",
            BATCH.name,
            "take your time",
            turn_id="t0",
            max_tokens=MAX_TOKENS,
            deadline=deadline,
        )
    elapsed_s = time.monotonic() - started
    assert deadline.isoformat() in late.value.message
    assert budget_s - 0.1 <= elapsed_s <= budget_s + REPLY_SLACK_S + 0.5
    sent = len(handoff.interceptor.sent)
    with pytest.raises(DeadlineExceeded, match="no time left"):
        await turns.send_turn(
            "batch-1",
            BATCH.name,
            "too late",
            turn_id="t1",
            max_tokens=MAX_TOKENS,
            deadline=handoff.system.clock.now() - timedelta(seconds=1),
        )
    assert len(handoff.interceptor.sent) == sent


async def test_a_session_the_handoff_service_lost_is_not_found_then_opened_again(
    handoff: Handoff, tmp_path: Any
) -> None:
    """The handoff service restarts on the same address without its store: the next turn of a
    session the adapter knew is refused NOT_FOUND (the handoff service's code, kept; the adapter
    reconnects by itself), and the turn after that opens the session again and is answered. (It
    repeats the first prompt: the nodes still hold the request ids of the lost session's turns,
    and the reopened session's first turn gets the same id.)"""
    system, turns = handoff.system, handoff.turns
    await turns.send_turn(
        "chat-5",
        "chat",
        "remember me",
        turn_id="t0",
        max_tokens=MAX_TOKENS,
        deadline=handoff.deadline_in(CALL_TIMEOUT_S),
    )
    address = handoff.server.target
    await handoff.server.stop()
    system.kill_manager()
    system.store_path = tmp_path / "empty-handoff.sqlite"
    manager = await system.start_manager("handoff-grpc-2")
    handoff.servers.append(await serve(manager, system, address))
    with pytest.raises(NotFound, match=r"^handoff: "):
        await turns.send_turn(
            "chat-5",
            "chat",
            "do you remember me?",
            turn_id="t1",
            max_tokens=MAX_TOKENS,
            deadline=handoff.deadline_in(CALL_TIMEOUT_S),
        )
    reopened = await turns.send_turn(
        "chat-5",
        "chat",
        "remember me",
        turn_id="t2",
        max_tokens=MAX_TOKENS,
        deadline=handoff.deadline_in(CALL_TIMEOUT_S),
    )
    assert reopened.text == predict_answer(CHAT, (), "remember me", MAX_TOKENS).text
    assert manager.get_session("chat-5").turns == 1
