"""The calls a gateway finished, fanned out to watchers: ``GatewayMonitorService.WatchRequests``.

:class:`InferenceServicer` records each finished call (answered or failed) as a
:class:`ServedRequest` in a :class:`ServedFeed`; every open ``WatchRequests`` stream has its own
bounded queue in the feed. A watcher that falls :data:`WATCHER_BACKLOG` calls behind loses the
oldest ones (counted, and sent as ``missed``), so a slow dashboard never holds memory or slows a
request down: :meth:`ServedFeed.publish` never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.serving import ServiceBinding
from groundplane.kernel.timestamps import to_timestamp

MONITOR_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayMonitorService"].full_name
WATCHER_BACKLOG = 1024
"""Calls one watcher may be behind before the oldest are dropped for it."""


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """One finished call (no prompt or answer text)."""

    request_id: str
    tenant_id: str
    model: str
    satellite_id: str
    station_id: str
    code: str
    """gRPC status code name; ``"OK"`` when answered."""
    latency_s: float
    """Wall seconds from arrival to answer or error."""
    output_tokens: int
    streamed: bool
    finished_at: datetime
    attempts: int

    def to_proto(self) -> pb.ServedRequest:
        return pb.ServedRequest(
            request_id=self.request_id,
            tenant_id=self.tenant_id,
            model=self.model,
            satellite_id=self.satellite_id,
            station_id=self.station_id,
            code=self.code,
            latency_s=self.latency_s,
            output_tokens=self.output_tokens,
            streamed=self.streamed,
            finished_at=to_timestamp(self.finished_at),
            attempts=self.attempts,
        )


class _Watcher:
    def __init__(self, backlog: int) -> None:
        self.queue: asyncio.Queue[ServedRequest] = asyncio.Queue(maxsize=backlog)
        self.missed = 0

    def offer(self, served: ServedRequest) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.missed += 1
        self.queue.put_nowait(served)


class ServedFeed:
    """Finished calls, to every current watcher (see the module docstring)."""

    def __init__(self, backlog: int = WATCHER_BACKLOG) -> None:
        self._backlog = backlog
        self._watchers: set[_Watcher] = set()
        self.published_total = 0

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(self, served: ServedRequest) -> None:
        """Hand ``served`` to every watcher; never waits."""
        self.published_total += 1
        for watcher in self._watchers:
            watcher.offer(served)

    @contextmanager
    def _watch(self) -> Any:
        watcher = _Watcher(self._backlog)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    async def watch(self) -> AsyncGenerator[tuple[ServedRequest, int]]:
        """Each call finished from now on, with how many this watcher missed so far."""
        with self._watch() as watcher:
            while True:
                served = await watcher.queue.get()
                yield served, watcher.missed


class GatewayMonitorServicer(pb_grpc.GatewayMonitorServiceServicer):
    """``groundplane.gateway.v1.GatewayMonitorService`` over a :class:`ServedFeed`."""

    def __init__(self, feed: ServedFeed) -> None:
        self.feed = feed

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            MONITOR_SERVICE_NAME,
            lambda server: pb_grpc.add_GatewayMonitorServiceServicer_to_server(self, server),
        )

    async def WatchRequests(  # noqa: N802 - the method name is the .proto contract's
        self,
        request: pb.WatchRequestsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.WatchRequestsResponse]:
        async for served, missed in self.feed.watch():
            yield pb.WatchRequestsResponse(request=served.to_proto(), missed=missed)
