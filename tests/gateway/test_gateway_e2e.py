"""The gateway end to end: gRPC on loopback → route table → MQTT → link emulator → node agents."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from groundplane.gateway.servicer import NEXT_OPPORTUNITY_KEY, RETRY_AFTER_KEY, STATUS_DETAILS_KEY
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.kernel.clock import format_utc
from groundplane.node.backends import predict_answer

from ..scrape import get, sample, samples
from .conftest import (
    EPOCH,
    FAST,
    FIRST,
    SECOND,
    SLOW,
    STATION,
    USER,
    GatewaySystem,
    route_table,
)

MAX_TOKENS = 64
DEADLINE_SLACK_S = 0.25
"""How late past its deadline a refused call may come back (scheduling on a shared machine)."""


def request(prompt: str, model: str = FAST.name, **fields: Any) -> pb.InferRequest:
    return pb.InferRequest(
        model=model,
        prompt=prompt,
        location=pb.UserLocation(lat_deg=USER[0], lon_deg=USER[1]),
        max_tokens=MAX_TOKENS,
        **fields,
    )


def stream_request(prompt: str, model: str = SLOW.name) -> pb.InferStreamRequest:
    return pb.InferStreamRequest(
        model=model,
        prompt=prompt,
        location=pb.UserLocation(lat_deg=USER[0], lon_deg=USER[1]),
        max_tokens=MAX_TOKENS,
    )


def trailing(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    pairs: Any = error.trailing_metadata() or ()
    return {str(key): value for key, value in pairs}


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    status = status_pb2.Status()
    status.ParseFromString(trailing(error)[STATUS_DETAILS_KEY])
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    return float(info.retry_delay.ToTimedelta().total_seconds())


async def test_served_request_goes_through_a_visible_satellite(
    gateway_system: GatewaySystem,
) -> None:
    """A unary call is answered by the best satellite of the route table (highest elevation)
    through the station's link: the text is the synthetic model's answer, one attempt, and the
    metrics count one OK call for the tenant."""
    system = gateway_system
    url = f"http://127.0.0.1:{system.app.metrics_port}/metrics"
    before = await samples(url)
    reply = await system.stub.Infer(request("hello orbit"), metadata=system.auth(), timeout=5.0)
    expected = predict_answer(FAST, (), "hello orbit", MAX_TOKENS)
    assert reply.text == expected.text
    assert tuple(reply.tokens) == expected.pieces
    assert (reply.satellite_id, reply.station_id) == (FIRST, STATION.station_id)
    assert reply.attempts == 1
    assert system.executions() == 1
    after = await samples(url)
    ok = {"tenant": "alpha", "outcome": "OK"}
    assert sample(before, "groundplane_gateway_requests_total", **ok) == 0
    assert sample(after, "groundplane_gateway_requests_total", **ok) == 1
    assert sample(after, "groundplane_gateway_attempts_sum", tenant="alpha") == 1
    duration = {"tenant": "alpha", "method": "infer"}
    assert sample(after, "groundplane_gateway_request_duration_seconds_count", **duration) == 1
    assert sample(after, "groundplane_gateway_requests_in_flight", tenant="alpha") == 0


async def test_unary_answer_crosses_the_link_whole_and_a_stream_in_chunks(
    gateway_system: GatewaySystem,
) -> None:
    """A unary call asks the node for the answer whole: two link messages in all (the request
    up, one InferResult down), and the reply's tokens are still the model's pieces. A streaming
    call of the same answer gets its pieces in InferChunks as they are made (the slow model makes
    one every 50 ms, so several chunks go down before the result)."""
    system = gateway_system
    assert system.emulator is not None
    reply = await system.stub.Infer(
        request("whole, please", model=SLOW.name), metadata=system.auth(), timeout=5.0
    )
    expected = predict_answer(SLOW, (), "whole, please", MAX_TOKENS)
    assert tuple(reply.tokens) == expected.pieces
    unary = system.emulator.traffic()
    assert (unary.sent_messages, unary.delivered_messages) == (2, 2)
    call = system.stub.InferStream(
        stream_request("streamed, please"), metadata=system.auth(), timeout=5.0
    )
    tokens = [event.token.text async for event in call if event.HasField("token")]
    assert tokens == list(predict_answer(SLOW, (), "streamed, please", MAX_TOKENS).pieces)
    streamed = system.emulator.traffic().delivered_messages - unary.delivered_messages
    assert streamed > 3  # the request, the result and more than one chunk


async def test_every_gateway_subscription_goes_out_in_the_first_connects_one_request(
    gateway_system: GatewaySystem,
) -> None:
    """The node directory's, the link watch's and the reply filters are registered before the
    gateway's MQTT client connects: its first connect subscribes them in one SUBSCRIBE (so one
    SUBACK precedes every retained message), and every filter is granted."""
    client = gateway_system.app.mqtt
    assert client.connections == 1
    assert client.subscribe_requests_total == 1
    assert not client.refused_subscriptions


async def test_metrics_port_answers_404_off_the_metrics_path(gateway_system: GatewaySystem) -> None:
    """The gateway's metrics port serves only ``/metrics``: another path is 404."""
    status, _, body = await get(f"http://127.0.0.1:{gateway_system.app.metrics_port}/")
    assert status == 404
    assert "/metrics" in body


