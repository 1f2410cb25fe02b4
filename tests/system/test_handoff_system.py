"""`groundplane up`'s system with the handoff manager: sessions through the gateway survive their
satellite setting, and a job runs every item exactly once.

The system runs in-process on a sped-up clock long enough that the pass serving each session
ends within the run, so the sessions must be handed off to keep talking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.handoff.manager import SessionInfo
from groundplane.handoff.planner import HandoffSettings
from groundplane.handoff.store import HandoffEvent
from groundplane.kernel.clock import SimulatedClock
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_TENANT, default_stations, default_users
from groundplane.system.report import write_summary
from groundplane.system.system import GroundplaneSystem, SystemConfig

pytestmark = pytest.mark.slow

EPOCH = datetime(2026, 8, 15, tzinfo=UTC)
CONSTELLATION = "walker:48/6/1@550km:53"
SPEED = 90.0
"""Simulated seconds per wall second: 14 wall seconds are 21 simulated minutes, longer than any
pass of a 550 km satellite above 10° (under 9 minutes), so every serving pass ends in the run."""
RUN_WALL_S = 14.0
MARGIN_S = 10.0
"""Handoff lead margin (simulated s). A handoff's control round trips (export, import, store
commits) take tens of wall milliseconds on a busy 2-core machine, i.e. several simulated seconds
at 90×; the first handoff of a session runs before the manager has measured that overhead, so
the margin covers it."""
SESSIONS = 2
JOB_ITEMS = 20
LOS_SLACK = timedelta(seconds=0)
"""A completed handoff must end before the LOS of the pass it leaves (no slack)."""


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


async def test_sessions_survive_their_satellite_setting_and_a_job_runs_each_item_once(
    tmp_path: Path,
) -> None:
    """With a 48-satellite shell, ten stations, two sessions talking through the gateway and one
    job of twenty items, for 21 simulated minutes: no turn fails and every answer equals the
    synthetic model's answer over the session's whole context (so the whole context arrived at
    every successor); the summary counts at least one completed handoff and no failed one; every
    completed session handoff ended before the LOS of the pass it left and moved a non-empty
    state to another satellite; each session was served by more than one satellite; the job
    kept all twenty results and the nodes executed each item exactly once."""
    _need_mosquitto()
    config = SystemConfig(
        elements=generate(CONSTELLATION, EPOCH),
        stations=default_stations(),
        users=default_users(),
        rate_rps=0.0,
        sessions=SESSIONS,
        jobs=1,
        job_items=JOB_ITEMS,
        handoff=HandoffSettings(lead_margin_s=MARGIN_S, min_dwell_s=30.0),
        handoff_dir=tmp_path / "handoff",
        link_tick_s=SPEED / 50,
        route_tick_s=SPEED / 10,
        keep_trace=False,
        workdir=tmp_path / "broker",
    )
    system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=SPEED))
    seen: dict[str, list[SessionInfo]] = {}
    completed: list[HandoffEvent] = []

    async def observe(running: GroundplaneSystem) -> None:
        manager = running.handoff
        assert manager is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + RUN_WALL_S
        ids = [f"{DEFAULT_TENANT}:load-{running.run_id}-session-{k}" for k in range(SESSIONS)]
        while loop.time() < end:
            await asyncio.sleep(0.5)
            for session_id in ids:
                with contextlib.suppress(LookupError):  # not opened yet
                    seen.setdefault(session_id, []).append(manager.get_session(session_id))
        completed.extend(
            e
            for e in manager.list_handoffs(limit=10_000)
            if e.subject_kind == "session" and e.state == "completed"
        )
        running.stop()

    async with asyncio.timeout(60):
        await system.run(observe)
    summary_path = tmp_path / "summary.json"
    write_summary(summary_path, system.stats)
    summary = json.loads(summary_path.read_text())

    sessions = summary["sessions"]
    assert sessions["turns"] >= SESSIONS * 10, sessions
    assert sessions["failed_turns"] == 0, sessions
    assert sessions["context_mismatches"] == 0, sessions

    handoffs = summary["handoffs"]
    assert handoffs["completed"] >= 1, handoffs
    assert handoffs["failed"] == 0, handoffs
    assert completed, "no session handoff completed within the run"
    for event in completed:
        assert event.at <= event.los + LOS_SLACK, event
        assert event.to_satellite, event
        assert event.to_satellite != event.from_satellite, event
        assert event.bytes_moved > 0, event

    assert len(seen) == SESSIONS
    for session_id, infos in seen.items():
        satellites = {info.satellite_id for info in infos if info.satellite_id}
        assert len(satellites) >= 2, (session_id, satellites)

    jobs = summary["jobs"]
    assert jobs == {"items": JOB_ITEMS, "completed_items": JOB_ITEMS, "duplicate_items": 0}
    executions = system.executions.executions
    assert len(executions) == JOB_ITEMS, executions
    assert set(executions.values()) == {1}, executions
