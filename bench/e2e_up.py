"""End-to-end requests through the assembled system, multi-process vs in-process vs raw aiomqtt.

The system of ``groundplane up`` (private Mosquitto, tracking, link emulator, node agents,
routing, handoff, gateway) on a real scenario both modes run identically from their
configuration: the ``walker:384/16/1@550km:53`` constellation, one station at 38° N 75.5° W
(10° minimum elevation, several satellites always in view), the user next to it, ``up``'s
default 60× clock from a fixed start, link processing delay 0 (what remains of a link is its
range: ≈ 2-6 ms simulated, 0.03-0.1 ms of wall time at 60×), a synthetic model with no compute
time (``synth-zero``, answers of 4-32 tokens), ``up``'s default routing policy. What is measured
is the system's own cost: gRPC into the gateway's ``Infer``, admission, the routing decision,
the requester, four MQTT hops through the link emulator, the node agent and engine, and back.

* ``processes``  — :class:`~groundplane.system.processes.ProcessSystem` (``up``'s default: every
  service a ``groundplane serve`` child; the gateway, links and nodes are three processes, so a
  request crosses processes at every hop);
* ``in-process`` — :class:`~groundplane.system.system.GroundplaneSystem` (``up --in-process``).

The reference is the raw aiomqtt request/response of ``bench/mqtt_roundtrip.py`` (two clients,
QoS 1, TCP_NODELAY, 2 broker hops) on each system's broker, before and after its figures. The
result line is the multi-process hop's cost: processes minus in-process, ms p50 (goal ≤ 1 ms).
The CPU column is this process's CPU time per request sent (warm-up included): for
``in-process`` the whole system and its gRPC client, for raw both aiomqtt clients; it is steadier
than latency on a shared machine and bounds a single-process system's requests/s.

Until issue 10 this benchmark ran only in-process, with every satellite overhead (a fixed link
geometry of range 0 and a routing visibility override, which child processes cannot take), 8
satellites and one-token answers (commit ca37e38): its figures are not this scenario's (more
agents, real geometry, routing and link ticks, longer answers). ``--satellites`` changes the
constellation size (at most 16 planes).

    .venv/bin/python bench/e2e_up.py [--requests 1000] [--concurrency 16] [--satellites 384]
        [--processes | --in-process]   (default: both, in the same run)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc
from mqtt_roundtrip import bench_raw, measure, percentile

from groundplane.cli.up import MAX_LINK_TICKS_PER_WALL_S, MAX_ROUTE_TICKS_PER_WALL_S
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.logs import configure_logging
from groundplane.node.backends import SyntheticModelSpec
from groundplane.orbit.constellations import generate
from groundplane.orbit.sites import Site
from groundplane.scenario import DEFAULT_SPEED, DEFAULT_TOKEN, GroundUser
from groundplane.system.processes import CatalogSource, ProcessSystem
from groundplane.system.system import GroundplaneSystem, SystemConfig

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = Site(id="bench-gs", lat_deg=38.0, lon_deg=-75.5, min_elevation_deg=10.0)
USER = GroundUser("bench-user", "next to the station", 38.0, -75.5)
ZERO_MODEL = SyntheticModelSpec("synth-zero")
"""No compute time; the default answer length (what ``serve nodes --model synth-zero:0:0``
serves, so both modes answer alike)."""
TENANTS = {"demo": {"tokens": [DEFAULT_TOKEN], "max_concurrent": 256, "max_queued": 1024}}

System = GroundplaneSystem | ProcessSystem
Results = dict[str, tuple[list[float], float]]
WARM_UP_REQUESTS = 50
"""``mqtt_roundtrip.measure`` sends these before it measures."""


def constellation(satellites: int) -> str:
    """``walker:N/P/1@550km:53`` with the most planes ≤ 16 that divide ``satellites``."""
    planes = max(p for p in range(1, min(16, satellites) + 1) if satellites % p == 0)
    return f"walker:{satellites}/{planes}/1@550km:53"


def scenario(spec: str, *, speed: float = DEFAULT_SPEED) -> tuple[SystemConfig, SimulatedClock]:
    """The benchmark's system configuration (no load of its own) and its clock."""
    clock = SimulatedClock(EPOCH, speed=speed)
    config = SystemConfig(
        elements=generate(spec, EPOCH),
        stations=[STATION],
        users=[USER],
        model=ZERO_MODEL,
        tenants=TENANTS,
        link_tick_s=max(1.0, speed / MAX_LINK_TICKS_PER_WALL_S),
        route_tick_s=max(1.0, speed / MAX_ROUTE_TICKS_PER_WALL_S),
        keep_trace=False,
    )
    return config, clock


