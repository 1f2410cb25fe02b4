"""Start-up of ``groundplane up`` to its first served request: multi-process vs in-process.

For each constellation size (``walker:96/8/1@550km:53`` and ``walker:1584/72/1@550km:53`` by
default) and each mode, the scenario of ``bench/e2e_up.py`` (one station, zero compute, 60×) is
started in this process and timed from the call of ``run`` to

* ``ready``: the system's ``on_ready`` (the route table serves the model: every child ready);
* ``first``: the first ``Infer`` through the gateway that is answered (tried every 50 ms).

For the multi-process system the supervisor's ``child_started`` and ``child_ready`` events give
where the time goes: each child's spawn → ready time, and the start stages (tracking; links and
the nodes shards; routing and handoff; gateway), each awaited before the next. The references,
in the same run: the in-process system on the same scenario, and the Python start-up of one
``groundplane serve`` child (``python -c 'import groundplane.cli.main'``, median of 3), which
every child pays before it does any work.

The goal (issue 10): multi-process ``up`` serves its first request within 5 s on 2 cores.

    .venv/bin/python bench/startup_up.py [--sizes 96,1584]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import grpc
import structlog
from e2e_up import System, build, constellation, infer

from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.system.processes import START_STAGES

FIRST_REQUEST_TIMEOUT_S = 120.0
SPECS = {
    96: "walker:96/8/1@550km:53",
    384: "walker:384/16/1@550km:53",
    1584: "walker:1584/72/1@550km:53",
    6336: "walker:6336/72/1@550km:53",
}
"""The sizes of issue 10 (96 is ``up``'s default constellation, 1584 its scale scenario)."""


def walker(satellites: int) -> str:
    """The constellation spec of ``satellites``: :data:`SPECS`, else ``e2e_up.constellation``."""
    return SPECS.get(satellites) or constellation(satellites)


class ChildEvents:
    """The supervisor's ``child_started``/``child_ready`` events, with their monotonic time
    (a structlog processor; every log event is dropped after it is looked at)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ready: dict[str, float] = {}

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
        now = time.perf_counter()
        if event.get("event") == "child_started":
            self.started.setdefault(str(event["child"]), now)
        elif event.get("event") == "child_ready":
            self.ready.setdefault(str(event["child"]), now)
        raise structlog.DropEvent


def python_import_s(repeat: int = 3) -> float:
    """Wall seconds of ``python -c 'import groundplane.cli.main'`` (median of ``repeat``)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import groundplane.cli.main"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def first_request(system: System) -> tuple[float, float, float]:
    """Seconds from ``run`` to ready and to the first answered request; satellites served."""
    started = time.perf_counter()
    marks: dict[str, float] = {}

    async def on_ready(running: System) -> None:
        marks["ready"] = time.perf_counter()
        try:
            async with (
                asyncio.timeout(FIRST_REQUEST_TIMEOUT_S),
                grpc.aio.insecure_channel(running.gateway_target) as channel,
            ):
                stub = pb_grpc.InferenceServiceStub(channel)
                index = 0
                while True:
                    index += 1
                    try:
                        await infer(stub, index, timeout_s=5.0)
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.05)  # not served yet: poll again
                        continue
                    marks["first"] = time.perf_counter()
                    return
        finally:
            running.stop()

    await system.run(on_ready)
    return marks["ready"] - started, marks["first"] - started, started


def stage_times(events: ChildEvents, started: float) -> list[tuple[str, float, float]]:
    """Per start stage: its name, seconds from ``run`` to its first spawn and to its last ready."""
    rows = []
    for stage in START_STAGES:
        names = [n for n in events.started if n.split("-", 1)[0] in stage]
        if names:
            first = min(events.started[n] for n in names) - started
            last = max(events.ready.get(n, float("nan")) for n in names) - started
            rows.append(("+".join(stage), first, last))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,1584", help="satellite counts, comma-separated")
    args = parser.parse_args()
    events = ChildEvents()
    structlog.configure(processors=[events])
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    import_s = python_import_s()
    print(f"python -c 'import groundplane.cli.main': {import_s:.3f} s (median of 3)")
    print(
        f"{'scenario':<28}{'mode':<12}{'ready s':>9}{'first s':>9}{'×in-proc':>10}"
        f"{'children':>10}{'load 1m':>9}"
    )
    for size in sizes:
        spec = walker(size)
        figures: dict[str, float] = {}
        for mode in ("in-process", "processes"):
            events.started.clear()
            events.ready.clear()
            load = os.getloadavg()[0]
            ready_s, first_s, started = await first_request(build(mode, spec))
            figures[mode] = first_s
            ratio = first_s / figures["in-process"]
            print(
                f"{spec:<28}{mode:<12}{ready_s:>9.2f}{first_s:>9.2f}{ratio:>10.2f}"
                f"{len(events.started):>10}{load:>9.2f}"
            )
            if mode == "processes":
                for stage, first, last in stage_times(events, started):
                    print(
                        f"    stage {stage:<18} spawned at {first:6.2f} s, ready at {last:6.2f} s"
                    )
                for name, spawned in events.started.items():
                    ready = events.ready.get(name, float("nan"))
                    print(f"      {name:<14} spawn → ready {ready - spawned:6.2f} s")
        print(
            f"{spec}: multi-process first request {figures['processes']:.2f} s "
            f"(goal ≤ 5 s), {figures['processes'] - figures['in-process']:+.2f} s over in-process"
        )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
