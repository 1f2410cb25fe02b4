"""The gateway's HTTP front door vs its gRPC ``Infer``, same system, same run.

The system and scenario of ``bench/e2e_up.py`` (private Mosquitto, tracking, link emulator,
node agents, routing, handoff, gateway; ``synth-zero``: no compute time; link processing delay
0), with the gateway's OpenAI-compatible HTTP API on (``up --http-port``). Both paths reach the
same gateway core (admission, routing decision, the requester, four MQTT hops through the link
emulator, the node) so what differs is the front: gRPC (``grpc.aio`` client, protobuf) vs HTTP/1.1
JSON (an ``httpx.AsyncClient`` with its own keep-alive connection per outstanding request;
Starlette on uvicorn in the gateway). Each path runs twice, alternating (gRPC, HTTP, gRPC,
HTTP), so a drift of the shared machine hits both; the figures pool both runs. Per run:
``--requests`` sequential requests (latency p50/p99), then ``--requests`` with ``--concurrency``
outstanding (requests/s), after 50 warm-up requests; every request must be answered by a
satellite. The result line is the HTTP/gRPC ratio of p50, p99 and requests/s (goal: HTTP within
1.5× of gRPC).

    .venv/bin/python bench/http_front_door.py [--requests 500] [--concurrency 16]
        [--satellites 96] [--in-process] [--max-duration 300]

By default the system runs as ``up`` runs it (every service its own process: the gateway's HTTP
and gRPC servers in the gateway's process, the load clients here); ``--in-process`` runs it all
in this process (clients and servers then share one event loop). The CPU column is the gateway
process's CPU seconds per request (``/proc/PID/stat``, warm-up included), or this whole
process's in-process: the server-side cost, which latency on a shared machine hides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

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

Run = tuple[list[float], float, float]
"""Latencies (s), requests/s, CPU seconds per request of the process serving them."""
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
WARM_UP = 50
"""Requests :func:`mqtt_roundtrip.measure` sends before it measures."""


def cpu_s(pid: int | None) -> float:
    """utime + stime of ``pid`` (this process when None), seconds."""
    if pid is None:
        return time.process_time()
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


async def bench_grpc(target: str, count: int, concurrency: int) -> tuple[list[float], float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)

        async def request(index: int) -> None:
            await infer(stub, index)

        return await measure(request, count, concurrency)


async def bench_http(base_url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    """One ``httpx.AsyncClient`` (one keep-alive connection) per outstanding request: httpx's
    connection pool scans every connection on each request, CPU the load client would take
    from the gateway on a small machine."""
    headers = {
        "Authorization": f"Bearer {DEFAULT_TOKEN}",
        "X-Groundplane-Location": f"{USER.lat_deg},{USER.lon_deg}",
    }
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(concurrency):
            idle.put_nowait(
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=base_url, headers=headers, limits=limits, timeout=10.0
                    )
                )
            )

        async def request(index: int) -> None:
            client = idle.get_nowait()
            try:
                response = await client.post(
                    "/chat/completions",
                    json={
                        "model": ZERO_MODEL.name,
                        "messages": [{"role": "user", "content": f"q{index}"}],
                    },
                )
            finally:
                idle.put_nowait(client)
            response.raise_for_status()
            assert response.headers[SATELLITE_HEADER]

        return await measure(request, count, concurrency)


async def timed(
    bench: Callable[[], Awaitable[tuple[list[float], float]]], pid: int | None, count: int
) -> Run:
    """``bench()`` and the CPU the serving process spent per request meanwhile."""
    before = cpu_s(pid)
    latencies, rps = await bench()
    return latencies, rps, (cpu_s(pid) - before) / (WARM_UP + 2 * count)


def pooled(runs: list[Run]) -> Run:
    latencies = [v for lat, _rps, _cpu in runs for v in lat]
    return (
        latencies,
        sum(rps for _lat, rps, _cpu in runs) / len(runs),
        sum(cpu for _lat, _rps, cpu in runs) / len(runs),
    )


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
    runs: dict[str, list[Run]] = {"gRPC Infer": [], "HTTP chat": []}

    async def body(running: GroundplaneSystem | ProcessSystem) -> None:
        base_url = running.gateway_http_url
        assert base_url is not None
        pid: int | None = None
        if isinstance(running, ProcessSystem):
            assert running.supervisor is not None
            pid = running.supervisor.pid("gateway")
        n, c = args.requests, args.concurrency
        for _round in range(2):
            runs["gRPC Infer"].append(
                await timed(lambda: bench_grpc(running.gateway_target, n, c), pid, n)
            )
            runs["HTTP chat"].append(await timed(lambda: bench_http(base_url, n, c), pid, n))

    async with asyncio.timeout(args.max_duration):
        await run_system(system, body)
    results = {name: pooled(each) for name, each in runs.items()}
    cpu_of = "this process, clients included" if args.in_process else "the gateway process"
    print(f"{'path':<14}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'CPU ms/req':>12}  ({cpu_of})")
    for name, (latencies, rps, cpu) in results.items():
        print(
            f"{name:<14}{percentile(latencies, 0.5) * 1e3:>9.3f}"
            f"{percentile(latencies, 0.99) * 1e3:>9.3f}{rps:>9.0f}{cpu * 1e3:>12.3f}"
        )
    (grpc_lat, grpc_rps, grpc_cpu) = results["gRPC Infer"]
    (http_lat, http_rps, http_cpu) = results["HTTP chat"]
    p50_ratio = percentile(http_lat, 0.5) / percentile(grpc_lat, 0.5)
    p99_ratio = percentile(http_lat, 0.99) / percentile(grpc_lat, 0.99)
    print(
        f"HTTP / gRPC: p50 ×{p50_ratio:.2f}, p99 ×{p99_ratio:.2f}, requests/s "
        f"×{http_rps / grpc_rps:.2f}, CPU per request ×{http_cpu / grpc_cpu:.2f} "
        "(goal: latency ≤ ×1.5, requests/s ≥ ×0.67)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
