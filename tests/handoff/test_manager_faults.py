"""The manager under faults, with in-process fake nodes: watchers that fall behind, long
replays, a caller's deadline running out during a recovery, unexpected exceptions in its own
tasks, and closed sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.nodes import Turn
from groundplane.handoff.planner import HandoffSettings
from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.kernel.errors import DeadlineExceeded, FailedPrecondition, ResourceExhausted

from .fakes import (
    BYTES_PER_TOKEN,
    EPOCH,
    FlakyPasses,
    answer_of,
    long_passes,
    node_online,
    running_manager,
)

SETTINGS = HandoffSettings(
    lead_margin_s=2.0,
    min_dwell_s=5.0,
    ground_rate_bps=1e9,
    bytes_per_token={"chat": BYTES_PER_TOKEN},
)
CONFIG = ManagerConfig(settings=SETTINGS, replan_interval_s=1.0)
WALL_TIMEOUT_S = 10.0
"""Wall seconds any awaited outcome may take (the fakes answer at once)."""


async def eventually(predicate: Callable[[], bool], timeout_s: float = WALL_TIMEOUT_S) -> None:
    """Return once ``predicate()`` holds (polled every 10 ms of wall time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def _event(index: int) -> HandoffEvent:
    at = EPOCH + timedelta(seconds=index)
    return HandoffEvent(
        "session", f"s-{index % 3}", "planned", at, at, at, "sat-a", "gs1", "", "", "none", 0, 0.0
    )


async def test_a_watcher_that_falls_behind_ends_with_resource_exhausted() -> None:
    """A watcher whose queue (two events) overflows is not left hanging: it receives the events
    queued before the overflow, then RESOURCE_EXHAUSTED naming the last event id it got; a new
    watch replaying after that id receives exactly the rest."""
    config = ManagerConfig(settings=SETTINGS, replan_interval_s=1.0, watch_queue=2)
    async with running_manager(long_passes(("sat-a", 3600.0)), config=config) as h:
        await h.manager.create_session("chat")
        await eventually(lambda: len(h.manager.list_handoffs()) == 1)  # its "planned" event
        stream = h.manager.watch(after_id=0)
        first = await anext(stream)
        for _ in range(4):
            await h.manager.create_session("chat")
        await eventually(lambda: len(h.manager.list_handoffs()) == 5)
        received = [first]
        with pytest.raises(ResourceExhausted) as behind:
            async with asyncio.timeout(WALL_TIMEOUT_S):
                async for event in stream:
                    received.append(event)
        ids = [e.event_id for e in h.manager.list_handoffs()]
        resumed = h.manager.watch(after_id=received[-1].event_id)
        async with asyncio.timeout(WALL_TIMEOUT_S):
            rest = [await anext(resumed) for _ in range(len(ids) - len(received))]
        await resumed.aclose()
    assert [e.event_id for e in received] == ids[:3]
    assert f"after_event_id={ids[2]}" in behind.value.message
    assert [e.event_id for e in rest] == ids[3:]


async def test_watch_replays_the_whole_history_past_one_page() -> None:
    """A watch replaying from event 0 over a history of 2,345 events (more than one store page
    of 1,000) yields every one of them, in order, before live events."""
    store = HandoffStore(":memory:")
    count = 2_345
    for index in range(count):
        store.add_event(_event(index))
    async with running_manager(long_passes(("sat-a", 3600.0)), config=CONFIG, store=store) as h:
        stream = h.manager.watch(after_id=0)
        async with asyncio.timeout(WALL_TIMEOUT_S):
            replayed = [await anext(stream) for _ in range(count)]
        await stream.aclose()
    assert [e.event_id for e in replayed] == list(range(1, count + 1))
    assert [e.subject_id for e in replayed] == [_event(i).subject_id for i in range(count)]


async def test_a_recovery_outlives_the_deadline_of_the_turn_that_started_it() -> None:
    """A turn finds its node lost the session and starts a recovery whose import takes 100 s,
    but its own deadline is 10 s: the turn fails DEADLINE_EXCEEDED at its deadline, yet the move
    (which already fenced the old node) is not cancelled halfway: it completes in the manager,
    and the same turn sent again with another 10 s deadline is answered once by the new node
    from the whole context."""
    config = ManagerConfig(
        settings=SETTINGS, replan_interval_s=1.0, operation_s=300.0, turn_attempt_s=5.0
    )
    passes = long_passes(("sat-a", 3000.0), ("sat-b", 3600.0))
    async with running_manager(passes, online=("sat-a",), config=config, speed=50.0) as h:
        manager, clock = h.manager, h.clock
        info = await manager.create_session("chat")
        assert info.satellite_id == "sat-a"
        first = await manager.send_turn(
            info.session_id, "hello", deadline=clock.now() + timedelta(seconds=30), turn_id="t0"
        )
        node_online(h.directory, "sat-b", ("chat",))
        h.nodes.refuse.add("sat-a")
        h.nodes.import_delay_s["sat-b"] = 100.0
        sent_at = clock.now()
        with pytest.raises(DeadlineExceeded):
            await manager.send_turn(
                info.session_id, "again", deadline=sent_at + timedelta(seconds=10), turn_id="t1"
            )
        gave_up_after_s = (clock.now() - sent_at).total_seconds()
        await eventually(lambda: manager.get_session(info.session_id).satellite_id == "sat-b")
        second = await manager.send_turn(
            info.session_id, "again", deadline=clock.now() + timedelta(seconds=10), turn_id="t1"
        )
        turns = manager.session_turns(info.session_id)
    context = (Turn("hello", first.text),)
    assert gave_up_after_s < 20.0, "the turn returned at its deadline, not when the move ended"
    assert second.satellite_id == "sat-b"
    assert second.attempts == 1
    assert second.text == answer_of("sat-b", len(context), "again")
    assert turns == [*context, Turn("again", second.text)]


async def test_an_unexpected_exception_in_a_session_or_job_task_does_not_stop_the_manager() -> None:
    """A pass source that raises once inside a session's supervisor, and once inside a job's
    task, is logged and retried: the manager keeps running, the session still answers turns and
    the job runs every item."""
    passes = FlakyPasses(long_passes(("sat-a", 3600.0)))
    async with running_manager(passes, config=CONFIG) as h:
        manager, clock = h.manager, h.clock
        info = await manager.create_session("chat")
        passes.fail("handoff-session:", times=1)
        await eventually(lambda: passes.raised == 1)
        passes.fail("handoff-job:", times=1)
        job = await manager.submit_job("chat", ["one", "two", "three"])
        await eventually(lambda: manager.get_job(job.job_id).state == "done")
        turn = await manager.send_turn(
            info.session_id, "still there?", deadline=clock.now() + timedelta(seconds=30)
        )
        done = manager.get_job(job.job_id, include_results=True)
        manager_alive = not h.task.done()
    assert passes.raised == 2
    assert manager_alive
    assert turn.satellite_id == "sat-a"
    assert done.results == {
        0: "sat-a answers 'one'",
        1: "sat-a answers 'two'",
        2: "sat-a answers 'three'",
    }


async def test_a_closed_session_is_dropped_from_memory_and_read_from_the_store() -> None:
    """Closing a session removes it (and its transcript) from the manager's memory; reading it
    afterwards comes from the store (closed, with its turn count), and a later turn is refused
    FAILED_PRECONDITION."""
    async with running_manager(long_passes(("sat-a", 3600.0)), config=CONFIG) as h:
        manager, clock = h.manager, h.clock
        info = await manager.create_session("chat")
        await manager.send_turn(
            info.session_id, "hello", deadline=clock.now() + timedelta(seconds=30)
        )
        closed = await manager.close_session(info.session_id)
        held = info.session_id in manager._sessions
        read = manager.get_session(info.session_id)
        with pytest.raises(FailedPrecondition, match="closed"):
            await manager.send_turn(
                info.session_id, "anyone?", deadline=clock.now() + timedelta(seconds=30)
            )
    assert closed.state == "closed"
    assert not held
    assert read.state == "closed"
    assert read.turns == 1
