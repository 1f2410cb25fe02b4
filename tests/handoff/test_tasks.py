"""The manager's task runner: a call that hits its deadline or loses its caller leaves nothing
unread behind it, and a cancelled caller does not cancel the work."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from groundplane.handoff.tasks import ManagerTasks
from groundplane.kernel.errors import DeadlineExceeded, Unavailable


def unread_errors(contexts: list[dict[str, Any]]) -> list[str]:
    return [
        str(context.get("message")) for context in contexts if "never retrieved" in str(context)
    ]


async def test_a_call_past_its_deadline_leaves_no_exception_unread() -> None:
    """A call whose work outlives its deadline raises DEADLINE_EXCEEDED; the work is cancelled
    and what it ended with (UNAVAILABLE, set after the caller left) is not reported by the loop
    as a future exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    try:
        tasks = ManagerTasks()
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        async with asyncio.TaskGroup() as group:
            tasks.attach(group)
            with pytest.raises(DeadlineExceeded):
                await tasks.call(hang(), "turn", wait_s=0.05)
            assert started.is_set()
            tasks.attach(None)
        gc.collect()
        assert unread_errors(contexts) == []
    finally:
        loop.set_exception_handler(None)


async def test_a_cancelled_caller_leaves_the_work_running_and_its_error_read() -> None:
    """Cancelling the caller does not cancel the work (a turn that reached a node is still
    recorded); the work's later failure is read, not reported as never retrieved."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    try:
        tasks = ManagerTasks()
        release = asyncio.Event()
        finished = asyncio.Event()

        async def slow_failure() -> None:
            await release.wait()
            finished.set()
            raise Unavailable("the node went away")

        async with asyncio.TaskGroup() as group:
            tasks.attach(group)
            caller = group.create_task(tasks.call(slow_failure(), "turn", 10.0), name="caller")
            await asyncio.sleep(0)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            release.set()
            async with asyncio.timeout(5.0):
                await finished.wait()
            tasks.attach(None)
        gc.collect()
        assert unread_errors(contexts) == []
    finally:
        loop.set_exception_handler(None)