def build(mode: str, spec: str, *, speed: float = DEFAULT_SPEED) -> System:
    config, clock = scenario(spec, speed=speed)
    if mode == "processes":
        return ProcessSystem(config, clock, CatalogSource(constellation=spec))
    return GroundplaneSystem(config, clock)


async def infer(
    stub: pb_grpc.InferenceServiceAsyncStub, index: int, timeout_s: float = 10.0
) -> str:
    reply = await stub.Infer(
        pb.InferRequest(
            model=ZERO_MODEL.name,
            prompt=f"q{index}",
            location=pb.UserLocation(lat_deg=USER.lat_deg, lon_deg=USER.lon_deg),
        ),
        metadata=(("authorization", f"Bearer {DEFAULT_TOKEN}"),),
        timeout=timeout_s,
    )
    assert reply.satellite_id
    return str(reply.satellite_id)


async def bench_system(target: str, count: int, concurrency: int) -> tuple[list[float], float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)

        async def request(index: int) -> None:
            await infer(stub, index)

        return await measure(request, count, concurrency)


async def run_system(system: System, body: Callable[[System], Awaitable[None]]) -> None:
    """``body(system)`` once the system is ready, then stop it."""

    async def on_ready(running: System) -> None:
        try:
            await body(running)
        finally:
            running.stop()

    await system.run(on_ready)


async def cpu_per_request(
    measured: Awaitable[tuple[list[float], float]],
    requests: int,
    cpu_ms: dict[str, float],
    name: str,
) -> tuple[list[float], float]:
    """``measured``'s result; this process's CPU time per request it sent goes to ``cpu_ms``."""
    started = time.process_time()
    result = await measured
    cpu_ms[name] = (time.process_time() - started) * 1e3 / (2 * requests + WARM_UP_REQUESTS)
    return result


def descendants_cpu_s(root: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of every live descendant process of ``root`` (this
    process), keyed by a short name: ``serve <service>`` for groundplane children, else the
    program's name (Linux ``/proc``; a process gone in between is skipped)."""
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    pending = [os.getpid() if root is None else root]
    while pending:
        pid = pending.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
            if pid == (os.getpid() if root is None else root):
                continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0") if arg]
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = os.path.basename(argv[0]) if argv else str(pid)
        if "serve" in argv:
            name = " ".join(argv[argv.index("serve") : argv.index("serve") + 2])
        # utime and stime are the 14th and 15th fields; fields[0] here is the 3rd (state).
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) * tick_s
    return found


IDLE_S = 2.0
"""How long the children's CPU is measured with no requests (their background: link and route
ticks, heartbeats), to tell it from what requests cost."""


def print_children_cpu(
    idle: dict[str, float], spent_s: dict[str, float], elapsed_s: float, requests: int
) -> None:
    """Each child's CPU ms per request over the multi-process system's measurement, and the
    part of it its idle background rate accounts for."""
    total_requests = 2 * requests + WARM_UP_REQUESTS
    parts = []
    for name, cpu_s in sorted(spent_s.items(), key=lambda item: -item[1]):
        background_ms = idle.get(name, 0.0) / IDLE_S * elapsed_s * 1e3 / total_requests
        parts.append(f"{name} {cpu_s * 1e3 / total_requests:.3f} ({background_ms:.3f} idle)")
    print(
        "processes: CPU ms per request by child, both phases (of which the idle background "
        f"rate): {', '.join(parts)}; all children "
        f"{sum(spent_s.values()) * 1e3 / total_requests:.3f}"
    )


