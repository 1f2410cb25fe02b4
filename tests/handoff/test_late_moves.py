"""A move that ends after the LOS of the pass it leaves says so in its event, never posing as a
clean handoff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.planner import HandoffSettings

from .fakes import BYTES_PER_TOKEN, long_passes, node_online, running_manager

SETTINGS = HandoffSettings(
    lead_margin_s=2.0,
    min_dwell_s=5.0,
    ground_rate_bps=1e9,
    bytes_per_token={"chat": BYTES_PER_TOKEN},
)
CONFIG = ManagerConfig(settings=SETTINGS, replan_interval_s=1.0)
WALL_TIMEOUT_S = 10.0


async def eventually(predicate: Callable[[], bool], timeout_s: float = WALL_TIMEOUT_S) -> None:
    """Return once ``predicate()`` holds (polled every 10 ms of wall time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def test_a_handoff_that_ends_after_los_is_reported_late() -> None:
    """sat-a sets 40 s in; the handoff to sat-b starts 2 s (the margin) before LOS but its import
    takes 8 s: the completed event ends after LOS and its detail says it was late, by how much
    and when it started; a handoff that ends in time has no such detail."""
    passes = long_passes(("sat-a", 40.0), ("sat-b", 3600.0))
    async with running_manager(passes, online=("sat-a",), config=CONFIG, speed=50.0) as h:
        info = await h.manager.create_session("chat")
        assert info.satellite_id == "sat-a"
        node_online(h.directory, "sat-b", ("chat",))
        h.nodes.import_delay_s["sat-b"] = 8.0
        await eventually(
            lambda: any(
                e.state == "completed" for e in h.manager.list_handoffs(subject_id=info.session_id)
            )
        )
        event = next(
            e for e in h.manager.list_handoffs(subject_id=info.session_id) if e.state == "completed"
        )
    assert event.to_satellite == "sat-b"
    assert event.at > event.los
    late_s = (event.at - event.los).total_seconds()
    assert f"late: ended {late_s:.1f} s after LOS, started" in event.detail, event
    assert "before it" in event.detail, event


async def test_a_handoff_that_ends_before_los_is_not_reported_late() -> None:
    """The same handoff with a 0.5 s import ends before LOS: its detail claims no lateness."""
    passes = long_passes(("sat-a", 40.0), ("sat-b", 3600.0))
    async with running_manager(passes, online=("sat-a",), config=CONFIG, speed=50.0) as h:
        info = await h.manager.create_session("chat")
        node_online(h.directory, "sat-b", ("chat",))
        h.nodes.import_delay_s["sat-b"] = 0.5
        await eventually(
            lambda: any(
                e.state == "completed" for e in h.manager.list_handoffs(subject_id=info.session_id)
            )
        )
        event = next(
            e for e in h.manager.list_handoffs(subject_id=info.session_id) if e.state == "completed"
        )
    assert event.at <= event.los, event
    assert "late" not in event.detail, event
