"""One inference request is one OpenTelemetry trace: from the caller through the gateway, its
routing decision and attempt, across the space link (the traceparent in an MQTT v5 user
property) to the node, and, for a session turn, through the handoff service's gRPC.

The whole in-process system (``GroundplaneSystem``: tracking, link emulator, nodes shard,
routing, handoff and gateway on a real Mosquitto and loopback gRPC) runs with tracing on and an
in-memory exporter; the spans are read back by trace id."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind

from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel import tracing
from groundplane.kernel.clock import SimulatedClock
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_MODEL, DEFAULT_TOKEN, default_stations, default_users
from groundplane.system.system import GroundplaneSystem, SystemConfig

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
CALL_TIMEOUT_S = 20.0
NODE = "node.infer"
SPANS_S = 5.0
"""Wall seconds the spans of an answered request may take to end (the node's span ends after
its last reply is published, which may be after the gateway answered)."""


def _in_trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _span_id(span: ReadableSpan | Span) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def _names(spans: Sequence[ReadableSpan]) -> set[str]:
    return {s.name for s in spans}


async def _spans_of(
    exporter: InMemorySpanExporter, trace_id: int, wanted: set[str]
) -> list[ReadableSpan]:
    """The finished spans of ``trace_id`` once every name in ``wanted`` has ended."""
    async with asyncio.timeout(SPANS_S):
        while True:  # the exporter has no event to wait on
            spans = _in_trace(exporter.get_finished_spans(), trace_id)
            if wanted <= _names(spans):
                return spans
            await asyncio.sleep(0.05)


async def test_one_request_is_one_trace_from_the_gateway_through_routing_to_the_node(
    tmp_path: Path,
) -> None:
    """A stateless Infer made under a caller's span: the gateway's server span, its
    ``routing.decide`` and ``gateway.attempt`` spans and the node's ``node.infer`` span (in the
    nodes shard, reached over MQTT through the link emulator) all carry the caller's trace id,
    each the child of the one before; the node's span names the satellite that answered. A
    streamed call (InferStream) is traced the same way. A session turn's trace reaches the
    handoff service's ``SendTurn`` server span and, through the handoff manager's own requester,
    the node. An HTTP chat completion carrying a ``traceparent`` header is traced the same way
    from the front door's span. The load's requests each record their own trace id, continued
    by the gateway. With tracing closed again nothing is recorded."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    exporter = InMemorySpanExporter()
    stations = default_stations()
    config = SystemConfig(
        elements=generate("walker:48/8/1@550km:53", EPOCH),
        stations=stations,
        users=default_users(),
        rate_rps=4.0,
        workdir=tmp_path / "broker",
        handoff_dir=tmp_path / "handoff",
        gateway_http_port=0,
    )
    auth = (("authorization", f"Bearer {DEFAULT_TOKEN}"),)
    with tracing.configured("groundplane-test", exporters=[exporter]):
        system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=5.0))
        async with asyncio.timeout(90), asyncio.TaskGroup() as group:
            running = group.create_task(system.run(), name="system-under-test")
            await system.wait_ready()
            async with asyncio.timeout(30):
                while not system.links_up:  # noqa: ASYNC110 - routing's view, no event
                    await asyncio.sleep(0.1)
            station_id, _ = sorted(system.links_up)[0]
            site = next(s for s in stations if s.id == station_id)
            location = pb.UserLocation(lat_deg=site.lat_deg, lon_deg=site.lon_deg)
            async with grpc.aio.insecure_channel(system.gateway_target) as channel:
                stub = pb_grpc.InferenceServiceStub(channel)
                with tracing.span("tests", "user.request") as caller:
                    assert caller is not None
                    reply = await stub.Infer(
                        pb.InferRequest(
                            model=DEFAULT_MODEL.name,
                            prompt="trace me",
                            location=location,
                            max_tokens=8,
                            wait_for_coverage=True,
                        ),
                        metadata=auth,
                        timeout=CALL_TIMEOUT_S,
                    )
                trace_id = caller.get_span_context().trace_id
                with tracing.span("tests", "user.turn") as turn_caller:
                    assert turn_caller is not None
                    await stub.Infer(
                        pb.InferRequest(
                            model=DEFAULT_MODEL.name,
                            prompt="a turn",
                            location=location,
                            max_tokens=8,
                            session_id="traced-session",
                            wait_for_coverage=True,
                        ),
                        metadata=auth,
                        timeout=CALL_TIMEOUT_S,
                    )
                turn_trace_id = turn_caller.get_span_context().trace_id
                with tracing.span("tests", "user.stream") as stream_caller:
                    assert stream_caller is not None
                    streamed = stub.InferStream(
                        pb.InferStreamRequest(
                            model=DEFAULT_MODEL.name,
                            prompt="stream me",
                            location=location,
                            max_tokens=8,
                            wait_for_coverage=True,
                        ),
                        metadata=auth,
                        timeout=CALL_TIMEOUT_S,
                    )
                    pieces = [response async for response in streamed]
                assert pieces[-1].HasField("summary")
                stream_trace_id = stream_caller.get_span_context().trace_id
            base_url = system.gateway_http_url
            assert base_url is not None
            async with httpx.AsyncClient(base_url=base_url, timeout=CALL_TIMEOUT_S) as http:
                with tracing.span("tests", "user.http") as http_caller:
                    assert http_caller is not None
                    answered = await http.post(
                        "/chat/completions",
                        json={
                            "model": DEFAULT_MODEL.name,
                            "messages": [{"role": "user", "content": "over http"}],
                            "max_tokens": 8,
                        },
                        headers={
                            "authorization": f"Bearer {DEFAULT_TOKEN}",
                            "x-groundplane-location": f"{site.lat_deg},{site.lon_deg}",
                            tracing.TRACEPARENT: tracing.traceparent(http_caller),
                        },
                    )
                assert answered.status_code == 200, answered.text
                http_trace_id = http_caller.get_span_context().trace_id
            spans = await _spans_of(exporter, trace_id, {"routing.decide", "gateway.attempt", NODE})
            turn_spans = await _spans_of(
                exporter,
                turn_trace_id,
                {"/groundplane.handoff.v1.HandoffService/SendTurn", NODE},
            )
            stream_spans = await _spans_of(
                exporter,
                stream_trace_id,
                {"/groundplane.gateway.v1.InferenceService/InferStream", "gateway.attempt", NODE},
            )
            http_spans = await _spans_of(
                exporter, http_trace_id, {"POST /v1/chat/completions", "gateway.attempt", NODE}
            )
            system.stop()
            await running
    infer = "/groundplane.gateway.v1.InferenceService/Infer"
    by_name = {s.name: s for s in spans if s.kind is not SpanKind.CLIENT}
    server = by_name[infer]
    decide, attempt, node = (
        by_name[n] for n in ("routing.decide", "gateway.attempt", "node.infer")
    )
    (client,) = (s for s in spans if s.kind is SpanKind.CLIENT and s.name == infer)
    for child, parent in ((client, caller), (server, client), (decide, server), (attempt, server)):
        assert child.parent is not None
        assert child.parent.span_id == _span_id(parent)
    assert node.parent is not None
    assert node.parent.span_id == _span_id(attempt)  # across MQTT and the link
    assert server.kind is SpanKind.SERVER
    assert node.attributes is not None
    assert attempt.attributes is not None
    assert node.attributes["groundplane.satellite_id"] == reply.satellite_id
    assert attempt.attributes["groundplane.satellite_id"] == reply.satellite_id
    scopes = {s.instrumentation_scope.name for s in spans if s.instrumentation_scope is not None}
    assert {"groundplane.gateway", "groundplane.node"} <= scopes
    # The load's requests (what `up --trace` writes): each record names its own trace, which
    # the gateway's server span continues.
    records = system.stats.trace
    assert records
    served_traces = {
        s.context.trace_id
        for s in exporter.get_finished_spans()
        if s.name == infer and s.kind is SpanKind.SERVER and s.context is not None
    }
    for record in records:
        assert len(record.trace_id) == 32
        assert int(record.trace_id, 16) in served_traces, record
    assert len({r.trace_id for r in records}) == len(records)
    assert "routing.decide" in _names(stream_spans)
    # The HTTP front door continues the caller's traceparent header: its span is the caller's
    # child and the attempt's parent, and the node's span is in the same trace.
    http_by_name = {s.name: s for s in http_spans}
    http_server = http_by_name["POST /v1/chat/completions"]
    assert http_server.parent is not None
    assert http_server.parent.span_id == _span_id(http_caller)
    http_attempt = http_by_name["gateway.attempt"]
    assert http_attempt.parent is not None
    assert http_attempt.parent.span_id == _span_id(http_server)
    assert http_server.attributes is not None
    assert http_server.attributes["http.response.status_code"] == 200
    turn_names = _names(turn_spans)
    assert infer in turn_names
    print(f"request trace: {sorted(_names(spans))}\nturn trace: {sorted(turn_names)}")
    exporter.clear()
    assert not tracing.enabled()
    assert tracing.mqtt_properties() == ()
    with tracing.span("tests", "after") as after:
        assert after is None
    assert exporter.get_finished_spans() == ()
