"""The handoff manager's metrics, scraped over real HTTP while a session is handed off between
real node agents over a real broker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.planner import HandoffSettings
from groundplane.handoff.store import HandoffEvent
from groundplane.kernel.metrics_http import MetricsServer

from ..scrape import get, sample, samples
from .conftest import SystemFactory, cycling_schedule
from .test_sessions import eventually

SETTINGS = HandoffSettings(
    lead_margin_s=2.0,
    min_dwell_s=5.0,
    ground_rate_bps=1e9,
    bytes_per_token={"chat": 65_536},
)
CONFIG = ManagerConfig(settings=SETTINGS, replan_interval_s=3.0)


async def test_a_handoff_moves_the_scraped_counters(make_system: SystemFactory) -> None:
    """Before any handoff the scrape shows none and one active session; once a session with a
    context has been handed off, the scrape agrees with the manager's handoff events:
    ``groundplane_handoff_total{result="completed"}`` is their number,
    ``groundplane_handoff_moved_bytes_total`` by path the bytes they moved, and the interruption
    histogram holds each of their interruptions. Any other path on the port is 404."""
    async with make_system(cycling_schedule(), config=CONFIG) as system:
        manager = await system.start_manager("handoff-metrics")
        async with MetricsServer(manager.metrics.registry, host="127.0.0.1", port=0) as server:
            info = await manager.create_session("chat")
            await manager.send_turn(
                info.session_id, "hello", deadline=system.clock.now() + timedelta(seconds=60)
            )
            before = await samples(server.url)

            def moves() -> list[HandoffEvent]:
                """The session's handoff events that end a move (not plans or starts)."""
                events = manager.list_handoffs(subject_id=info.session_id)
                return [e for e in events if e.state in {"completed", "failed", "resumed"}]

            await eventually(lambda: len(moves()) > 0)
            # A scrape between two identical event lists saw exactly those events.
            for _ in range(10):
                events = moves()
                after = await samples(server.url)
                if moves() == events:
                    break
            else:
                raise AssertionError("handoffs kept happening during every scrape")
            not_found = await get(f"http://127.0.0.1:{server.port}/sessions")
    assert sample(before, "groundplane_handoff_total", result="completed") == 0
    assert sample(before, "groundplane_handoff_interruption_seconds_count") == 0
    assert sample(before, "groundplane_handoff_sessions", state="active") == 1
    assert {e.state for e in events} == {"completed"}
    assert sample(after, "groundplane_handoff_total", result="completed") == len(events)
    for path in {e.path for e in events}:
        moved = sum(e.bytes_moved for e in events if e.path == path)
        assert moved > 0
        assert sample(after, "groundplane_handoff_moved_bytes_total", path=path) == moved
    assert sample(after, "groundplane_handoff_interruption_seconds_count") == len(events)
    assert sample(after, "groundplane_handoff_interruption_seconds_sum") == pytest.approx(
        sum(e.interruption_s for e in events)
    )
    assert sample(after, "groundplane_handoff_sessions", state="active") == 1
    assert not_found[0] == 404
