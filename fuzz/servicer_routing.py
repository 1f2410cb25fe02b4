"""Fuzz target: every ``groundplane.routing.v1.RoutingService`` method, with random requests
built from its descriptor, against a real ``RoutingService`` (its table loop running) behind the
kernel's ``GrpcServer`` over loopback gRPC. See ``_servicers`` for the message builder and the
oracle (no INTERNAL, no UNKNOWN, no unary hang).

The service sees two stations and two online satellites serving ``synth-7b`` (fixed sightings
and node states: the inputs routing takes from tracking and the node directory), so a route
request can reach the decision, not only "nothing in view".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime

from _harness import instrumented, main
from _servicers import ServicerFuzzer, Stop

with instrumented():
    from groundplane.kernel.clock import SimulatedClock
    from groundplane.kernel.serving import GrpcServer
    from groundplane.routing.policy import NodeState, Sighting
    from groundplane.routing.service import RoutingService
    from groundplane.routing.servicer import RoutingServicer
    from groundplane.routing.table import StationInfo
    from groundplane.routing.v1 import routing_pb2

NOW = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
MODEL = "synth-7b"
SIGHTINGS = [
    Sighting("london", "S-1", 40.0, 120.0, 900.0, 300.0),
    Sighting("madrid", "S-2", 25.0, 200.0, 1400.0, 120.0),
]


class _Visibility:
    def sightings(self, at: datetime) -> list[Sighting]:
        return list(SIGHTINGS)


class _Nodes:
    def snapshot(self) -> Mapping[str, NodeState]:
        return {s: NodeState(s, True, frozenset({MODEL})) for s in ("S-1", "S-2")}


async def _start() -> tuple[str, Stop]:
    service = RoutingService(
        clock=SimulatedClock(NOW, speed=1.0),
        stations=[StationInfo("london", 51.5074, -0.1278), StationInfo("madrid", 40.4168, -3.7)],
        visibility=_Visibility(),
        nodes=_Nodes(),
        tick_s=3600.0,
    )
    server = GrpcServer([RoutingServicer(service).binding()], drain_grace_s=0, unready_delay_s=0)
    await server.start()
    loop = asyncio.get_running_loop().create_task(service.run())

    async def stop() -> None:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await server.stop(0)

    return server.target, stop


FUZZER = ServicerFuzzer(routing_pb2.DESCRIPTOR.services_by_name["RoutingService"], _start)
test_one_input = FUZZER.test_one_input

if __name__ == "__main__":
    main(test_one_input)
