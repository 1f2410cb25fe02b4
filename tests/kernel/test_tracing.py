"""kernel.tracing: off unless configured, the traceparent MQTT user property both ways, and what
a mistaken set-up is told."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from groundplane.kernel import tracing
from groundplane.kernel.errors import InvalidArgument

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_by_default_installs_nothing_and_every_helper_is_inert() -> None:
    """With no endpoint, no console, no exporter and no OTEL variable, configured() yields None,
    no interceptor is made, grpc.aio.insecure_channel is the library's own, and the helpers
    return their empty answers."""
    original = grpc.aio.insecure_channel
    with tracing.configured("groundplane-test", environ={}) as state:
        assert state is None
        assert not tracing.enabled()
        assert tracing.grpc_server_interceptors() == []
        assert grpc.aio.insecure_channel is original
        with tracing.span("tests", "nothing") as span:
            assert span is None
        assert tracing.start_span("tests", "nothing") is None
        assert tracing.mqtt_properties() == ()
        assert tracing.mqtt_properties(TRACEPARENT) == ()
        assert tracing.remote_context([("traceparent", TRACEPARENT)]) is None
        assert tracing.traceparent() == tracing.trace_id() == ""


def test_the_standard_variables_name_the_collector_traces_first() -> None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT wins over OTEL_EXPORTER_OTLP_ENDPOINT; blank is unset."""
    both = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317",
    }
    assert tracing.otlp_endpoint_from_env(both) == "http://b:4317"
    assert tracing.otlp_endpoint_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317"}) == (
        "http://a:4317"
    )
    assert tracing.otlp_endpoint_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}) is None


def test_an_endpoint_that_is_not_a_url_is_refused_with_an_example() -> None:
    """An OTLP endpoint without a scheme is an InvalidArgument with a URL to copy."""
    with (
        pytest.raises(InvalidArgument, match=r"http://127\.0\.0\.1:4317"),
        tracing.configured("groundplane-test", otlp_endpoint="127.0.0.1:4317"),
    ):
        pass
    assert not tracing.enabled()


async def test_traceparent_goes_out_as_a_user_property_and_comes_back_as_the_parent() -> None:
    """On: the current span's traceparent is the one user property a publish carries; a
    received message's property (else the envelope's field) is the parent of the span started
    from it; a message without one starts a new trace; ``within`` runs work in a span and ends
    it. A second configuration in the same process is refused, naming the first."""
    exporter = InMemorySpanExporter()
    with tracing.configured("groundplane-test", exporters=[exporter], environ={}):
        with (
            pytest.raises(RuntimeError, match="groundplane-test"),
            tracing.configured("groundplane-other", always=True),
        ):
            pass
        with tracing.span("tests", "sender") as sender:
            assert sender is not None
            ((name, value),) = tracing.mqtt_properties()
            assert name == "traceparent"
            assert value == tracing.traceparent(sender)
            assert tracing.mqtt_properties(TRACEPARENT) == (("traceparent", TRACEPARENT),)
        for properties, fallback in (([(name, value), ("other", "x")], ""), ([], value)):
            child = tracing.start_span(
                "tests", "receiver", parent=tracing.remote_context(properties, fallback)
            )
            assert child is not None
            ran = await tracing.within(child, asyncio.sleep(0, result="done"))
            assert ran == "done"
        assert tracing.remote_context([("other", "x")]) is None
        assert tracing.remote_context([("traceparent", "garbage")]) is None
    spans = {
        (s.name, s.context.span_id if s.context else 0): s for s in exporter.get_finished_spans()
    }
    (sender_span,) = (s for (n, _), s in spans.items() if n == "sender")
    receivers = [s for (n, _), s in spans.items() if n == "receiver"]
    assert len(receivers) == 2
    for receiver in receivers:
        assert receiver.parent is not None
        assert sender_span.context is not None
        assert receiver.parent.span_id == sender_span.context.span_id
        assert receiver.context is not None
        assert receiver.context.trace_id == sender_span.context.trace_id
    assert not tracing.enabled()