def cpu_delta_s(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


async def bench_mode(
    mode: str, spec: str, args: argparse.Namespace, results: Results, cpu_ms: dict[str, float]
) -> None:
    async def body(running: System) -> None:
        assert running.broker_address is not None
        n, concurrency = args.requests, args.concurrency
        address = running.broker_address
        results[f"raw ({mode})"] = await cpu_per_request(
            bench_raw(address, n, concurrency), n, cpu_ms, f"raw ({mode})"
        )
        idle_before = descendants_cpu_s()
        await asyncio.sleep(IDLE_S if mode == "processes" else 0.0)
        children_before = descendants_cpu_s()
        idle = cpu_delta_s(idle_before, children_before)
        started = time.perf_counter()
        results[mode] = await cpu_per_request(
            bench_system(running.gateway_target, n, concurrency), n, cpu_ms, mode
        )
        if mode == "processes":
            spent = cpu_delta_s(children_before, descendants_cpu_s())
            print_children_cpu(idle, spent, time.perf_counter() - started, n)
        results[f"raw again ({mode})"] = await cpu_per_request(
            bench_raw(address, n, concurrency), n, cpu_ms, f"raw again ({mode})"
        )

    await run_system(build(mode, spec), body)


def print_table(results: Results, cpu_ms: dict[str, float]) -> None:
    raw_lat = [v for name, (lat, _rps) in results.items() if name.startswith("raw") for v in lat]
    raw_rps = [rps for name, (_lat, rps) in results.items() if name.startswith("raw")]
    raw_p50, raw_p99 = percentile(raw_lat, 0.5), percentile(raw_lat, 0.99)
    raw_mean_rps = sum(raw_rps) / len(raw_rps)
    print(
        f"{'path':<23}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"{'p50 ×raw':>10}{'p99 ×raw':>10}{'req/s ×raw':>12}{'CPU ms/req':>12}"
    )
    for name, (latencies, rps) in results.items():
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"{name:<23}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}{rps:>9.0f}"
            f"{p50 / raw_p50:>10.2f}{p99 / raw_p99:>10.2f}{rps / raw_mean_rps:>12.3f}"
            # A multi-process system spends its CPU in its children: not measured here.
            + (f"{cpu_ms[name]:>12.3f}" if name in cpu_ms and name != "processes" else f"{'-':>12}")
        )
    for mode in ("processes", "in-process"):
        if mode in results:
            p50 = percentile(results[mode][0], 0.5)
            print(f"{mode} overhead over raw MQTT round trip: {(p50 - raw_p50) * 1e3:.3f} ms p50")
    raw_cpu = [ms for name, ms in cpu_ms.items() if name.startswith("raw")]
    if "in-process" in cpu_ms and raw_cpu:
        raw_cpu_ms = sum(raw_cpu) / len(raw_cpu)
        print(
            f"in-process CPU per request (the whole system and its client in this process): "
            f"{cpu_ms['in-process']:.3f} ms, ×{cpu_ms['in-process'] / raw_cpu_ms:.2f} raw's "
            f"{raw_cpu_ms:.3f} ms (both raw clients)"
        )
    if "processes" in results and "in-process" in results:
        multi, single = results["processes"], results["in-process"]
        delta_ms = (percentile(multi[0], 0.5) - percentile(single[0], 0.5)) * 1e3
        print(
            f"multi-process minus in-process: {delta_ms:.3f} ms p50 (goal ≤ 1 ms), "
            f"{(percentile(multi[0], 0.99) - percentile(single[0], 0.99)) * 1e3:.3f} ms p99, "
            f"requests/s ×{multi[1] / single[1]:.3f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--satellites", type=int, default=384)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--processes", action="store_true", help="only the multi-process system")
    only.add_argument("--in-process", action="store_true", help="only the in-process system")
    args = parser.parse_args()
    configure_logging("json", level="WARNING")
    spec = constellation(args.satellites)
    modes = (["processes"] if args.processes else ["in-process"] if args.in_process else None) or [
        "processes",
        "in-process",
    ]
    print(
        f"{args.requests} sequential requests, then {args.requests} with {args.concurrency} "
        f"outstanding; {spec}, station {STATION.lat_deg}°, {STATION.lon_deg}°, "
        f"{DEFAULT_SPEED:g}× from {EPOCH:%Y-%m-%dT%H:%MZ}, zero compute, zero link processing "
        f"delay; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    results: Results = {}
    cpu_ms: dict[str, float] = {}
    for mode in modes:
        await bench_mode(mode, spec, args, results, cpu_ms)
    print_table(results, cpu_ms)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
