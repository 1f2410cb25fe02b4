"""OpenTelemetry tracing of one groundplane process: off by default, OTLP or console when asked.

Every ``groundplane serve SERVICE`` process (``cli/process.py`` ``run_service``) calls
:func:`configured` with its options: ``--otlp-endpoint URL`` (or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) exports spans over
OTLP/gRPC in batches, ``--trace-console`` prints each span as JSON on stdout. With neither the
process installs nothing: no tracer provider, no gRPC interceptor, and every helper here returns
at its first line (:func:`enabled` is one global read), so the request path pays a function
call, no span object.

When tracing is on, the gRPC servers (:func:`grpc_server_interceptors`, which
:class:`~groundplane.kernel.serving.GrpcServer` adds) and channels (the instrumentor patches
``grpc.aio.insecure_channel``) the process creates from then on are instrumented
(``opentelemetry-instrumentation-grpc``'s grpc.aio interceptors; health and reflection calls are
left out), so a call's trace context crosses every gRPC hop in its metadata. Across MQTT (the
space link) the W3C ``traceparent`` travels as an MQTT v5 user property of the PUBLISH:
:func:`mqtt_properties` makes it on the sending side, :func:`remote_context` reads it back on the
receiving side; the link emulator forwards a message's user properties unchanged.

Services name their spans with their own instrumentation scope (:func:`span`,
:func:`start_span`: ``groundplane.gateway``, ``groundplane.node``, …), so one request's trace
reads gateway → routing decision → attempt → node even when every service runs in one process.

The provider is this module's own, not the OpenTelemetry API's global one, so a test (or two
systems in one process) can configure and close tracing again: :func:`configured` with
``exporters=[InMemorySpanExporter()]`` collects spans in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from groundplane.kernel.errors import InvalidArgument

if TYPE_CHECKING:
    # The SDK is imported only by a process that traces (configured()), the API always.
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "OTLP_ENDPOINT_ENV",
    "TRACEPARENT",
    "Tracing",
    "configured",
    "enabled",
    "end",
    "grpc_server_interceptors",
    "mqtt_properties",
    "remote_context",
    "span",
    "start_span",
    "trace_id",
    "traceparent",
    "within",
]

TRACEPARENT = "traceparent"
"""The W3C trace-context field, also the MQTT v5 user property's name."""
OTLP_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables naming the OTLP collector (the traces-specific one first)."""
FLUSH_TIMEOUT_MS = 3000
"""Most a closing process waits for its last spans to be exported."""

_T = TypeVar("_T")
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
"""What :func:`span` returns when tracing is off (reusable: it holds no state)."""


@dataclass
class Tracing:
    """Tracing as one process configured it (see :func:`configured`)."""

    service_name: str
    provider: TracerProvider
    tracers: dict[str, trace.Tracer] = field(default_factory=dict)
    instrumentors: list[Any] = field(default_factory=list)

    def tracer(self, scope: str) -> trace.Tracer:
        tracer = self.tracers.get(scope)
        if tracer is None:
            tracer = self.tracers[scope] = self.provider.get_tracer(scope)
        return tracer


_current: Tracing | None = None


def enabled() -> bool:
    """Whether this process traces (a provider is configured)."""
    return _current is not None


def otlp_endpoint_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The collector the standard OpenTelemetry variables name, if any."""
    for name in OTLP_ENDPOINT_ENV:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def _console_exporter() -> SpanExporter:
    """Each finished span as one JSON line on stdout (the SDK's own formatter)."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

    def one_line(span: ReadableSpan) -> str:
        return json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n"

    return ConsoleSpanExporter(out=sys.stdout, formatter=one_line)


def _otlp_exporter(endpoint: str) -> SpanExporter:
    if "://" not in endpoint:
        raise InvalidArgument(
            f"the OTLP endpoint must be a URL such as http://127.0.0.1:4317, got {endpoint!r}"
        )
    # Imported here: the exporter pulls in its generated protos, which a process that does not
    # export never needs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))


def _grpc_filter() -> Any:
    """Health checks and reflection (services ``grpc.*``) are not traced."""
    from opentelemetry.instrumentation.grpc import filters  # noqa: PLC0415 - only when tracing

    return filters.negate(filters.service_prefix("grpc."))


def _instrument_grpc_clients(provider: TracerProvider) -> list[Any]:
    """The grpc.aio client interceptors on every channel made from now on."""
    from opentelemetry.instrumentation.grpc import (  # noqa: PLC0415 - only when tracing
        GrpcAioInstrumentorClient,
    )

    # The instrumentation package ships no type hints.
    client = GrpcAioInstrumentorClient(filter_=_grpc_filter())  # type: ignore[no-untyped-call]
    client.instrument(tracer_provider=provider)
    return [client]


def grpc_server_interceptors() -> list[Any]:
    """The server interceptor that makes a span of each call (continuing the caller's trace
    from its metadata); empty when tracing is off. :class:`~groundplane.kernel.serving.GrpcServer`
    puts it inside its error mapping, so it sees the servicer's own async generators (the
    instrumentation's stream wrapper needs one, not a coroutine that writes to the context)."""
    state = _current
    if state is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    # The instrumentation package ships no type hints.
    interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=state.provider, filter_=_grpc_filter()
    )
    return [interceptor]


