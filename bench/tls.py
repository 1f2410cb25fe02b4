"""The cost of mutual TLS on the gateway path: ``up`` plaintext vs ``up --tls``, same run.

The multi-process system of ``bench/e2e_up.py`` (its scenario: ``walker:384/16/1@550km:53``,
one station with the user beside it, 60× clock, zero compute, zero link processing delay), run
three times in one process: plaintext (the reference), with ``tls=True`` (``up --tls``: every
gRPC server requires a client certificate from a throw-away CA, checks each method against the
caller's identity, and every channel presents its service's certificate), and plaintext again
(so drift of the machine shows). Each run: 50 warm-up calls, ``--requests`` sequential
``Infer`` calls (p50/p99), then ``--requests`` more with ``--concurrency`` outstanding
(requests/s), over one long-lived channel, as a client of the gateway does.

A request's own gRPC hop is the client → gateway call (TLS records plus the per-call identity
check); gateway → routing is a long-lived stream and the rest of the path is MQTT, which this
does not change. The result line: TLS minus the plaintext runs' pooled p50/p99, and the
requests/s ratio.

    .venv/bin/python bench/tls.py [--requests 1000] [--concurrency 16] [--satellites 384]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from e2e_up import constellation, infer, run_system, scenario
from mqtt_roundtrip import measure, percentile

from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.tls import open_channel
from groundplane.system.processes import CatalogSource, ProcessSystem

Results = dict[str, tuple[list[float], float]]


async def bench_gateway(target: str, count: int, concurrency: int) -> tuple[list[float], float]:
    # open_channel: the process's TLS, which ProcessSystem(tls=True) set to its admin identity.
    async with open_channel(target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)

        async def request(index: int) -> None:
            await infer(stub, index)

        return await measure(request, count, concurrency)


async def bench_run(
    name: str, spec: str, tls: bool, args: argparse.Namespace, results: Results
) -> None:
    config, clock = scenario(spec)
    system = ProcessSystem(config, clock, CatalogSource(constellation=spec), tls=tls)

    async def body(running: ProcessSystem | object) -> None:
        assert isinstance(running, ProcessSystem)
        assert (running.tls_files is not None) == tls
        results[name] = await bench_gateway(running.gateway_target, args.requests, args.concurrency)

    await run_system(system, body)


def print_table(results: Results) -> None:
    plain = [v for name, (lat, _r) in results.items() if name.startswith("plaintext") for v in lat]
    plain_rps = [r for name, (_l, r) in results.items() if name.startswith("plaintext")]
    print(f"{'path':<20}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, (latencies, rps) in results.items():
        print(
            f"{name:<20}{percentile(latencies, 0.5) * 1e3:>9.3f}"
            f"{percentile(latencies, 0.99) * 1e3:>9.3f}{rps:>9.0f}"
        )
    tls_lat, tls_rps = results["mtls"]
    print(
        f"mTLS minus plaintext: {(percentile(tls_lat, 0.5) - percentile(plain, 0.5)) * 1e3:.3f} ms "
        f"p50, {(percentile(tls_lat, 0.99) - percentile(plain, 0.99)) * 1e3:.3f} ms p99, "
        f"requests/s ×{tls_rps / (sum(plain_rps) / len(plain_rps)):.3f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--satellites", type=int, default=384)
    args = parser.parse_args()
    configure_logging("json", level="WARNING")
    spec = constellation(args.satellites)
    print(
        f"{args.requests} sequential requests, then {args.requests} with {args.concurrency} "
        f"outstanding, through the multi-process system ({spec}); load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    results: Results = {}
    for name, tls in (("plaintext", False), ("mtls", True), ("plaintext again", False)):
        await bench_run(name, spec, tls, args, results)
    print_table(results)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
