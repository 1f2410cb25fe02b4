"""The gateway's domain without a broker: deadlines, auth, admission, failover continuation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from groundplane.gateway.admission import AdmissionControl
from groundplane.gateway.auth import Tenant, TenantConfig, TenantRegistry
from groundplane.gateway.execution import Execution, InferAnswer, Token
from groundplane.gateway.service import GatewayConfig, InferCall, InferenceGateway, hop_budget
from groundplane.gateway.servicer import InferenceServicer
from groundplane.gateway.sources import LocalTableSource
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from groundplane.kernel.serving import GrpcServer
from groundplane.node.v1 import node_pb2

from .conftest import FIRST, SECOND, SLOW, USER, route_table

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
ONE_MS = 1e-3
TENANT = Tenant("alpha", max_concurrent=1, max_queued=1)


def test_hop_budget_uses_default_caps_and_subtracts_the_margin() -> None:
    """No caller deadline → the configured default; a long one is capped; the margin comes off;
    the hop deadline is in simulated seconds (speed × wall); too little time is refused."""
    clock = SimulatedClock(T0, speed=10.0, monotonic=lambda: 100.0)
    config = GatewayConfig(default_deadline_s=30.0, max_deadline_s=60.0, deadline_margin_s=0.5)
    default = hop_budget(clock, None, config)
    assert default.until_monotonic == pytest.approx(100.0 + 29.5, abs=ONE_MS)
    assert default.deadline == T0 + timedelta(seconds=295.0)
    capped = hop_budget(clock, 3600.0, config)
    assert capped.until_monotonic == pytest.approx(100.0 + 59.5, abs=ONE_MS)
    with pytest.raises(DeadlineExceeded, match="margin"):
        hop_budget(clock, 0.4, config)


def test_bearer_tokens_name_their_tenant() -> None:
    """A configured token authenticates its tenant (scheme case-insensitive); missing, wrong or
    non-bearer credentials are Unauthenticated; short tokens are refused at configuration."""
    registry = TenantRegistry([TenantConfig(TENANT, ("token-of-alpha-0001",))])
    assert registry.authenticate("Bearer token-of-alpha-0001") == TENANT
    assert registry.authenticate("bearer token-of-alpha-0001") == TENANT
    for bad in (None, "", "Bearer token-of-alpha-0002", "Basic token-of-alpha-0001"):
        with pytest.raises(Unauthenticated):
            registry.authenticate(bad)
    with pytest.raises(ValueError, match="16 characters"):
        TenantRegistry([TenantConfig(TENANT, ("short",))])


async def test_admission_bounds_each_tenant_separately() -> None:
    """With one slot and one queue place, a third concurrent call of the tenant is refused with
    a positive retry hint, the queued one runs when the slot frees, and another tenant is
    admitted meanwhile."""
    admission = AdmissionControl(SimulatedClock(T0))
    other = Tenant("beta", max_concurrent=1, max_queued=0)
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with admission.admit(TENANT, 5.0):
            order.append(name)
            await release.wait()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hold("first"), name="hold-first")
        await asyncio.sleep(0)
        tasks.create_task(hold("queued"), name="hold-queued")
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted) as refused:
            async with admission.admit(TENANT, 5.0):
                pass
        async with admission.admit(other, 0.1):
            order.append("other")
        release.set()
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0
    assert order == ["first", "other", "queued"]
    assert admission.load(TENANT.tenant_id).running == 0


class FakeCaller:
    """Answers from scripted pieces per satellite; a satellite may fail after some pieces."""

    def __init__(self, pieces: dict[str, list[str]], fail_after: dict[str, int]) -> None:
        self.pieces = pieces
        self.fail_after = fail_after
        self.calls: list[str] = []

    async def stream(
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
    ) -> AsyncIterator[node_pb2.InferChunk | node_pb2.InferResult]:
        self.calls.append(satellite_id)
        pieces = self.pieces[satellite_id]
        for index, text in enumerate(pieces):
            if index == self.fail_after.get(satellite_id):
                raise Unavailable(f"node {satellite_id} died")
            yield node_pb2.InferChunk(index=index, text=text)
            await asyncio.sleep(0)
        yield node_pb2.InferResult(text="".join(pieces), model=request.model)


def gateway(caller: FakeCaller) -> InferenceGateway:
    return InferenceGateway(
        clock=SimulatedClock(T0),
        caller=caller,
        tables=LocalTableSource(route_table(1)),
    )


CALL = InferCall(model=SLOW.name, prompt="p", lat_deg=USER[0], lon_deg=USER[1])


async def collect(gw: InferenceGateway) -> tuple[list[Token], InferAnswer]:
    tokens: list[Token] = []
    async for event in gw.stream(CALL, TENANT, 5.0):
        if isinstance(event, Token):
            tokens.append(event)
        else:
            return tokens, event
    raise AssertionError("the stream ended without an answer")


async def test_failover_continues_after_the_delivered_tokens() -> None:
    """FIRST dies after 2 of 4 pieces; SECOND answers the same request: the caller gets the four
    pieces once each, in order, with the last two from SECOND, and the answer counts 2 attempts."""
    words = ["a", " b", " c", " d"]
    caller = FakeCaller({FIRST: words, SECOND: words}, {FIRST: 2})
    tokens, answer = await collect(gateway(caller))
    assert [t.text for t in tokens] == words
    assert [t.index for t in tokens] == [0, 1, 2, 3]
    assert [t.satellite_id for t in tokens] == [FIRST, FIRST, SECOND, SECOND]
    assert (answer.text, answer.attempts, answer.satellite_id) == ("a b c d", 2, SECOND)
    assert caller.calls == [FIRST, SECOND]


async def test_a_continuation_that_differs_fails_instead_of_mixing_answers() -> None:
    """When the fallback's answer does not start with what was delivered (a lost session
    context), the call fails UNAVAILABLE rather than sending the caller a spliced answer."""
    caller = FakeCaller({FIRST: ["a", " b", " c"], SECOND: ["x", " y", " z"]}, {FIRST: 2})
    with pytest.raises(Unavailable, match="could not continue"):
        await collect(gateway(caller))


class SelfContradictingCaller(FakeCaller):
    """Streams its pieces, then a result whose text does not start with them."""

    def __init__(self, pieces: dict[str, list[str]], result_text: str) -> None:
        super().__init__(pieces, {})
        self.result_text = result_text

    async def stream(
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
    ) -> AsyncIterator[node_pb2.InferChunk | node_pb2.InferResult]:
        self.calls.append(satellite_id)
        for index, text in enumerate(self.pieces[satellite_id]):
            yield node_pb2.InferChunk(index=index, text=text)
            await asyncio.sleep(0)
        yield node_pb2.InferResult(text=self.result_text, model=request.model)


async def test_a_first_attempt_whose_result_contradicts_its_stream_is_unavailable_over_grpc() -> (
    None
):
    """The first satellite streams two tokens, then a result that does not continue them (no
    failover happened yet): the gRPC caller gets the two tokens and then UNAVAILABLE saying the
    satellite's result contradicts what it streamed and to retry, not INTERNAL; no other
    satellite is tried because tokens were already delivered."""
    caller = SelfContradictingCaller({FIRST: ["a", " b"], SECOND: ["a", " b"]}, "x y z")
    token = "token-of-alpha-0001"
    servicer = InferenceServicer(gateway(caller), TenantRegistry([TenantConfig(TENANT, (token,))]))
    server = GrpcServer([servicer.binding()], drain_grace_s=0.1, unready_delay_s=0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            call = stub.InferStream(
                pb.InferStreamRequest(
                    model=SLOW.name,
                    prompt="p",
                    location=pb.UserLocation(lat_deg=USER[0], lon_deg=USER[1]),
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5.0,
            )
            texts: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                async for event in call:
                    texts.append(event.token.text)
    finally:
        await server.stop()
    assert texts == ["a", " b"]
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failed.value.details() or ""
    assert f"{FIRST}'s result does not continue the 2 tokens it streamed" in details
    assert "retry the call" in details
    assert caller.calls == [FIRST]


async def test_every_candidate_failing_before_a_token_is_unavailable_and_counted() -> None:
    """Both satellites die before their first piece: the call is UNAVAILABLE after two attempts
    and the metrics record one UNAVAILABLE call and two attempts for the tenant."""
    caller = FakeCaller({FIRST: ["a"], SECOND: ["a"]}, {FIRST: 0, SECOND: 0})
    gw = gateway(caller)
    with pytest.raises(Unavailable, match="after 2 attempts"):
        await collect(gw)
    metrics = gw.metrics
    unavailable = {"tenant": "alpha", "outcome": "UNAVAILABLE"}
    assert metrics.value("groundplane_gateway_requests_total", **unavailable) == 1
    assert metrics.value("groundplane_gateway_attempts_sum", tenant="alpha") == 2
    assert metrics.value("groundplane_gateway_attempts_count", tenant="alpha") == 1
    assert metrics.value("groundplane_gateway_requests_in_flight", tenant="alpha") == 0


class FullCaller(FakeCaller):
    """Every node is full and hints a retry in simulated seconds."""

    async def stream(
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
    ) -> AsyncIterator[node_pb2.InferChunk | node_pb2.InferResult]:
        self.calls.append(satellite_id)
        if satellite_id:  # always: the yield below only makes this an async generator
            raise ResourceExhausted(f"{satellite_id} is full", retry_after_s=120.0)
        yield node_pb2.InferResult()


async def test_node_retry_hints_in_simulated_seconds_reach_callers_in_wall_seconds() -> None:
    """At speed 60, nodes hinting 120 simulated seconds give the caller a 2 s (wall) hint."""
    gw = InferenceGateway(
        clock=SimulatedClock(T0, speed=60.0),
        caller=FullCaller({FIRST: [], SECOND: []}, {}),
        tables=LocalTableSource(route_table(1)),
    )
    with pytest.raises(ResourceExhausted) as full:
        await collect(gw)
    assert full.value.retry_after_s == pytest.approx(2.0)


async def test_a_missing_location_or_model_is_invalid_argument_naming_what_is_served() -> None:
    """An Infer call with no location is INVALID_ARGUMENT (it was routed as if the user stood at
    0°N 0°E), and one with no model names the models the nodes serve (the hint named
    'synthetic', a model nothing serves); no node is called."""
    caller = FakeCaller({FIRST: ["a"], SECOND: ["a"]}, {})
    token = "token-of-alpha-0001"
    servicer = InferenceServicer(gateway(caller), TenantRegistry([TenantConfig(TENANT, (token,))]))
    server = GrpcServer([servicer.binding()], drain_grace_s=0.1, unready_delay_s=0)
    await server.start()
    auth = (("authorization", f"Bearer {token}"),)
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as nowhere:
                await stub.Infer(
                    pb.InferRequest(model=SLOW.name, prompt="p"), metadata=auth, timeout=5.0
                )
            assert nowhere.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "location is required" in (nowhere.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as nameless:
                await stub.Infer(
                    pb.InferRequest(
                        prompt="p", location=pb.UserLocation(lat_deg=USER[0], lon_deg=USER[1])
                    ),
                    metadata=auth,
                    timeout=5.0,
                )
            assert nameless.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = nameless.value.details() or ""
            assert "model is required" in details
            assert repr(SLOW.name) in details
            assert "synthetic" not in details
    finally:
        await server.stop()
    assert caller.calls == []


async def test_extended_tokens_reach_a_waiting_joiner_in_order_after_pushed_ones() -> None:
    """Tokens added at once with ``extend`` (a unary answer) follow the pushed ones with the
    next indexes, and a joiner already waiting on the execution gets every token, then the
    answer."""
    execution = Execution("r-1")
    execution.push("a", "sat-1")
    follower = execution.follow(timeout_s=5.0)
    assert await anext(follower) == Token(0, "a", "sat-1")
    pending = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)
    assert not pending.done()  # waiting for the next change
    execution.extend(["b", "c"], "sat-2")
    execution.extend([], "sat-2")
    answer = InferAnswer("r-1", "abc", ("a", "b", "c"), "sat-2", "gs-1", 1, "m")
    execution.finish(answer)
    events = [await asyncio.wait_for(pending, 5.0)] + [event async for event in follower]
    assert events[:2] == [Token(1, "b", "sat-2"), Token(2, "c", "sat-2")]
    assert isinstance(events[2], InferAnswer)
    assert events[2].text == "abc"
    assert execution.text == "abc"
