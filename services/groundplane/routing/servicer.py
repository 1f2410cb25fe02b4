"""``groundplane.routing.v1.RoutingService``: the gRPC face of :class:`RoutingService`.

Requests are decoded and answers encoded with :mod:`groundplane.routing.convert` (shared with
the client side, :mod:`groundplane.routing.client`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.serving import ServiceBinding
from groundplane.routing.convert import (
    SERVICE_NAME,
    decision_to_proto,
    policy_from_proto,
    policy_to_proto,
    request_from_proto,
    table_to_proto,
)
from groundplane.routing.metrics import RoutingMetrics
from groundplane.routing.service import RoutingService
from groundplane.routing.v1 import routing_pb2 as pb
from groundplane.routing.v1 import routing_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "RoutingServicer"]


class RoutingServicer(pb_grpc.RoutingServiceServicer):
    """The gRPC face of :class:`RoutingService`."""

    def __init__(self, service: RoutingService, metrics: RoutingMetrics | None = None) -> None:
        self.service = service
        self._metrics = metrics

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            SERVICE_NAME, lambda server: pb_grpc.add_RoutingServiceServicer_to_server(self, server)
        )

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RouteResponse:
        decision = await self.service.route(request_from_proto(request))
        if self._metrics is not None:
            self._metrics.decided(decision)
        decision.require()
        return decision_to_proto(decision)

    async def WatchRouteTable(
        self, request: pb.WatchRouteTableRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchRouteTableResponse]:
        async for table in self.service.watch():
            encoded = await asyncio.to_thread(table_to_proto, table)
            yield pb.WatchRouteTableResponse(table=encoded)

    async def GetRoutingPolicy(
        self, request: pb.GetRoutingPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetRoutingPolicyResponse:
        return pb.GetRoutingPolicyResponse(policy=policy_to_proto(self.service.policy))

    async def SetRoutingPolicy(
        self, request: pb.SetRoutingPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetRoutingPolicyResponse:
        if not request.HasField("policy"):
            raise InvalidArgument("policy is required: expected a RoutingPolicy with a kind")
        policy = policy_from_proto(request.policy)
        self.service.set_policy(policy)
        await self.service.refresh(resample=False)
        return pb.SetRoutingPolicyResponse(policy=policy_to_proto(policy))
