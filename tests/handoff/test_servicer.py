"""HandoffService over real gRPC on loopback, in front of a manager driving real node agents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.planner import HandoffSettings
from groundplane.handoff.servicer import HandoffServicer
from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.handoff.v1 import handoff_pb2_grpc as pb_grpc
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.timestamps import to_timestamp
from groundplane.node.backends import predict_answer
from groundplane.node.sessions import Turn

from .conftest import CHAT, SATELLITES, System, SystemFactory, cycling_schedule

pytestmark = pytest.mark.slow

MAX_TOKENS = 8
CALL_TIMEOUT_S = 10.0
"""Wall seconds any one call may take (a turn is a few round trips through the emulator)."""
CONFIG = ManagerConfig(
    settings=HandoffSettings(
        lead_margin_s=2.0,
        min_dwell_s=5.0,
        ground_rate_bps=1e9,
        bytes_per_token={"chat": 65_536},
    ),
    replan_interval_s=3.0,
)


@contextlib.asynccontextmanager
async def serving(system: System) -> AsyncIterator[pb_grpc.HandoffServiceAsyncStub]:
    """A manager of ``system`` served by HandoffServicer on a loopback gRPC server."""
    manager = await system.start_manager("handoff-grpc")
    server = GrpcServer(
        [HandoffServicer(manager, system.clock).binding()], drain_grace_s=0.2, unready_delay_s=0
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            yield pb_grpc.HandoffServiceStub(channel)
    finally:
        await server.stop()


def _deadline(system: System, seconds: float) -> Timestamp:
    return to_timestamp(system.clock.now() + timedelta(seconds=seconds))


async def test_sessions_turns_jobs_and_events_round_trip_over_grpc(
    make_system: SystemFactory,
) -> None:
    """Over gRPC: CreateSession opens a session on the satellite in view; SendTurn answers with
    the synthetic model's answer over the whole context, and the same turn id again returns the
    stored answer marked replayed (nothing runs twice); GetSession counts the turns; a
    WatchHandoffs stream opened before the serving satellite sets delivers the live handoff
    events of the session, which ListHandoffs also records; SubmitJob runs every item and GetJob
    returns each item's answer; CloseSession closes the session and a later turn is refused
    FAILED_PRECONDITION."""
    async with make_system(cycling_schedule(), config=CONFIG) as system, serving(system) as stub:
        created = await stub.CreateSession(
            pb.CreateSessionRequest(model="chat", session_id="grpc-1"), timeout=CALL_TIMEOUT_S
        )
        assert created.session.session_id == "grpc-1"
        assert created.session.state == "active"
        assert created.session.satellite_id in SATELLITES
        assert created.session.HasField("los")

        prompts = ["first question", "second question"]
        context: list[Turn] = []
        for index, prompt in enumerate(prompts):
            reply = await stub.SendTurn(
                pb.SendTurnRequest(
                    session_id="grpc-1",
                    prompt=prompt,
                    max_tokens=MAX_TOKENS,
                    turn_id=f"t{index}",
                    deadline=_deadline(system, 60),
                ),
                timeout=CALL_TIMEOUT_S,
            )
            assert reply.turn_index == index
            assert not reply.replayed
            assert reply.text == predict_answer(CHAT, tuple(context), prompt, MAX_TOKENS).text
            context.append(Turn(prompt, reply.text))
        again = await stub.SendTurn(
            pb.SendTurnRequest(session_id="grpc-1", prompt=prompts[0], turn_id="t0"),
            timeout=CALL_TIMEOUT_S,
        )
        assert again.replayed
        assert again.turn_index == 0
        assert again.text == context[0].answer
        session = (
            await stub.GetSession(pb.GetSessionRequest(session_id="grpc-1"), timeout=CALL_TIMEOUT_S)
        ).session
        assert session.turns == 2
        assert session.context_tokens > 0

        # The first satellite sets ~59 simulated s after the start: watch the handoff live.
        watch = stub.WatchHandoffs(pb.WatchHandoffsRequest(subject_id="grpc-1"))
        live: list[pb.HandoffEvent] = []
        async with asyncio.timeout(CALL_TIMEOUT_S):
            async for message in watch:
                live.append(message.event)
                if message.event.state == "completed":
                    break
        watch.cancel()
        assert live[-1].state == "completed"
        assert live[-1].from_satellite_id == created.session.satellite_id
        assert live[-1].to_satellite_id not in ("", created.session.satellite_id)
        assert all(e.subject_id == "grpc-1" for e in live)
        listed = await stub.ListHandoffs(
            pb.ListHandoffsRequest(subject_id="grpc-1"), timeout=CALL_TIMEOUT_S
        )
        assert {e.event_id for e in live} <= {e.event_id for e in listed.events}
        replayed = stub.WatchHandoffs(
            pb.WatchHandoffsRequest(subject_id="grpc-1", replay=True, after_event_id=0)
        )
        first = await asyncio.wait_for(replayed.read(), CALL_TIMEOUT_S)
        replayed.cancel()
        assert isinstance(first, pb.WatchHandoffsResponse)
        assert first.event.event_id == listed.events[0].event_id

        job_prompts = ["item zero", "item one", "item two"]
        submitted = await stub.SubmitJob(
            pb.SubmitJobRequest(model="chat", prompts=job_prompts, job_id="job-grpc"),
            timeout=CALL_TIMEOUT_S,
        )
        assert submitted.job.item_count == len(job_prompts)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                job = (
                    await stub.GetJob(
                        pb.GetJobRequest(job_id="job-grpc", include_results=True),
                        timeout=CALL_TIMEOUT_S,
                    )
                ).job
                if job.state == "done":
                    break
                await asyncio.sleep(0.05)
        assert job.done_count == len(job_prompts)
        assert dict(job.results) == {
            index: predict_answer(CHAT, (), prompt, 32).text
            for index, prompt in enumerate(job_prompts)
        }

        closed = await stub.CloseSession(
            pb.CloseSessionRequest(session_id="grpc-1"), timeout=CALL_TIMEOUT_S
        )
        assert closed.session.state == "closed"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendTurn(
                pb.SendTurnRequest(session_id="grpc-1", prompt="anyone there?"),
                timeout=CALL_TIMEOUT_S,
            )
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_input_is_invalid_argument_and_unknown_ids_are_not_found(
    make_system: SystemFactory,
) -> None:
    """Missing model, empty prompt, an out-of-range token budget and an empty job are
    INVALID_ARGUMENT with a message naming what was expected; unknown session and job ids are
    NOT_FOUND, for GetSession, SendTurn, CloseSession and GetJob alike."""
    async with make_system(cycling_schedule(), config=CONFIG) as system, serving(system) as stub:
        await stub.CreateSession(
            pb.CreateSessionRequest(model="chat", session_id="ok"), timeout=CALL_TIMEOUT_S
        )
        invalid: list[Awaitable[object]] = [
            stub.CreateSession(pb.CreateSessionRequest(model=""), timeout=CALL_TIMEOUT_S),
            stub.SendTurn(pb.SendTurnRequest(session_id="ok", prompt=""), timeout=CALL_TIMEOUT_S),
            stub.SendTurn(
                pb.SendTurnRequest(session_id="ok", prompt="hi", max_tokens=9000),
                timeout=CALL_TIMEOUT_S,
            ),
            stub.SubmitJob(pb.SubmitJobRequest(model="chat"), timeout=CALL_TIMEOUT_S),
            stub.SubmitJob(
                pb.SubmitJobRequest(model="chat", prompts=["a", ""]), timeout=CALL_TIMEOUT_S
            ),
        ]
        for call in invalid:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "expected" in (error.value.details() or "")
        unknown: list[Awaitable[object]] = [
            stub.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=CALL_TIMEOUT_S),
            stub.SendTurn(
                pb.SendTurnRequest(session_id="nope", prompt="hi"), timeout=CALL_TIMEOUT_S
            ),
            stub.CloseSession(pb.CloseSessionRequest(session_id="nope"), timeout=CALL_TIMEOUT_S),
            stub.GetJob(pb.GetJobRequest(job_id="nope"), timeout=CALL_TIMEOUT_S),
        ]
        for call in unknown:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() is grpc.StatusCode.NOT_FOUND
            assert "nope" in (error.value.details() or "")
