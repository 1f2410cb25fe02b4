"""The move's branches with in-process fake nodes: to another station of the same satellite,
with and without a context, and to another satellite when the export fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.nodes import Turn
from groundplane.handoff.planner import HandoffSettings, PassSchedule, PassWindow
from groundplane.kernel.errors import InvalidArgument

from .fakes import BYTES_PER_TOKEN, EPOCH, STATION, running_manager

OTHER_STATION = "gs2"
LOS_S = 30.0
SETTINGS = HandoffSettings(
    lead_margin_s=2.0,
    min_dwell_s=5.0,
    ground_rate_bps=1e9,
    bytes_per_token={"chat": BYTES_PER_TOKEN},
)
CONFIG = ManagerConfig(settings=SETTINGS, replan_interval_s=1.0)
WALL_TIMEOUT_S = 10.0


def station_change() -> PassSchedule:
    """sat-a over gs1 until 30 s, and over gs2 from 10 s for an hour: the successor of the
    first pass is the same satellite seen from another station."""
    return PassSchedule(
        [
            PassWindow(
                "sat-a", STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=LOS_S)
            ),
            PassWindow(
                "sat-a",
                OTHER_STATION,
                EPOCH + timedelta(seconds=10),
                EPOCH + timedelta(seconds=3600),
            ),
        ]
    )


async def eventually(predicate: Callable[[], bool], timeout_s: float = WALL_TIMEOUT_S) -> None:
    """Return once ``predicate()`` holds (polled every 10 ms of wall time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def test_a_move_to_another_station_of_the_same_satellite_moves_only_the_epoch() -> None:
    """A session with a context whose successor is its own satellite over another station is
    neither exported nor fenced there: the node imports the ground copy under the new epoch,
    the event says nothing moved (path ``none``, 0 bytes), and the next turn runs on the same
    node at the new epoch with the whole context."""
    async with running_manager(station_change(), config=CONFIG) as h:
        info = await h.manager.create_session("chat")
        assert (info.satellite_id, info.station_id) == ("sat-a", STATION)
        first = await h.manager.send_turn(
            info.session_id, "hello", deadline=h.clock.now() + timedelta(seconds=10)
        )
        await eventually(lambda: h.manager.get_session(info.session_id).station_id == "gs2")
        second = await h.manager.send_turn(
            info.session_id, "again", deadline=h.clock.now() + timedelta(seconds=10)
        )
        [done] = [
            e for e in h.manager.list_handoffs(subject_id=info.session_id) if e.state == "completed"
        ]
        session = h.manager.get_session(info.session_id)
    assert (done.from_satellite, done.from_station) == ("sat-a", STATION)
    assert (done.to_satellite, done.to_station) == ("sat-a", OTHER_STATION)
    assert (done.path, done.bytes_moved) == ("none", 0)
    assert done.at < done.los
    assert h.nodes.imports_done == [("sat-a", session.session_epoch)]
    assert ("sat-a", info.session_id) not in h.nodes.fences, "the serving node was fenced"
    assert first.session_epoch == 0
    assert second.session_epoch == session.session_epoch > 0
    assert (second.satellite_id, second.station_id, second.turn_index) == ("sat-a", "gs2", 1)
    assert second.text == "sat-a saw 1 turns, then 'again'"


async def test_a_session_without_turns_changes_station_without_an_import() -> None:
    """A session with no context yet moves to another station of its satellite without any
    node call: nothing is imported or fenced, and the route switches at a new epoch."""
    async with running_manager(station_change(), config=CONFIG) as h:
        info = await h.manager.create_session("chat")
        await eventually(lambda: h.manager.get_session(info.session_id).station_id == "gs2")
        session = h.manager.get_session(info.session_id)
        [done] = [
            e for e in h.manager.list_handoffs(subject_id=info.session_id) if e.state == "completed"
        ]
    assert h.nodes.imports_done == []
    assert h.nodes.fences == {}
    assert done.bytes_moved == 0
    assert (session.satellite_id, session.session_epoch) == ("sat-a", 1)


async def test_a_failed_export_moves_the_ground_copy_to_the_successor() -> None:
    """When the old node fences the session but its export cannot be used (here: a snapshot
    that does not parse), the handoff still completes at once: the successor imports the ground
    copy of the transcript under the new epoch, and the next turn runs there with the whole
    context. No ``failed`` event, no retry."""
    passes = PassSchedule(
        [
            PassWindow(
                "sat-a", STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=LOS_S)
            ),
            PassWindow(
                "sat-b", STATION, EPOCH + timedelta(seconds=10), EPOCH + timedelta(seconds=3600)
            ),
        ]
    )
    async with running_manager(passes, online=("sat-a", "sat-b"), config=CONFIG) as h:
        info = await h.manager.create_session("chat")
        assert info.satellite_id == "sat-a"
        first = await h.manager.send_turn(
            info.session_id, "hello", deadline=h.clock.now() + timedelta(seconds=10)
        )
        h.nodes.export_error = InvalidArgument("expected a session snapshot, got garbage")
        await eventually(lambda: h.manager.get_session(info.session_id).satellite_id == "sat-b")
        second = await h.manager.send_turn(
            info.session_id, "again", deadline=h.clock.now() + timedelta(seconds=10)
        )
        states = [e.state for e in h.manager.list_handoffs(subject_id=info.session_id)]
        epoch = h.manager.get_session(info.session_id).session_epoch
    assert "failed" not in states
    assert states.count("completed") == 1
    assert h.nodes.fences[("sat-a", info.session_id)] == epoch
    imported = h.nodes.held["sat-b"][info.session_id]
    assert imported.turns[0] == Turn("hello", first.text)
    assert second.satellite_id == "sat-b"
    assert second.text == "sat-b saw 1 turns, then 'again'"
