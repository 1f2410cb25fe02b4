"""What both ways of running the system share: the load and the jobs, their stop, the closing of
this run's sessions, the wait for the first route table.

:class:`~groundplane.system.system.GroundplaneSystem` (in-process) and
:class:`~groundplane.system.processes.ProcessSystem` (a process per service) differ only in the
pieces they hand these functions: the gateway target the load calls, the
:class:`~groundplane.system.handoff.JobService` the jobs go through, and the
:class:`~groundplane.system.handoff.DuplicateSource` that counts executions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded
from groundplane.routing.client import WatchedTableSource
from groundplane.system.handoff import DuplicateSource, JobLoad, JobService
from groundplane.system.load import GroundLoad, LoadConfig
from groundplane.system.report import RunStats

if TYPE_CHECKING:
    from groundplane.system.system import SystemConfig

log = structlog.get_logger("groundplane.system")

STARTUP_TIMEOUT_S = 60.0
"""Wall seconds for the whole system to come up (node births included)."""
STOP_TIMEOUT_S = 15.0
"""Wall seconds each shutdown step may take before its task is cancelled."""


def start_loads(  # noqa: PLR0913 - the pieces in which the two systems differ, each named
    stack: AsyncExitStack,
    tasks: asyncio.TaskGroup,
    config: SystemConfig,
    clock: Clock,
    stats: RunStats,
    *,
    run_id: str,
    gateway_target: str,
    job_service: JobService,
    executions: DuplicateSource,
) -> tuple[GroundLoad | None, JobLoad | None]:
    """The ground load (through ``gateway_target``) and the job load (through
    ``job_service``), each when ``config`` asks for it, as tasks of ``tasks``; ``stack`` stops
    them (the jobs first, then the load)."""
    load: GroundLoad | None = None
    jobs: JobLoad | None = None
    if config.rate_rps > 0 or config.sessions > 0:
        load = GroundLoad(
            LoadConfig(
                target=gateway_target,
                token=config.token,
                users=config.users,
                model=config.model,
                rate_rps=config.rate_rps,
                sessions=config.sessions,
                deadline_s=config.load_deadline_wall_s,
                run_id=run_id,
            ),
            clock,
            stats,
        )
        load_task = tasks.create_task(load.run(), name="ground-load")
        stack.push_async_callback(stop_load, load, load_task)
    if config.jobs > 0:
        jobs = JobLoad(
            job_service,
            stats.jobs,
            executions,
            run_id=run_id,
            model=config.model.name,
            jobs=config.jobs,
            items=config.job_items,
        )
        jobs_task = tasks.create_task(jobs.run(), name="handoff-jobs")
        stack.push_async_callback(stop_jobs, jobs, jobs_task)
    return load, jobs


async def stop_load(load: GroundLoad, task: asyncio.Task[None]) -> None:
    """Stop the load and let its outstanding calls finish (cancelled after the stop timeout)."""
    load.stop()
    await bounded(task, STOP_TIMEOUT_S)


async def stop_jobs(jobs: JobLoad, task: asyncio.Task[None]) -> None:
    """Take the jobs' final progress, then cancel them."""
    await jobs.update()
    await cancel_and_wait(task)


async def close_sessions(
    session_ids: Iterable[str], close: Callable[[str], Coroutine[Any, Any, None]]
) -> None:
    """``close(session_id)`` for every one of ``session_ids``, all at once."""
    async with asyncio.TaskGroup() as closing:
        for session_id in session_ids:
            closing.create_task(close(session_id), name=f"handoff-close:{session_id}")


async def wait_first_table(tables: WatchedTableSource, model: str, holder: str) -> None:
    """``tables`` holds a route table in which ``model`` is served (within the startup
    timeout); ``holder`` names who follows the tables, for the error."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        table = tables.current()
        if table is not None and model in table.known_models:
            return
        await tables.wait_for_update(0.2)
    raise DeadlineExceeded(
        f"{holder} received no route table serving {model!r} within {STARTUP_TIMEOUT_S} s"
    )


async def bounded(task: asyncio.Task[None], timeout_s: float) -> None:
    """Wait for ``task`` to finish on its own; cancel it after ``timeout_s``."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("shutdown_step_timed_out", task=task.get_name(), timeout_s=timeout_s)
        await cancel_and_wait(task)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end; a failure it ends with is logged.

    ``asyncio.wait`` rather than ``await task``: a cancellation of the caller itself (a second
    Ctrl-C during shutdown) must propagate, not be mistaken for the task's own.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("shutdown_step_failed", task=task.get_name(), exc_info=error)
