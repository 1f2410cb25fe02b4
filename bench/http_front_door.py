"""The gateway's HTTP front door vs its gRPC ``Infer``, same system, same run.

The system and scenario of ``bench/e2e_up.py`` (private Mosquitto, tracking, link emulator,
node agents, routing, handoff, gateway; ``synth-zero``: no compute time; link processing delay
0), with the gateway's OpenAI-compatible HTTP API on (``up --http-port``). Both paths reach the
same gateway core (admission, routing decision, the requester, four MQTT hops through the link
emulator, the node) so what differs is the front: gRPC (``grpc.aio`` client, protobuf) vs HTTP/1.1
JSON (an ``httpx.AsyncClient`` with a pooled connection per outstanding request; Starlette on
uvicorn in the gateway). Each path runs twice, alternating (gRPC, HTTP, gRPC, HTTP), so a drift
of the shared machine hits both; the figures pool both runs. Per run: ``--requests`` sequential
requests (latency p50/p99), then ``--requests`` with ``--concurrency`` outstanding (requests/s),
after 50 warm-up requests; every request must be answered by a satellite. The result line is the
HTTP/gRPC ratio of p50 and of requests/s (goal: HTTP within 1.5× of gRPC).

    .venv/bin/python bench/http_front_door.py [--requests 500] [--concurrency 16]
        [--satellites 96] [--in-process] [--max-duration 300]

By default the system runs as ``up`` runs it (every service its own process: the gateway's HTTP
and gRPC servers in the gateway's process, the load clients here); ``--in-process`` runs it all
in this process (clients and servers then share one event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os

import grpc
import httpx
from e2e_up import USER, ZERO_MODEL, constellation, infer, run_system, scenario
from mqtt_roundtrip import measure, percentile

from groundplane.gateway.http import SATELLITE_HEADER
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.logs import configure_logging
from groundplane.scenario import DEFAULT_TOKEN
from groundplane.system.processes import CatalogSource, ProcessSystem
from groundplane.system.system import GroundplaneSystem

Results = dict[str, tuple[list[float], float]]


async def bench_grpc(target: str, count: int, concurrency: int) -> tuple[list[float], float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)

        async def request(index: int) -> None:
            await infer(stub, index)

        return await measure(request, count, concurrency)


async def bench_http(base_url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {
        "Authorization": f"Bearer {DEFAULT_TOKEN}",
        "X-Groundplane-Location": f"{USER.lat_deg},{USER.lon_deg}",
    }
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=10.0
    ) as client:

        async def request(index: int) -> None:
            response = await client.post(
                "/chat/completions",
                json={
                    "model": ZERO_MODEL.name,
                    "messages": [{"role": "user", "content": f"q{index}"}],
                },
            )
            response.raise_for_status()
            assert response.headers[SATELLITE_HEADER]

        return await measure(request, count, concurrency)


def pooled(runs: list[tuple[list[float], float]]) -> tuple[list[float], float]:
    latencies = [v for lat, _rps in runs for v in lat]
    return latencies, sum(rps for _lat, rps in runs) / len(runs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--satellites", type=int, default=96)
    parser.add_argument("--in-process", action="store_true", help="every service in this process")
    parser.add_argument(
        "--max-duration", type=float, default=300.0, help="wall seconds the whole run may take"
    )
    args = parser.parse_args()
    configure_logging("json", level="WARNING")
    spec = constellation(args.satellites)
    config, clock = scenario(spec)
    config = dataclasses.replace(config, gateway_http_port=0)
    system: GroundplaneSystem | ProcessSystem = (
        GroundplaneSystem(config, clock)
        if args.in_process
        else ProcessSystem(config, clock, CatalogSource(constellation=spec))
    )
    mode = "in-process" if args.in_process else "processes"
    print(
        f"{args.requests} sequential requests, then {args.requests} with {args.concurrency} "
        f"outstanding, twice per path; {spec} ({mode}), zero compute, zero link processing "
        f"delay; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    runs: dict[str, list[tuple[list[float], float]]] = {"gRPC Infer": [], "HTTP chat": []}

    async def body(running: GroundplaneSystem | ProcessSystem) -> None:
        base_url = running.gateway_http_url
        assert base_url is not None
        for _round in range(2):
            runs["gRPC Infer"].append(
                await bench_grpc(running.gateway_target, args.requests, args.concurrency)
            )
            runs["HTTP chat"].append(await bench_http(base_url, args.requests, args.concurrency))

    async with asyncio.timeout(args.max_duration):
        await run_system(system, body)
    results: Results = {name: pooled(each) for name, each in runs.items()}
    print(f"{'path':<14}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, (latencies, rps) in results.items():
        print(
            f"{name:<14}{percentile(latencies, 0.5) * 1e3:>9.3f}"
            f"{percentile(latencies, 0.99) * 1e3:>9.3f}{rps:>9.0f}"
        )
    (grpc_lat, grpc_rps), (http_lat, http_rps) = results["gRPC Infer"], results["HTTP chat"]
    p50_ratio = percentile(http_lat, 0.5) / percentile(grpc_lat, 0.5)
    p99_ratio = percentile(http_lat, 0.99) / percentile(grpc_lat, 0.99)
    print(
        f"HTTP / gRPC: p50 ×{p50_ratio:.2f}, p99 ×{p99_ratio:.2f}, requests/s "
        f"×{http_rps / grpc_rps:.2f} (goal: latency ≤ ×1.5, requests/s ≥ ×0.67)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
