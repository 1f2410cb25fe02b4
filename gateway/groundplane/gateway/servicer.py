"""``groundplane.gateway.v1.InferenceService``: protobuf in, domain calls, protobuf out.

The only module of the gateway that touches the gRPC contract. It authenticates the tenant from
the ``authorization`` metadata, turns messages into :class:`InferCall`, and turns domain errors
into status codes with their trailing metadata:

* RESOURCE_EXHAUSTED: ``groundplane-retry-after-s`` (decimal seconds) and a
  ``google.rpc.RetryInfo`` detail in ``grpc-status-details-bin``;
* UNAVAILABLE with a known next opportunity: ``groundplane-next-opportunity`` (ISO-8601 UTC, as
  ``kernel.clock.format_utc`` writes it) and a ``google.rpc.RetryInfo`` with the delay until then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.execution import InferAnswer, Token
from groundplane.gateway.feed import ServedFeed, ServedRequest
from groundplane.gateway.service import InferCall, InferenceGateway
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import (
    GroundplaneError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from groundplane.kernel.serving import ServiceBinding

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
RETRY_AFTER_KEY = "groundplane-retry-after-s"
NEXT_OPPORTUNITY_KEY = "groundplane-next-opportunity"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Context = grpc.aio.ServicerContext[Any, Any]


def call_from_proto(message: pb.InferRequest | pb.InferStreamRequest) -> InferCall:
    if not message.HasField("location"):
        raise InvalidArgument(
            "location is required: expected the user's location (lat_deg, lon_deg) or their "
            "terminal's site id (terminal_site_id); a missing one is not (0, 0)"
        )
    location = message.location
    return InferCall(
        model=message.model,
        prompt=message.prompt,
        lat_deg=location.lat_deg,
        lon_deg=location.lon_deg,
        terminal_site_id=location.terminal_site_id,
        session_id=message.session_id,
        idempotency_key=message.idempotency_key,
        max_tokens=message.max_tokens,
        wait_for_coverage=message.wait_for_coverage,
    )


def answer_to_proto(answer: InferAnswer) -> pb.InferResponse:
    return pb.InferResponse(
        text=answer.text,
        tokens=list(answer.tokens),
        satellite_id=answer.satellite_id,
        station_id=answer.station_id,
        attempts=answer.attempts,
        request_id=answer.request_id,
        model=answer.model,
        deduplicated=answer.deduplicated,
    )


def event_to_proto(event: Token | InferAnswer) -> pb.InferStreamResponse:
    if isinstance(event, Token):
        return pb.InferStreamResponse(
            token=pb.InferToken(index=event.index, text=event.text, satellite_id=event.satellite_id)
        )
    return pb.InferStreamResponse(
        summary=pb.InferSummary(
            output_tokens=len(event.tokens),
            satellite_id=event.satellite_id,
            station_id=event.station_id,
            attempts=event.attempts,
            request_id=event.request_id,
            model=event.model,
            deduplicated=event.deduplicated,
        )
    )


def _retry_info(delay_s: float) -> AnyMessage:
    delay = Duration()
    delay.FromTimedelta(timedelta(seconds=max(0.0, delay_s)))
    packed = AnyMessage()
    packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return packed


def error_metadata(error: GroundplaneError, clock: Clock) -> tuple[tuple[str, str | bytes], ...]:
    """The trailing metadata that goes with ``error`` (empty for most errors)."""
    pairs: list[tuple[str, str | bytes]] = []
    delay_s: float | None = None
    if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
        delay_s = error.retry_after_s
        pairs.append((RETRY_AFTER_KEY, f"{error.retry_after_s:.3f}"))
    if isinstance(error, Unavailable) and error.next_opportunity is not None:
        pairs.append((NEXT_OPPORTUNITY_KEY, format_utc(error.next_opportunity)))
        delay_s = (error.next_opportunity - clock.now()).total_seconds() / clock.speed
    if delay_s is not None:
        status = status_pb2.Status(
            code=error.code.value[0], message=error.message, details=[_retry_info(delay_s)]
        )
        pairs.append((STATUS_DETAILS_KEY, status.SerializeToString()))
    return tuple(pairs)


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


@dataclass(slots=True)
class _Outcome:
    """How one call went, filled in as it runs (for the served feed)."""

    started: float
    """``time.monotonic()`` at arrival."""
    model: str
    streamed: bool
    tenant_id: str = ""
    answer: InferAnswer | None = None
    code: str = "CANCELLED"
    """A call that ends without an answer or a domain error was cancelled (client gone)."""


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """The gRPC face of :class:`InferenceGateway`; with a ``feed``, each finished call is
    published to it (``GatewayMonitorService.WatchRequests``)."""

    def __init__(
        self, gateway: InferenceGateway, tenants: TenantRegistry, feed: ServedFeed | None = None
    ) -> None:
        self.gateway = gateway
        self.tenants = tenants
        self.feed = feed

    def _served(self, outcome: _Outcome) -> None:
        if self.feed is None:
            return
        answer = outcome.answer
        self.feed.publish(
            ServedRequest(
                request_id=answer.request_id if answer is not None else "",
                tenant_id=outcome.tenant_id,
                model=answer.model if answer is not None else outcome.model,
                satellite_id=answer.satellite_id if answer is not None else "",
                station_id=answer.station_id if answer is not None else "",
                code=outcome.code,
                latency_s=time.monotonic() - outcome.started,
                output_tokens=len(answer.tokens) if answer is not None else 0,
                streamed=outcome.streamed,
                finished_at=self.gateway.clock.now(),
                attempts=answer.attempts if answer is not None else 0,
            )
        )

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            SERVICE_NAME,
            lambda server: pb_grpc.add_InferenceServiceServicer_to_server(self, server),
        )

    async def _abort(self, context: Context, error: GroundplaneError) -> None:
        await context.abort(
            error.code, error.message, trailing_metadata=error_metadata(error, self.gateway.clock)
        )

    async def Infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        outcome = _Outcome(time.monotonic(), request.model, streamed=False)
        try:
            tenant = self.tenants.authenticate(_authorization(context))
            outcome.tenant_id = tenant.tenant_id
            answer = await self.gateway.infer(
                call_from_proto(request), tenant, context.time_remaining()
            )
            outcome.answer, outcome.code = answer, "OK"
            return answer_to_proto(answer)
        except GroundplaneError as error:
            outcome.code = error.code.name
            await self._abort(context, error)
            raise  # pragma: no cover - abort raises
        except Exception:
            outcome.code = "INTERNAL"
            raise
        finally:
            self._served(outcome)

    async def InferStream(
        self, request: pb.InferStreamRequest, context: Context
    ) -> AsyncIterator[pb.InferStreamResponse]:
        outcome = _Outcome(time.monotonic(), request.model, streamed=True)
        try:
            tenant = self.tenants.authenticate(_authorization(context))
            outcome.tenant_id = tenant.tenant_id
            events = self.gateway.stream(call_from_proto(request), tenant, context.time_remaining())
            # aclosing: a client gone at a yield releases admission and in-flight counts now.
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, InferAnswer):
                        outcome.answer, outcome.code = event, "OK"
                    yield event_to_proto(event)
        except GroundplaneError as error:
            outcome.code = error.code.name
            await self._abort(context, error)
        except Exception:
            outcome.code = "INTERNAL"
            raise
        finally:
            self._served(outcome)
