"""The manager's tasks: every session's, job's, turn's and recovery's task belongs to the
manager's TaskGroup, so it dies with the manager and never outlives it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from groundplane.kernel.errors import DeadlineExceeded, GroundplaneError, Unavailable

log = structlog.get_logger("groundplane.handoff.manager")

_T = TypeVar("_T")


class ManagerTasks:
    """Creates named tasks in the manager's TaskGroup while it runs."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None

    def attach(self, group: asyncio.TaskGroup | None) -> None:
        """Serve from ``group`` (None: the manager stopped)."""
        self._group = group

    @property
    def running(self) -> bool:
        return self._group is not None

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the running manager (a programming error when it is not running)."""
        assert self._group is not None
        return self._group.create_task(work, name=name)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the manager; UNAVAILABLE when it is not running or shutting down."""
        try:
            if self._group is None:
                raise RuntimeError("not running")
            return self._group.create_task(work, name=name)
        except RuntimeError:  # not started, or the TaskGroup is shutting down
            work.close()
            raise Unavailable("the handoff manager is not running; retry shortly") from None

    async def call(self, work: Coroutine[Any, Any, _T], name: str, wait_s: float) -> _T:
        """Run ``work`` as a manager task (it dies with the manager); wait ``wait_s`` wall s.

        The task is not the caller's: a caller that is cancelled leaves it running (a turn that
        reached a node is still recorded, and answered from the store on a retry); when
        ``wait_s`` passes first, the task is cancelled and the caller gets DEADLINE_EXCEEDED.
        Either way, what the task ends with after its caller stopped waiting is read here and
        dropped, never left set on a future nobody awaits.
        """
        outcome: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(_read_outcome)

        async def settle() -> None:
            try:
                value = await work
            except asyncio.CancelledError:
                if not outcome.done():
                    outcome.set_exception(
                        Unavailable(f"{name} was interrupted: the handoff manager stopped; retry")
                    )
                raise
            except Exception as error:  # answered to the caller; the manager keeps serving
                if not isinstance(error, GroundplaneError):
                    log.exception("handoff_task_failed", task=name)
                outcome.set_exception(error)
            else:
                outcome.set_result(value)

        try:
            task = self.spawn(settle(), name)
        except Unavailable:
            work.close()
            raise
        # asyncio.wait neither cancels ``outcome`` when the caller is cancelled nor wraps it in
        # a future of its own (asyncio.shield's outer future forgets the inner one once
        # cancelled, leaving a later exception unread).
        await asyncio.wait({outcome}, timeout=max(wait_s, 0.0))
        if outcome.done():
            return outcome.result()
        task.cancel()
        raise DeadlineExceeded(f"{name} did not finish before its deadline")


def _read_outcome(outcome: asyncio.Future[Any]) -> None:
    """Mark a settled outcome's exception as read (its caller, if still waiting, re-reads it)."""
    if not outcome.cancelled():
        outcome.exception()
