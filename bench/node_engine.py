"""Overhead of the node engine over calling the synthetic backend directly.

Reference: streaming N answers straight from a zero-cost SyntheticBackend, one after another.
Measured in the same run: the same N requests through Engine.submit one after another (admission,
task, slot, result storage), N requests admitted at once on 8 slots, N retries answered from the
stored results, and N session turns. Prints ratios against the reference and absolute figures.

    .venv/bin/python bench/node_engine.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from groundplane.kernel.clock import SimulatedClock
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.node.engine import Engine, EngineConfig, InferenceRequest

MODEL = SyntheticModelSpec("bench", min_answer_tokens=16, max_answer_tokens=16)


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    await action()
    return time.perf_counter() - began


async def main(count: int) -> None:
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC), speed=1.0)
    backend = SyntheticBackend([MODEL], clock)
    config = EngineConfig(slots=8, queue_limit=count, max_cached_results=4 * count)

    async def direct() -> None:
        for i in range(count):
            request = GenerateRequest(f"d{i}", MODEL.name, f"prompt {i}")
            async for _ in backend.generate(request):
                pass

    async with Engine(backend, clock, config) as engine:

        async def sequential() -> None:
            for i in range(count):
                await engine.submit(InferenceRequest(f"s{i}", MODEL.name, f"prompt {i}"))

        async def concurrent() -> None:
            tickets = [
                engine.start(InferenceRequest(f"c{i}", MODEL.name, f"prompt {i}"))
                for i in range(count)
            ]
            for ticket in tickets:
                await ticket.result()

        async def replayed() -> None:
            for i in range(count):
                await engine.submit(InferenceRequest(f"s{i}", MODEL.name, f"prompt {i}"))

        async def session_turns() -> None:
            for i in range(count):
                await engine.submit(
                    InferenceRequest(f"t{i}", MODEL.name, f"prompt {i}", session_id=f"x{i % 16}")
                )

        reference_s = await timed(direct)
        figures = {
            "engine, sequential": await timed(sequential),
            "engine, all admitted at once (8 slots)": await timed(concurrent),
            "engine, retries served from stored results": await timed(replayed),
            "engine, session turns (16 sessions)": await timed(session_turns),
        }

    print(f"{count} requests of {MODEL.max_answer_tokens} tokens, zero-cost synthetic model")
    print(f"  {'direct backend (reference)':44s} {reference_s / count * 1e6:8.1f} µs/request")
    for name, total_s in figures.items():
        per_request_us = total_s / count * 1e6
        print(f"  {name:44s} {per_request_us:8.1f} µs/request  {total_s / reference_s:5.2f}×")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
