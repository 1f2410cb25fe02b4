"""``groundplane serve handoff`` as a process, reached only through its contract.

A private Mosquitto, tracking (``build_tracking``), the link emulator and real node agents
(``NodeHost``, a few satellites of a small Walker shell) run in the test's process on one
simulated clock; ``serve handoff`` runs as a child process on the same clock (``--clock``), gets
its satellites and sites from tracking's ``WatchCatalog`` and its broker from
``GROUNDPLANE_BROKER``. The test talks to it over gRPC only (``HandoffService`` and health).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.handoff.v1 import handoff_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.links.emulator import LinkEmulator
from groundplane.links.geometry import TrackedGroundGeometry
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.agent import AgentConfig
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.node.engine import EngineConfig
from groundplane.node.host import HostedNode, NodeHost
from groundplane.orbit.constellations import generate
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import Pass, find_passes
from groundplane.scenario import default_stations
from groundplane.tracking.app import build_tracking

from ..processes import Served, readiness, serve, wait_serving

pytestmark = pytest.mark.slow

EPOCH = datetime(2026, 8, 15, tzinfo=UTC)
CONSTELLATION = "walker:24/6/1@550km:53"
SPEED = 4.0
"""Simulated seconds per wall second: the chosen pass (over 8 simulated minutes) outlasts the
test (about 40 wall seconds)."""
HOSTED = 3
"""Satellites with a node agent: the one of the longest early pass and others in view then."""
CHAT = SyntheticModelSpec("chat", decode_s_per_token=0.01, min_answer_tokens=3, max_answer_tokens=8)
JOB_ITEMS = 6
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


@dataclass(frozen=True)
class Scenario:
    start: datetime
    """Ten simulated seconds into the longest pass of the first two hours."""
    hosted: tuple[str, ...]


def choose_scenario(batch: SatelliteBatch) -> Scenario:
    passes = find_passes(batch, default_stations(), EPOCH, EPOCH + timedelta(hours=2))

    def duration_s(p: Pass) -> float:
        return (p.los - p.aos).total_seconds()

    longest = max(passes, key=duration_s)
    start = longest.aos + timedelta(seconds=10)
    # Others in view then first, then those rising soonest after.
    others = sorted(
        (p for p in passes if p.los > start and p.catalog_id != longest.catalog_id),
        key=lambda p: max(p.aos, start),
    )
    hosted = [longest.catalog_id]
    for p in others:
        if p.catalog_id not in hosted and len(hosted) < HOSTED:
            hosted.append(p.catalog_id)
    return Scenario(start, tuple(hosted))


class CountingBackend(SyntheticBackend):
    """The synthetic backend, also counting every execution by request id."""

    def __init__(self, clock: SimulatedClock, executions: Counter[str]) -> None:
        super().__init__([CHAT], clock)
        self._executions = executions

    def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self._executions[request.request_id] += 1
        return super().generate(request)


@asynccontextmanager
async def serve_handoff(
    tmp_path: Path, *, tracking: str, broker_url: str, db: Path, clock: SimulatedClock, run: int
) -> AsyncIterator[Served]:
    """``serve handoff`` until the block ends; then SIGTERM, which must end it with status 0."""
    async with serve(
        "handoff",
        "--port",
        "0",
        "--tracking",
        tracking,
        "--db",
        str(db),
        "--clock",
        str(clock.spec()),
        "--unready-delay",
        "0",
        "--drain-grace",
        "2",
        "--log-format",
        "json",
        stderr_path=tmp_path / f"handoff-{run}.log",
        start_timeout_s=START_TIMEOUT_S,
        env={**os.environ, "GROUNDPLANE_BROKER": broker_url},
    ) as served:
        yield served
        await served.stop(START_TIMEOUT_S)


async def wait_job_done(stub: pb_grpc.HandoffServiceAsyncStub, job_id: str) -> pb.Job:
    """GetJob until the job is done (the service pushes no job state; a bounded poll)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            response = await stub.GetJob(
                pb.GetJobRequest(job_id=job_id, include_results=True), timeout=CALL_TIMEOUT_S
            )
            if response.job.state == "done":
                return response.job
            await asyncio.sleep(0.2)


def items_executed(executions: Counter[str], job_id: str) -> dict[str, int]:
    return {rid: n for rid, n in executions.items() if rid.startswith(f"{job_id}.i")}


