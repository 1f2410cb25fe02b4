"""Fuzz target: the request conversions the servicers without an in-process target here
(gateway, handoff's and routing's table consumers) and the tracking client run on messages
from the wire: ``gateway.servicer.call_from_proto``, ``routing.convert`` (policy, route
request, route table as the gateway reads it from ``WatchRouteTable``) and
``tracking.client`` (sites and element sets, as every consumer of tracking reads them).

The first byte picks the conversion; the message is built from the rest with the servicer
targets' descriptor-walking builder. Oracle: only ``GroundplaneError`` may escape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import atheris

from _harness import documented_errors_only, instrumented, main
from _servicers import fill

with instrumented():
    from groundplane.gateway.servicer import call_from_proto
    from groundplane.gateway.v1 import gateway_pb2
    from groundplane.routing import convert
    from groundplane.routing.v1 import routing_pb2
    from groundplane.tracking import client
    from groundplane.tracking.v1 import tracking_pb2

CONVERSIONS: list[tuple[Any, Callable[[Any], object]]] = [
    (gateway_pb2.InferRequest, call_from_proto),
    (gateway_pb2.InferStreamRequest, call_from_proto),
    (routing_pb2.RoutingPolicy, convert.policy_from_proto),
    (routing_pb2.RouteRequest, convert.request_from_proto),
    (routing_pb2.RouteTable, convert.table_from_proto),
    (tracking_pb2.Site, client.site_from_proto),
    (tracking_pb2.ElementSet, client.element_set_from_proto),
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind, conversion = CONVERSIONS[fdp.ConsumeIntInRange(0, len(CONVERSIONS) - 1)]
    message = fill(kind(), fdp)
    with documented_errors_only():
        conversion(message)


if __name__ == "__main__":
    main(test_one_input)
