"""End-to-end requests through the assembled system vs raw aiomqtt on the same broker.

The system of ``groundplane up`` (private Mosquitto, link emulator, node agents, routing,
gateway) with everything that is simulated set to zero: a one-token synthetic model with no
compute time, links with no processing delay and range 0 (always up), routing visibility that
sees every satellite overhead. What remains is the system's own cost: gRPC into the gateway,
admission, the local routing decision, the requester, four MQTT hops through the link emulator,
the node agent and engine, and back.

The reference is the raw aiomqtt request/response of ``bench/mqtt_roundtrip.py`` (two clients,
QoS 1, TCP_NODELAY, 2 broker hops) on the same broker in the same run, measured before and after
the system figures.

    .venv/bin/python bench/e2e_up.py [--requests 1000] [--concurrency 16] [--satellites 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from datetime import UTC, datetime

import grpc
from mqtt_roundtrip import bench_raw, measure, percentile

from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.logs import configure_logging
from groundplane.links.geometry import FixedGroundGeometry
from groundplane.links.model import LinkConfig
from groundplane.node.backends import SyntheticModelSpec
from groundplane.orbit.constellations import generate
from groundplane.orbit.sites import Site
from groundplane.routing.policy import PolicyKind, RoutingPolicy, Sighting
from groundplane.scenario import DEFAULT_TOKEN, GroundUser
from groundplane.system.system import GroundplaneSystem, SystemConfig

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = Site(id="bench-gs", lat_deg=38.0, lon_deg=-75.5, min_elevation_deg=10.0)
USER = GroundUser("bench-user", "next to the station", 38.0, -75.5)
ZERO_MODEL = SyntheticModelSpec("synth-zero", min_answer_tokens=1, max_answer_tokens=1)


class Overhead:
    """Routing visibility: every satellite straight overhead of the station, range 0."""

    def __init__(self, satellite_ids: list[str]) -> None:
        self._sightings = [
            Sighting(STATION.id, sat, 90.0, 0.0, 0.0, math.inf) for sat in satellite_ids
        ]

    def sightings(self, at: datetime) -> list[Sighting]:
        return list(self._sightings)


async def bench_system(target: str, count: int, concurrency: int) -> tuple[list[float], float]:
    auth = (("authorization", f"Bearer {DEFAULT_TOKEN}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        location = pb.UserLocation(lat_deg=USER.lat_deg, lon_deg=USER.lon_deg)

        async def request(index: int) -> None:
            reply = await stub.Infer(
                pb.InferRequest(model=ZERO_MODEL.name, prompt=f"q{index}", location=location),
                metadata=auth,
                timeout=10,
            )
            assert reply.satellite_id

        return await measure(request, count, concurrency)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--satellites", type=int, default=8)
    args = parser.parse_args()
    configure_logging("json", level="WARNING")
    elements = generate(f"walker:{args.satellites}/{min(args.satellites, 4)}/1@550km:53", EPOCH)
    ids = [e.catalog_id for e in elements]
    config = SystemConfig(
        elements=elements,
        stations=[STATION],
        users=[USER],
        model=ZERO_MODEL,
        policy=RoutingPolicy(kind=PolicyKind.LEAST_LOADED, stickiness=None),
        tenants={"demo": {"tokens": [DEFAULT_TOKEN], "max_concurrent": 256, "max_queued": 1024}},
        link_config=LinkConfig(processing_delay_s=0.0),
        ground_geometry=FixedGroundGeometry([(STATION.id, sat) for sat in ids], range_km=0.0),
        visibility=Overhead(ids),
    )
    system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=1.0))
    results: dict[str, tuple[list[float], float]] = {}

    async def run_bench(running: GroundplaneSystem) -> None:
        try:
            assert running.broker_address is not None
            results["raw aiomqtt"] = await bench_raw(
                running.broker_address, args.requests, args.concurrency
            )
            results["system"] = await bench_system(
                running.gateway_target, args.requests, args.concurrency
            )
            results["raw again"] = await bench_raw(
                running.broker_address, args.requests, args.concurrency
            )
        finally:
            running.stop()

    await system.run(run_bench)
    raw_lat, raw_rps = results["raw aiomqtt"]
    raw_p50, raw_p99 = percentile(raw_lat, 0.5), percentile(raw_lat, 0.99)
    print(
        f"{args.requests} sequential requests, then {args.requests} with {args.concurrency} "
        f"outstanding; {args.satellites} node agents, zero compute, zero link delay"
    )
    print(
        f"{'path':<13}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"{'p50 ×raw':>10}{'p99 ×raw':>10}{'req/s ×raw':>12}"
    )
    for name, (latencies, rps) in results.items():
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"{name:<13}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}{rps:>9.0f}"
            f"{p50 / raw_p50:>10.2f}{p99 / raw_p99:>10.2f}{rps / raw_rps:>12.3f}"
        )
    system_p50 = percentile(results["system"][0], 0.5)
    print(f"system overhead over raw MQTT round trip: {(system_p50 - raw_p50) * 1e3:.3f} ms p50")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