async def test_serve_handoff_serves_sessions_and_jobs_and_keeps_them_across_a_restart(
    tmp_path: Path,
) -> None:
    """The process prints where it serves and is NOT_SERVING while no node has been heard; once
    node agents are up it becomes SERVING. Through gRPC a session is opened on a hosted
    satellite and answers a turn, and a job of six items runs each item exactly once on the
    nodes. After SIGTERM (exit 0) and a start on the same --db, the session is still there with
    its turn and answers the next turn in order, the job is still done with every result and
    no item ran again; a last SIGTERM exits 0."""
    _need_mosquitto()
    elements = generate(CONSTELLATION, EPOCH)
    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    stations = default_stations()
    scenario = choose_scenario(batch)
    clock = SimulatedClock(scenario.start, speed=SPEED)
    executions: Counter[str] = Counter()
    db = tmp_path / "handoff.sqlite"
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(
            PrivateBroker(nodes=scenario.hosted, workdir=tmp_path / "broker")
        )
        tracking = build_tracking(
            clock, elements=elements, sites=stations, unready_delay_s=0.0, drain_grace_s=0.5
        )
        stack.callback(tracking.close)
        await tracking.server.start()
        stack.push_async_callback(tracking.server.stop)
        links_client = await stack.enter_async_context(
            MqttClient(broker.address, client_id="test-links", clock=clock)
        )
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        emulator = LinkEmulator(
            links_client,
            clock,
            TrackedGroundGeometry(batch, stations),
            tick_s=1.0,
            stations=[s.id for s in stations],
            satellites=batch.ids,
        )
        links_task = tasks.create_task(emulator.run(), name="test-links")
        stack.callback(links_task.cancel)
        await emulator.wait_ready(START_TIMEOUT_S)
        host = NodeHost(
            [
                HostedNode(
                    sat,
                    broker.node_address(sat),
                    CountingBackend(clock, executions),
                    EngineConfig(),
                )
                for sat in scenario.hosted
            ],
            clock,
            agent_config=AgentConfig(load_interval_s=0.5),
        )

        def started(run: int) -> AbstractAsyncContextManager[Served]:
            return serve_handoff(
                tmp_path,
                tracking=tracking.server.target,
                broker_url=broker.url,
                db=db,
                clock=clock,
                run=run,
            )

        async with started(1) as first:
            assert (
                await readiness(first.target, CALL_TIMEOUT_S)
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            host_task = tasks.create_task(host.run(), name="test-nodes")
            await host.wait_ready(START_TIMEOUT_S)
            await wait_serving(first.target, START_TIMEOUT_S)
            async with grpc.aio.insecure_channel(first.target) as channel:
                stub = pb_grpc.HandoffServiceStub(channel)
                session = (
                    await stub.CreateSession(
                        pb.CreateSessionRequest(model="chat"), timeout=CALL_TIMEOUT_S
                    )
                ).session
                assert session.state == "active", session
                assert session.satellite_id in scenario.hosted, session
                turn = await stub.SendTurn(
                    pb.SendTurnRequest(session_id=session.session_id, prompt="hello up there"),
                    timeout=CALL_TIMEOUT_S,
                )
                assert turn.turn_index == 0, turn
                assert turn.text, turn
                assert turn.satellite_id in scenario.hosted, turn
                job = (
                    await stub.SubmitJob(
                        pb.SubmitJobRequest(
                            model="chat", prompts=[f"item {n}" for n in range(JOB_ITEMS)]
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                ).job
                done = await wait_job_done(stub, job.job_id)
                assert done.done_count == JOB_ITEMS, done
                assert len(done.results) == JOB_ITEMS, done
                ran = items_executed(executions, job.job_id)
                assert ran == {f"{job.job_id}.i{n}": 1 for n in range(JOB_ITEMS)}, ran

        async with started(2) as second:
            await wait_serving(second.target, START_TIMEOUT_S)
            async with grpc.aio.insecure_channel(second.target) as channel:
                stub = pb_grpc.HandoffServiceStub(channel)
                kept = (
                    await stub.GetSession(
                        pb.GetSessionRequest(session_id=session.session_id),
                        timeout=CALL_TIMEOUT_S,
                    )
                ).session
                assert kept.state == "active", kept
                assert kept.turns == 1, kept
                again = await stub.SendTurn(
                    pb.SendTurnRequest(session_id=session.session_id, prompt="still there?"),
                    timeout=CALL_TIMEOUT_S,
                )
                assert again.turn_index == 1, again
                assert again.text, again
                after = (
                    await stub.GetJob(
                        pb.GetJobRequest(job_id=job.job_id, include_results=True),
                        timeout=CALL_TIMEOUT_S,
                    )
                ).job
                assert after.state == "done"
                assert dict(after.results) == dict(done.results)
        assert items_executed(executions, job.job_id) == ran
        host.stop()
        async with asyncio.timeout(START_TIMEOUT_S):
            await host_task
