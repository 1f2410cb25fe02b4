"""A tiny child process for the supervisor's tests (run as a script, not collected).

It serves gRPC health on ``--port`` (readiness SERVING at start, or never with ``--never-ready``)
and, on request: exits with status 3 ``--exit-after`` seconds after it started; appends
``<name> <SIGNAL>`` to ``--record`` when a stop signal arrives and ``<name> exit`` just before it
exits, ``--term-delay`` seconds later; ignores SIGTERM altogether with ``--ignore-term``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from groundplane.kernel.serving import GrpcServer


def _append(path: str | None, line: str) -> None:
    if path is not None:
        with Path(path).open("a") as out:
            out.write(line + "\n")


async def main(args: argparse.Namespace) -> int:
    server = GrpcServer(
        [],
        address=f"127.0.0.1:{args.port}",
        unready_delay_s=0.0,
        drain_grace_s=0.1,
        ready_at_start=not args.never_ready,
    )
    await server.start()
    print(f"child serving on {server.target}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        _append(args.record, f"{args.name} {sig.name}")
        received.append(sig.name)
        if sig == signal.SIGTERM and args.ignore_term:
            return
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with asyncio.timeout(args.exit_after):
            await stop.wait()
    except TimeoutError:
        return 3
    await asyncio.sleep(args.term_delay)
    await server.stop(0.1)
    _append(args.record, f"{args.name} exit")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="child")
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--record")
    parser.add_argument("--term-delay", type=float, default=0.0)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--never-ready", action="store_true")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
