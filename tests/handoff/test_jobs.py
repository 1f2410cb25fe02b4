"""A job item runs once whatever the timing: an item whose answer was lost or late is asked
again only of the node that may have run it (which answers its request id from that run)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from groundplane.handoff.planner import PassSchedule, PassWindow
from groundplane.handoff.store import HandoffStore

from .fakes import EPOCH, STATION, running_manager

WALL_TIMEOUT_S = 10.0


async def eventually(predicate: Callable[[], bool], timeout_s: float = WALL_TIMEOUT_S) -> None:
    """Return once ``predicate()`` holds (polled every 10 ms of wall time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def _window(satellite_id: str, aos_s: float, los_s: float) -> PassWindow:
    return PassWindow(
        satellite_id,
        STATION,
        EPOCH + timedelta(seconds=aos_s),
        EPOCH + timedelta(seconds=los_s),
    )


def _a_then_b() -> PassSchedule:
    """sat-a alone in view at the start (for 100 s); sat-b rises 5 s later and stays 10 min, so
    from then on sat-b is the better node for new work."""
    return PassSchedule([_window("sat-a", -1, 100), _window("sat-b", 5, 600)])


async def test_an_item_whose_answer_was_lost_is_asked_again_of_the_node_that_ran_it() -> None:
    """The item runs on sat-a and its reply is lost 10 s later, when sat-b is in view and better:
    the item is asked of sat-a again (same request id, answered from its first run), never run
    on sat-b, so it is executed once and its result is sat-a's."""
    async with running_manager(_a_then_b(), online=("sat-a", "sat-b"), speed=50.0) as h:
        h.nodes.prompt_delay_s["sat-a"] = 10.0
        h.nodes.lose_replies.add("j.i0")
        await h.manager.submit_job("chat", ["only"], job_id="j")
        await eventually(lambda: h.manager.get_job("j").state == "done")
        assert h.nodes.executions == [("sat-a", "j.i0")]
        assert h.manager.get_job("j", include_results=True).results == {0: "sat-a answers 'only'"}


async def test_an_answer_slower_than_the_item_estimate_is_awaited_not_retried_elsewhere() -> None:
    """sat-a answers after 30 s, six times the initial item estimate, while sat-b is in view and
    better: the answer is awaited (the attempt's deadline is sat-a's LOS), so the item runs once,
    on sat-a."""
    async with running_manager(_a_then_b(), online=("sat-a", "sat-b"), speed=50.0) as h:
        h.nodes.prompt_delay_s["sat-a"] = 30.0
        await h.manager.submit_job("chat", ["only"], job_id="j")
        await eventually(lambda: h.manager.get_job("j").state == "done")
        assert h.nodes.executions == [("sat-a", "j.i0")]


async def test_a_restarted_manager_asks_the_node_an_unanswered_item_was_sent_to() -> None:
    """An item the store records as sent to sat-a without an answer (a manager that stopped
    while it ran) is asked of sat-a when the job resumes, though sat-b is the better node: it
    runs once."""
    store = HandoffStore(":memory:")
    store.create_job("j", "chat", 32, ["only"], EPOCH)
    store.dispatch_item("j", 0, "sat-a")
    both = PassSchedule([_window("sat-a", -1, 100), _window("sat-b", -1, 600)])
    async with running_manager(both, online=("sat-a", "sat-b"), speed=50.0, store=store) as h:
        h.nodes.executions.append(("sat-a", "j.i0"))  # the earlier manager's run
        h.nodes.prompt_results[("sat-a", "j.i0")] = "sat-a answers 'only'"
        await eventually(lambda: h.manager.get_job("j").state == "done")
        assert h.nodes.executions == [("sat-a", "j.i0")]
        assert h.manager.get_job("j", include_results=True).results == {0: "sat-a answers 'only'"}
