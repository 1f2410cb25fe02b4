"""A ``serve`` process exports its spans over OTLP/gRPC when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector, and prints them with ``--trace-console``;
the trace a caller started (its ``traceparent`` in the gRPC metadata) continues in the process.

The collector is a real OTLP ``TraceService`` gRPC server in the test (the generated service of
``opentelemetry-proto``) that keeps what it is sent."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from groundplane.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from ..processes import serve

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
TIMEOUT_S = 20.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
METHOD = "/groundplane.tracking.v1.TrackingService/ListSites"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported request."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = asyncio.Event()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    kept = Collector()
    # The generated *_pb2_grpc module of opentelemetry-proto has no type hints.
    add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    add(kept, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield kept, port
    finally:
        await server.stop(0)


async def test_a_serve_process_exports_its_spans_over_otlp_and_to_the_console(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    """``serve tracking`` with OTEL_EXPORTER_OTLP_ENDPOINT and --trace-console: a ListSites
    call carrying a caller's traceparent becomes a server span of that trace (parent: the
    caller's span) from service ``groundplane-tracking``; by SIGTERM's exit (the last batch is
    flushed) the collector has it, and stdout has the same span as one JSON line. Health
    checks are not traced."""
    kept, port = collector
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    async with serve(
        "tracking",
        "--port",
        "0",
        "--db",
        ":memory:",
        "--trace-console",
        "--unready-delay",
        "0",
        "--log-format",
        "json",
        env=env,
        stderr_path=tmp_path / "tracking.stderr",
        start_timeout_s=START_TIMEOUT_S,
    ) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = tracking_pb2_grpc.TrackingServiceStub(channel)
            traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
            await stub.ListSites(
                tracking_pb2.ListSitesRequest(),
                metadata=(("traceparent", traceparent),),
                timeout=TIMEOUT_S,
            )
        assert served.process.stdout is not None
        await served.stop(TIMEOUT_S)
        console = (await served.process.stdout.read()).decode()
    async with asyncio.timeout(TIMEOUT_S):
        await kept.received.wait()
    exported = [
        (resource_spans.resource, span)
        for request in kept.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    names = {span.name for _, span in exported}
    assert METHOD in names
    assert not any("grpc.health" in name for name in names)
    resource, span = next((r, s) for r, s in exported if s.name == METHOD)
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "groundplane-tracking"
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    printed = [json.loads(line) for line in console.splitlines() if line.startswith("{")]
    (shown,) = (p for p in printed if p.get("name") == METHOD)
    assert shown["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert shown["resource"]["attributes"]["service.name"] == "groundplane-tracking"
