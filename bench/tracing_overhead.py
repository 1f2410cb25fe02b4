"""What tracing costs on the request path: off (the default), and on.

Two measurements in one run, on the shared machine's current load:

1. **The tracing-off helpers alone.** With tracing off every request still calls the
   ``groundplane.kernel.tracing`` helpers the gateway, the requester and the node agent call
   (``span`` for the routing decision, ``start_span``/``end`` for the attempt and the node,
   ``mqtt_properties`` at publish, ``remote_context`` at receive, ``within`` around the node's
   reply task, and the load's ``span``): timed with ``timeit`` over the exact calls one request
   makes, against the same loop doing nothing (the reference), and compared with the request's
   p50 latency from (2).
2. **End to end.** ``Infer`` through the in-process system (``GroundplaneSystem``: gateway,
   routing, link emulator, nodes shard, handoff on a private Mosquitto; the scenario of
   ``bench/e2e_up.py``), with tracing off, then a fresh system with tracing on (spans made and
   ended but exported nowhere: ``configured(always=True)``, the cost of the spans and the gRPC
   interceptors without an exporter's), then off again. Sequential requests (p50, p99) and
   requests/s at ``--concurrency``.

    .venv/bin/python bench/tracing_overhead.py [--requests 500] [--concurrency 16]
        [--satellites 96]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import timeit

from e2e_up import System, bench_system, build, constellation, run_system
from mqtt_roundtrip import percentile

from groundplane.kernel import tracing
from groundplane.kernel.logs import configure_logging

Results = dict[str, tuple[list[float], float]]
HELPER_LOOPS = 200_000


async def _nothing() -> None:
    return None


def off_helpers_once() -> None:
    """The tracing calls one request makes when tracing is off (see the module doc)."""
    with tracing.span("groundplane.load", "load.infer") as load:
        tracing.trace_id(load) if load is not None else ""
    with tracing.span("groundplane.gateway", "routing.decide"):
        pass
    attempt = tracing.start_span("groundplane.gateway", "gateway.attempt", attributes=None)
    tracing.traceparent(attempt) if attempt is not None else ""
    tracing.mqtt_properties("")
    node = tracing.start_span(
        "groundplane.node", "node.infer", parent=tracing.remote_context((), "")
    )
    work = _nothing()
    tracing.within(node, work)
    work.close()
    tracing.end(attempt)


def reference_once() -> None:
    """The same loop without the calls: what the measurement itself costs."""
    work = _nothing()
    work.close()


def time_helpers() -> tuple[float, float]:
    """Seconds per request of the off helpers, and of the reference loop."""
    assert not tracing.enabled()
    helpers = min(timeit.repeat(off_helpers_once, number=HELPER_LOOPS, repeat=5)) / HELPER_LOOPS
    reference = min(timeit.repeat(reference_once, number=HELPER_LOOPS, repeat=5)) / HELPER_LOOPS
    return helpers, reference


async def bench_one(
    spec: str, args: argparse.Namespace, *, traced: bool
) -> tuple[list[float], float]:
    out: list[tuple[list[float], float]] = []

    async def body(running: System) -> None:
        out.append(await bench_system(running.gateway_target, args.requests, args.concurrency))

    with tracing.configured("groundplane-bench", always=traced):
        await run_system(build("in-process", spec), body)
    return out[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--satellites", type=int, default=96)
    args = parser.parse_args()
    configure_logging("json", level="WARNING")
    spec = constellation(args.satellites)
    print(
        f"{args.requests} sequential requests, then {args.requests} with {args.concurrency} "
        f"outstanding, in-process, {spec}; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    helpers_s, reference_s = time_helpers()
    results: Results = {}
    results["tracing off"] = await bench_one(spec, args, traced=False)
    results["tracing on (no exporter)"] = await bench_one(spec, args, traced=True)
    results["tracing off again"] = await bench_one(spec, args, traced=False)
    off = results["tracing off"][0] + results["tracing off again"][0]
    off_p50 = percentile(off, 0.5)
    off_rps = (results["tracing off"][1] + results["tracing off again"][1]) / 2
    print(f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'p50 ×off':>10}{'req/s ×off':>12}")
    for name, (latencies, rps) in results.items():
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"{name:<28}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}{rps:>9.0f}"
            f"{p50 / off_p50:>10.3f}{rps / off_rps:>12.3f}"
        )
    per_request_s = helpers_s - reference_s
    print(
        f"tracing-off helpers: {helpers_s * 1e9:.0f} ns per request, reference loop "
        f"{reference_s * 1e9:.0f} ns: {per_request_s * 1e9:.0f} ns added per request = "
        f"{per_request_s / off_p50 * 100:.4f} % of the off p50 ({off_p50 * 1e3:.3f} ms)"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