@contextlib.contextmanager
def configured(  # noqa: PLR0913 - each way to export is a keyword, all optional
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    console: bool = False,
    exporters: Sequence[SpanExporter] = (),
    always: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> Iterator[Tracing | None]:
    """Tracing for this process while the block runs (None, and nothing installed, when off).

    On when ``otlp_endpoint`` (else the standard variables in ``environ``) names a collector,
    when ``console`` is set, when ``exporters`` are given (tests: an in-memory exporter, spans
    exported as they end) or when ``always`` is set (spans and trace ids exist but go nowhere:
    ``up --trace`` records each request's trace id). Leaving the block exports what is left
    (at most :data:`FLUSH_TIMEOUT_MS`), removes the gRPC instrumentation and turns tracing off.
    """
    global _current  # noqa: PLW0603 - one tracing set-up per process, like its log set-up
    endpoint = otlp_endpoint or otlp_endpoint_from_env(environ)
    if not (endpoint or console or exporters or always):
        yield None
        return
    if _current is not None:
        raise RuntimeError(
            f"tracing is already configured for {_current.service_name!r} in this process"
        )
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415 - when on
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(_console_exporter()))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    state = Tracing(service_name, provider)
    state.instrumentors = _instrument_grpc_clients(provider)
    _current = state
    try:
        yield state
    finally:
        _current = None
        for instrumentor in state.instrumentors:
            instrumentor.uninstrument()
        provider.force_flush(FLUSH_TIMEOUT_MS)
        provider.shutdown()


# -- spans -----------------------------------------------------------------------------------


def span(
    scope: str, name: str, attributes: Mapping[str, str | int | float | bool] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (nothing when tracing is off: the block gets None).

    Use it only around code that does not ``yield`` to a caller: the context it attaches must be
    detached by the same task step that runs the block."""
    state = _current
    if state is None:
        return _NO_SPAN
    return state.tracer(scope).start_as_current_span(name, attributes=attributes)


def start_span(
    scope: str,
    name: str,
    *,
    parent: Context | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Span | None:
    """A started span, not made current (None when tracing is off): a child of ``parent``, else
    of the current span. End it with :func:`end`, or run work inside it with :func:`within`."""
    state = _current
    if state is None:
        return None
    return state.tracer(scope).start_span(name, context=parent, attributes=attributes)


def end(span_: Span | None, error: BaseException | None = None) -> None:
    """End ``span_`` (if any), marked as failed with ``error`` when given."""
    if span_ is None:
        return
    if error is not None:
        span_.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span_.end()


async def _inside(span_: Span, work: Awaitable[_T]) -> _T:
    with trace.use_span(span_, end_on_exit=True):
        return await work


def within(span_: Span | None, work: Awaitable[_T]) -> Awaitable[_T]:
    """``work`` run with ``span_`` current and ending it when done (``work`` itself when
    ``span_`` is None). Meant for the awaitable a task is created from."""
    if span_ is None:
        return work
    return _inside(span_, work)


def traceparent(span_: Span | None = None) -> str:
    """The W3C ``traceparent`` of ``span_`` (the current span when not given); empty when there
    is none or tracing is off."""
    if _current is None:
        return ""
    context = (span_ or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def trace_id(span_: Span | None = None) -> str:
    """The 32-hex-digit trace id of ``span_`` (or the current span); empty when none."""
    if _current is None:
        return ""
    context = (span_ or trace.get_current_span()).get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


# -- MQTT v5 user properties -------------------------------------------------------------------


def mqtt_properties(parent: str = "") -> tuple[tuple[str, str], ...]:
    """The user properties that carry a trace across MQTT: ``parent`` (a ``traceparent``), else
    the current span's; ``()`` when tracing is off or there is nothing to carry."""
    if _current is None:
        return ()
    if not parent:
        parent = traceparent()
        if not parent:
            return ()
    return ((TRACEPARENT, parent),)


def remote_context(
    user_properties: Iterable[tuple[str, str]], fallback_traceparent: str = ""
) -> Context | None:
    """The trace context a received message carries in its ``traceparent`` user property (else
    ``fallback_traceparent``, e.g. the envelope's field); None when tracing is off or there is
    none (a span started with ``parent=None`` then starts a new trace)."""
    if _current is None:
        return None
    carrier = {key: value for key, value in user_properties if key == TRACEPARENT}
    if not carrier and fallback_traceparent:
        carrier[TRACEPARENT] = fallback_traceparent
    if not carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None
