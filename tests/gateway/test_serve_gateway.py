"""``groundplane serve gateway`` as a child process, reached only through its contracts.

Around it, in this process: a private Mosquitto, the link emulator and real node agents (the
handoff tests' system), a real ``HandoffService`` in front of a handoff manager, and a small
``RoutingService`` that streams the route table a test hands it (a fake at the gRPC seam: the
gateway sees only the contract). The child shares the test's simulated clock (``--clock``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.gateway.servicer import SERVICE_NAME as GATEWAY
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.handoff.planner import PassSchedule
from groundplane.handoff.servicer import HandoffServicer
from groundplane.kernel.clock import ClockSpec
from groundplane.kernel.serving import GrpcServer, ServiceBinding
from groundplane.node.backends import predict_answer
from groundplane.routing.convert import table_to_proto
from groundplane.routing.policy import NodeState, PolicyKind, RoutingPolicy, Sighting
from groundplane.routing.servicer import SERVICE_NAME as ROUTING
from groundplane.routing.table import RouteTable, StationInfo, build_table
from groundplane.routing.v1 import routing_pb2, routing_pb2_grpc
from groundplane.scenario import DEFAULT_TOKEN

from ..handoff.conftest import (
    BATCH,
    CHAT,
    EPOCH,
    SATELLITES,
    STATION,
    System,
    SystemFactory,
    make_system,
)
from ..processes import Served, serve
from ..scrape import sample, samples

__all__ = ["make_system"]  # the handoff tests' fixture, used here too

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
"""A cold start imports numpy, grpc and the generated code on a shared machine."""
CALL_TIMEOUT_S = 10.0
UNREADY_DELAY_S = 0.5
DRAIN_GRACE_S = 2.0
EXIT_SLACK_S = 3.0
"""Wall seconds the child may take past its unready delay and drain grace to exit (interpreter
teardown on a busy machine)."""
FEED_LOSS_S = 3.0
"""ROUTE_FEED_LOSS_S of groundplane.gateway.app: routing unreachable this long → NOT_SERVING."""
SITE = StationInfo(STATION, 78.2297, 15.4077)
USER = (78.22, 15.65)
MAX_TOKENS = 8
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def all_in_view() -> PassSchedule:
    """Every satellite over the station for the whole test (an hour from just before EPOCH)."""
    return PassSchedule.periodic(
        STATION,
        SATELLITES,
        EPOCH - timedelta(seconds=1),
        visible_s=3600.0,
        period_s=3600.0,
        stagger_s=0.0,
        count=1,
    )


def route_table(version: int) -> RouteTable:
    """Every satellite visible from the station and serving both models; the first (highest
    elevation) ranks first."""
    return build_table(
        version=version,
        computed_at=EPOCH,
        stations=[SITE],
        sightings=[
            Sighting(STATION, sat, 80.0 - 10.0 * index, 180.0, 1_000.0, 3_000.0)
            for index, sat in enumerate(SATELLITES)
        ],
        links={},
        nodes={
            sat: NodeState(sat, online=True, models=frozenset({CHAT.name, BATCH.name}))
            for sat in SATELLITES
        },
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
    )


class FakeRouting(routing_pb2_grpc.RoutingServiceServicer):
    """``WatchRouteTable`` streams the table last handed to :meth:`publish` (none before)."""

    def __init__(self) -> None:
        self._table: routing_pb2.RouteTable | None = None
        self._changed = asyncio.Event()
        self.watchers = 0
        self.refusing = False
        """While set, every table stream (open or new) fails UNAVAILABLE; health is untouched."""

    def publish(self, table: RouteTable) -> None:
        self._table = table_to_proto(table)
        self._wake()

    def refuse_streams(self, refusing: bool) -> None:
        self.refusing = refusing
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def WatchRouteTable(
        self,
        request: routing_pb2.WatchRouteTableRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[routing_pb2.WatchRouteTableResponse]:
        self.watchers += 1
        sent: routing_pb2.RouteTable | None = None
        while True:
            changed = self._changed
            if self.refusing:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "table streams refused")
            if self._table is not None and self._table is not sent:
                sent = self._table
                yield routing_pb2.WatchRouteTableResponse(table=sent)
            await changed.wait()

    async def Route(
        self, request: routing_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> routing_pb2.RouteResponse:
        raise Unimplemented("the gateway decides on the streamed table")

    async def GetRoutingPolicy(
        self,
        request: routing_pb2.GetRoutingPolicyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> routing_pb2.GetRoutingPolicyResponse:
        raise Unimplemented("the gateway does not read the policy")

    async def SetRoutingPolicy(
        self,
        request: routing_pb2.SetRoutingPolicyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> routing_pb2.SetRoutingPolicyResponse:
        raise Unimplemented("the gateway does not set the policy")


class Unimplemented(AssertionError):
    """A RoutingService method the gateway must not call (INTERNAL if it does)."""


async def serve_routing(routing: FakeRouting, address: str = "127.0.0.1:0") -> GrpcServer:
    server = GrpcServer(
        [
            ServiceBinding(
                ROUTING,
                lambda s: routing_pb2_grpc.add_RoutingServiceServicer_to_server(routing, s),
            )
        ],
        address=address,
        drain_grace_s=0.1,
        unready_delay_s=0.0,
    )
    await server.start()
    return server


def serve_gateway(tmp_path: Path, *args: str) -> AbstractAsyncContextManager[Served]:
    """``groundplane serve gateway ARGS`` until its ``gateway serving on`` line; killed if the
    test leaves it running."""
    return serve(
        "gateway",
        "--port",
        "0",
        "--unready-delay",
        str(UNREADY_DELAY_S),
        "--drain-grace",
        str(DRAIN_GRACE_S),
        "--log-format",
        "json",
        *args,
        stderr_path=tmp_path / "gateway-stderr.log",
        start_timeout_s=START_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("GROUNDPLANE_")},
    )


@dataclass
class World:
    system: System
    routing: FakeRouting
    routing_server: GrpcServer
    handoff_target: str
    clock_spec: ClockSpec

    def gateway_args(self) -> list[str]:
        return [
            "--routing",
            self.routing_server.target,
            "--handoff",
            self.handoff_target,
            "--broker",
            self.system.broker.url,
            "--clock",
            str(self.clock_spec),
            "--instance-id",
            "gw-proc",
        ]


@pytest.fixture
async def world(make_system: SystemFactory) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        system = await stack.enter_async_context(make_system(all_in_view(), speed=1.0))
        manager = await system.start_manager("handoff-for-gateway")
        handoff_server = GrpcServer(
            [HandoffServicer(manager, system.clock).binding()],
            drain_grace_s=0.2,
            unready_delay_s=0.0,
        )
        await handoff_server.start()
        stack.push_async_callback(handoff_server.stop)
        routing = FakeRouting()
        routing_server = await serve_routing(routing)
        stack.push_async_callback(routing_server.stop)
        # The child's clock stands where the test's stands now, on the same time line.
        spec = ClockSpec.starting_now(system.clock.now(), system.clock.speed)
        yield World(system, routing, routing_server, handoff_server.target, spec)


async def readiness(stub: health_pb2_grpc.HealthStub) -> int:
    reply = await stub.Check(
        health_pb2.HealthCheckRequest(service="readiness"), timeout=CALL_TIMEOUT_S
    )
    status: int = reply.status
    return status


async def wait_readiness(stub: health_pb2_grpc.HealthStub, wanted: int, timeout_s: float) -> float:
    """Wall seconds until readiness streams ``wanted`` (health Watch), within ``timeout_s``."""
    started = time.monotonic()
    call = stub.Watch(health_pb2.HealthCheckRequest(service="readiness"), timeout=timeout_s)
    try:
        async for reply in call:
            if reply.status == wanted:
                return time.monotonic() - started
    finally:
        call.cancel()
    raise AssertionError(f"readiness never became {wanted}")


def infer(prompt: str, **fields: Any) -> pb.InferRequest:
    return pb.InferRequest(
        model=CHAT.name,
        prompt=prompt,
        location=pb.UserLocation(lat_deg=USER[0], lon_deg=USER[1]),
        max_tokens=MAX_TOKENS,
        **fields,
    )


BEARER = (("authorization", f"Bearer {DEFAULT_TOKEN}"),)


async def test_the_gateway_process_serves_once_it_has_a_table_and_drains_on_sigterm(
    world: World, tmp_path: Path
) -> None:
    """Started without --tenants, the child warns that the dev token is in use and serves
    liveness at once but readiness NOT_SERVING while routing has sent no table; the first table
    turns it SERVING. An Infer with the demo token is answered by the first-ranked satellite's
    node (the synthetic model's answer, one node execution); a wrong token is UNAUTHENTICATED;
    a call with a session id is a turn through the handoff service, answered by a node too.
    --metrics-port serves the gateway's metrics (the answered call counted).
    SIGTERM: readiness NOT_SERVING, exit 0 within the unready delay and the drain grace."""
    system = world.system
    async with (
        serve_gateway(tmp_path, *world.gateway_args(), "--metrics-port", "0") as child,
        grpc.aio.insecure_channel(child.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        liveness = await health.Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=CALL_TIMEOUT_S
        )
        assert liveness.status == SERVING
        assert await readiness(health) == NOT_SERVING
        world.routing.publish(route_table(1))
        await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
        service = await health.Check(
            health_pb2.HealthCheckRequest(service=GATEWAY), timeout=CALL_TIMEOUT_S
        )
        assert service.status == SERVING

        stub = pb_grpc.InferenceServiceStub(channel)
        reply = await stub.Infer(infer("hello from a child"), metadata=BEARER, timeout=10.0)
        assert reply.text == predict_answer(CHAT, (), "hello from a child", MAX_TOKENS).text
        assert (reply.satellite_id, reply.station_id) == (SATELLITES[0], STATION)
        assert [sat for sat, _ in system.executions] == [SATELLITES[0]]
        metrics = await samples(child.logged("gateway_metrics_serving")["url"])
        ok = {"tenant": "demo", "outcome": "OK"}
        assert sample(metrics, "groundplane_gateway_requests_total", **ok) == 1

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Infer(
                infer("let me in"),
                metadata=(("authorization", "Bearer not-the-demo-token-0000"),),
                timeout=CALL_TIMEOUT_S,
            )
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert len(system.executions) == 1

        turn = await stub.Infer(
            infer("a turn of a conversation", session_id="chat-1"),
            metadata=BEARER,
            timeout=CALL_TIMEOUT_S,
        )
        assert turn.text == predict_answer(CHAT, (), "a turn of a conversation", MAX_TOKENS).text
        session = system.manager.get_session("demo:chat-1")
        assert (session.turns, session.satellite_id) == (1, turn.satellite_id)

        watch = health.Watch(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=CALL_TIMEOUT_S
        )
        assert (await watch.read()).status == SERVING
        stopped_at = time.monotonic()
        child.process.send_signal(signal.SIGTERM)
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
        async with asyncio.timeout(UNREADY_DELAY_S + DRAIN_GRACE_S + EXIT_SLACK_S):
            status = await child.process.wait()
        assert status == 0, child.stderr()[-3000:]
        assert time.monotonic() - stopped_at <= UNREADY_DELAY_S + DRAIN_GRACE_S + EXIT_SLACK_S
    assert "dev token" in child.stderr()


async def test_the_gateway_process_is_unready_while_routing_or_the_broker_is_away(
    world: World, tmp_path: Path
) -> None:
    """With a table and routing gone (its server stopped), the child keeps serving for the
    feed's grace and then turns NOT_SERVING; routing back on the same address makes it SERVING
    again once the reopened table stream delivered a table (the new server has a watcher). The
    broker killed: NOT_SERVING; the broker back: SERVING once the gateway has reconnected.
    Tenants come from a --tenants file: its token is accepted,
    the demo token is not, and no dev-token warning is printed."""
    tenants = tmp_path / "tenants.json"
    token = "alpha-token-0123456789"
    tenants.write_text(json.dumps({"alpha": {"tokens": [token], "max_concurrent": 2}}))
    world.routing.publish(route_table(1))
    async with (
        serve_gateway(tmp_path, *world.gateway_args(), "--tenants", str(tenants)) as child,
        grpc.aio.insecure_channel(child.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
        stub = pb_grpc.InferenceServiceStub(channel)
        reply = await stub.Infer(
            infer("tenant from a file"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_TIMEOUT_S,
        )
        assert reply.satellite_id == SATELLITES[0]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Infer(infer("demo?"), metadata=BEARER, timeout=CALL_TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

        address = world.routing_server.target
        await world.routing_server.stop()
        lost_after_s = await wait_readiness(health, NOT_SERVING, FEED_LOSS_S + CALL_TIMEOUT_S)
        assert lost_after_s >= FEED_LOSS_S - 0.5

        routing = FakeRouting()
        routing.publish(route_table(2))
        back = await serve_routing(routing, address)
        try:
            # SERVING again only once a reopened stream delivered a table from the new server.
            await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
            assert routing.watchers >= 1

            await world.system.broker.kill()
            await wait_readiness(health, NOT_SERVING, CALL_TIMEOUT_S)
            await world.system.broker.start()
            await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
        finally:
            await back.stop()
        child.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(UNREADY_DELAY_S + DRAIN_GRACE_S + EXIT_SLACK_S):
            assert await child.process.wait() == 0
    assert "dev token" not in child.stderr()


async def test_the_gateway_process_is_unready_while_routing_answers_health_but_streams_no_table(
    world: World, tmp_path: Path
) -> None:
    """Routing's server stays up (health SERVING) but its table streams fail: the gateway's
    readiness follows the stream, not routing's health. NOT_SERVING once the stream has been
    lost for the feed's grace; SERVING again once a stream delivers a table."""
    world.routing.publish(route_table(1))
    async with (
        serve_gateway(tmp_path, *world.gateway_args()) as child,
        grpc.aio.insecure_channel(child.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
        world.routing.refuse_streams(True)
        lost_after_s = await wait_readiness(health, NOT_SERVING, FEED_LOSS_S + CALL_TIMEOUT_S)
        assert lost_after_s >= FEED_LOSS_S - 0.5
        watchers = world.routing.watchers
        world.routing.refuse_streams(False)
        await wait_readiness(health, SERVING, CALL_TIMEOUT_S)
        assert world.routing.watchers > watchers
        child.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(UNREADY_DELAY_S + DRAIN_GRACE_S + EXIT_SLACK_S):
            assert await child.process.wait() == 0
