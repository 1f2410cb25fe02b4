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
does not change. The runs alternate (plaintext, mTLS, plaintext, mTLS) and each mode's runs are
pooled; the result line: mTLS minus plaintext p50/p99, and the requests/s ratio.

Because that hop is a small part of a request, the hop alone is measured too, in this process:
a health ``Check`` against a :class:`~groundplane.kernel.serving.GrpcServer`, plaintext and with
mutual TLS and the authorisation interceptor (certificates from ``kernel/pki.py``), same counts.

    .venv/bin/python bench/tls.py [--requests 1000] [--concurrency 16] [--satellites 384]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from e2e_up import constellation, infer, run_system, scenario
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mqtt_roundtrip import measure, percentile

from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.pki import mint_local_pki
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.tls import TlsFiles, open_channel
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


async def bench_hop(
    tls: TlsFiles | None, count: int, concurrency: int
) -> tuple[list[float], float]:
    """Health ``Check`` against a GrpcServer on loopback, plaintext or mutual TLS."""
    server = GrpcServer([], tls=tls, drain_grace_s=0.1, unready_delay_s=0.0)
    await server.start()
    try:
        async with open_channel(server.target, tls=tls) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def request(index: int) -> None:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10.0)

            return await measure(request, count, concurrency)
    finally:
        await server.stop()


def pooled(results: Results, prefix: str) -> tuple[list[float], float]:
    runs = [value for name, value in results.items() if name.startswith(prefix)]
    return [v for lat, _rps in runs for v in lat], sum(rps for _lat, rps in runs) / len(runs)


def print_table(results: Results, plain: str, tls: str) -> None:
    print(f"{'path':<24}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, (latencies, rps) in results.items():
        print(
            f"{name:<24}{percentile(latencies, 0.5) * 1e3:>9.3f}"
            f"{percentile(latencies, 0.99) * 1e3:>9.3f}{rps:>9.0f}"
        )
    plain_lat, plain_rps = pooled(results, plain)
    tls_lat, tls_rps = pooled(results, tls)
    print(
        f"{tls} minus {plain}: "
        f"{(percentile(tls_lat, 0.5) - percentile(plain_lat, 0.5)) * 1e3:.3f} ms p50, "
        f"{(percentile(tls_lat, 0.99) - percentile(plain_lat, 0.99)) * 1e3:.3f} ms p99, "
        f"requests/s ×{tls_rps / plain_rps:.3f}"
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
    hops: Results = {}
    with tempfile.TemporaryDirectory(prefix="groundplane-bench-tls-") as folder:
        files = mint_local_pki(Path(folder), ["admin"], now=datetime.now(UTC))["admin"]
        for name, tls in (("hop plaintext", None), ("hop mtls", files)) * 2:
            key = name if name not in hops else f"{name} again"
            hops[key] = await bench_hop(tls, args.requests, args.concurrency)
    print("one gRPC hop (health Check on loopback):")
    print_table(hops, "hop plaintext", "hop mtls")
    results: Results = {}
    for name, enabled in (("plaintext", False), ("mtls", True)) * 2:
        key = name if name not in results else f"{name} again"
        await bench_run(key, spec, enabled, args, results)
    print("through the gateway (Infer, multi-process system):")
    print_table(results, "plaintext", "mtls")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