async def test_missing_or_wrong_token_is_unauthenticated(gateway_system: GatewaySystem) -> None:
    """Without an authorization header, with a wrong token, or with another scheme, the call is
    refused UNAUTHENTICATED and no node runs anything."""
    system = gateway_system
    for metadata in (
        (),
        (("authorization", "Bearer not-a-real-token-000000"),),
        (("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await system.stub.Infer(request("let me in"), metadata=metadata, timeout=5.0)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert system.executions() == 0


async def test_node_killed_mid_request_fails_over_and_runs_once(
    gateway_system: GatewaySystem,
) -> None:
    """The serving node is killed while it streams the answer: the gateway sees it die, sends
    the request to the fallback satellite, skips the tokens already delivered and the caller gets
    every token exactly once, within the deadline; only one node completed the work."""
    system = gateway_system
    prompt = "survive the loss of a node"
    expected = predict_answer(SLOW, (), prompt, MAX_TOKENS)
    tokens: list[pb.InferToken] = []
    summary: pb.InferSummary | None = None
    started = asyncio.get_running_loop().time()
    call = system.stub.InferStream(stream_request(prompt), metadata=system.auth(), timeout=8.0)
    async for event in call:
        if event.HasField("token"):
            tokens.append(event.token)
            if len(tokens) == 3:
                system.kill(event.token.satellite_id)
        else:
            summary = event.summary
    elapsed_s = asyncio.get_running_loop().time() - started
    assert summary is not None
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert "".join(t.text for t in tokens) == expected.text
    assert {t.satellite_id for t in tokens[:3]} == {FIRST}
    assert tokens[-1].satellite_id == SECOND == summary.satellite_id
    assert summary.attempts == 2
    assert summary.output_tokens == len(tokens)
    assert system.executions() == 1
    assert system.engines[SECOND].load().executed_total == 1
    assert elapsed_s < 8.0


async def test_link_drop_mid_stream_continues_without_duplicate_or_gap(
    gateway_system: GatewaySystem,
) -> None:
    """The serving satellite's link goes down mid-answer (the node keeps running but its
    replies are lost): the gateway learns it from the link state, continues on the fallback and
    the caller's tokens, concatenated, are exactly the full answer with consecutive indexes."""
    system = gateway_system
    prompt = "keep talking while the sky changes"
    expected = predict_answer(SLOW, (), prompt, MAX_TOKENS)
    tokens: list[pb.InferToken] = []
    summary: pb.InferSummary | None = None
    call = system.stub.InferStream(stream_request(prompt), metadata=system.auth(), timeout=8.0)
    async for event in call:
        if event.HasField("token"):
            tokens.append(event.token)
            if len(tokens) == 4:
                system.drop_link(event.token.satellite_id)
        else:
            summary = event.summary
    assert summary is not None
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert "".join(t.text for t in tokens) == expected.text
    assert len(tokens) == len(expected.pieces)
    assert summary.satellite_id == SECOND
    assert summary.attempts == 2


async def test_no_reachable_satellite_is_unavailable_with_next_aos(
    gateway_system: GatewaySystem,
) -> None:
    """With nothing visible the call fails UNAVAILABLE at once, carrying the next pass's AOS in
    trailing metadata (ISO-8601) and as a RetryInfo delay of about the time until it."""
    system = gateway_system
    aos_in_s = 600.0
    system.tables.publish(route_table(2, visible=False, aos_in_s=aos_in_s))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.stub.Infer(request("anyone up there?"), metadata=system.auth(), timeout=5.0)
    error = refused.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert trailing(error)[NEXT_OPPORTUNITY_KEY] == format_utc(EPOCH + timedelta(seconds=aos_in_s))
    elapsed_s = (system.clock.now() - EPOCH).total_seconds()
    assert retry_delay_s(error) == pytest.approx(aos_in_s - elapsed_s, abs=1.0)
    assert system.executions() == 0


async def test_wait_for_coverage_waits_for_the_next_table_within_the_deadline(
    gateway_system: GatewaySystem,
) -> None:
    """A call that asks to wait for coverage is held while nothing is visible and served as soon
    as a table with a visible satellite arrives; a pass beyond the deadline fails at once."""
    system = gateway_system
    system.tables.publish(route_table(2, visible=False, aos_in_s=600.0))
    with pytest.raises(grpc.aio.AioRpcError) as too_far:
        await system.stub.Infer(
            request("wait for me", wait_for_coverage=True), metadata=system.auth(), timeout=2.0
        )
    assert too_far.value.code() == grpc.StatusCode.UNAVAILABLE
    system.tables.publish(route_table(3, visible=False, aos_in_s=1.5))
    waiting = asyncio.ensure_future(
        system.stub.Infer(
            request("wait for me", wait_for_coverage=True), metadata=system.auth(), timeout=5.0
        )
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()
    system.tables.publish(route_table(4))
    reply = await waiting
    assert reply.text == predict_answer(FAST, (), "wait for me", MAX_TOKENS).text


async def test_overload_exhausts_the_flooding_tenant_only(gateway_system: GatewaySystem) -> None:
    """Tenant beta (1 running, 1 queued) floods with 6 slow calls: 4 are refused
    RESOURCE_EXHAUSTED with a positive retry hint (metadata and RetryInfo), 2 are served, and
    tenant alpha's call made meanwhile is served normally."""
    system = gateway_system

    hints: list[tuple[float, float]] = []

    async def flood(i: int) -> grpc.StatusCode:
        try:
            await system.stub.Infer(
                request(f"flood {i}", model=SLOW.name), metadata=system.auth("beta"), timeout=5.0
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                hints.append((float(trailing(error)[RETRY_AFTER_KEY]), retry_delay_s(error)))
            return error.code()
        return grpc.StatusCode.OK

    flooding = [asyncio.ensure_future(flood(i)) for i in range(6)]
    await asyncio.sleep(0.1)
    calm = await system.stub.Infer(request("calm"), metadata=system.auth("alpha"), timeout=5.0)
    codes = await asyncio.gather(*flooding)
    assert calm.text == predict_answer(FAST, (), "calm", MAX_TOKENS).text
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
    assert codes.count(grpc.StatusCode.OK) == 2
    assert len(hints) == 4
    assert all(metadata_s > 0 and detail_s > 0 for metadata_s, detail_s in hints)


async def test_idempotency_key_executes_once(gateway_system: GatewaySystem) -> None:
    """Two concurrent calls and a later retry with the same idempotency key get the same answer
    and request id, the duplicates are marked deduplicated, and the nodes ran it once; the same
    key for a different prompt is refused INVALID_ARGUMENT."""
    system = gateway_system
    call = request("do it once", model=SLOW.name, idempotency_key="order-42")
    first, joined = await asyncio.gather(
        system.stub.Infer(call, metadata=system.auth(), timeout=5.0),
        system.stub.Infer(call, metadata=system.auth(), timeout=5.0),
    )
    later = await system.stub.Infer(call, metadata=system.auth(), timeout=5.0)
    assert first.text == joined.text == later.text
    assert first.text == predict_answer(SLOW, (), "do it once", MAX_TOKENS).text
    assert first.request_id == joined.request_id == later.request_id
    assert sorted([first.deduplicated, joined.deduplicated]) == [False, True]
    assert later.deduplicated
    assert system.executions() == 1
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await system.stub.Infer(
            request("something else", idempotency_key="order-42"),
            metadata=system.auth(),
            timeout=5.0,
        )
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_deadline_is_respected(gateway_system: GatewaySystem) -> None:
    """A call whose deadline is shorter than the answer takes comes back DEADLINE_EXCEEDED from
    the gateway's own hop deadline (caller's time minus the margin), not later than the caller's
    deadline plus scheduling slack."""
    system = gateway_system
    timeout_s = 0.4
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await system.stub.Infer(
            request("too slow", model=SLOW.name), metadata=system.auth(), timeout=timeout_s
        )
    elapsed_s = loop.time() - started
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "before its deadline" in (late.value.details() or "")
    assert elapsed_s < timeout_s + DEADLINE_SLACK_S
