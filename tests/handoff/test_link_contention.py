"""Sessions leaving one satellite at the same LOS over one link: the manager's per-link transfer
schedule starts them early enough, one after another, for every handoff to end before LOS."""

from __future__ import annotations

from datetime import timedelta

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.nodes import Turn
from groundplane.handoff.planner import HandoffSettings, PassSchedule, PassWindow

from .fakes import BYTES_PER_TOKEN, EPOCH, STATION, answer_of, running_manager

SESSIONS = 5
DOWN_S = 1.0
"""Time one session's state takes down the shared link (the ground path takes it twice)."""
LEAD_MARGIN_S = 2.0
LOS_S = 40.0
SUCCESSOR_AOS_S = 20.0
PROMPT = "what is the orbit period"
NO_QUEUEING_S = 1.0
"""Slack on an interruption beyond export + transfer (fakes answer at once; wall scheduling at
20× speed costs simulated tenths of a second)."""


async def test_sessions_leaving_one_link_together_all_hand_off_before_los() -> None:
    """Five sessions on sat-a, whose pass ends at 40 s, each hold a state that takes 1 s down
    the link sat-a shares among them (exports queue) and 2 s modelled through the ground, with a
    2 s margin. Planned independently, all five would start at LOS − 4 s and queue on the link,
    so most would finish after LOS. With the per-link schedule every one is handed off to sat-b
    before LOS, and none waits for the link: each interruption is its own export plus its
    modelled transfer."""
    first = Turn(PROMPT, answer_of("sat-a", 0, PROMPT))
    rate_bps = first.tokens * BYTES_PER_TOKEN * 8 / DOWN_S
    settings = HandoffSettings(
        lead_margin_s=LEAD_MARGIN_S,
        min_dwell_s=5.0,
        ground_rate_bps=rate_bps,
        bytes_per_token={"chat": BYTES_PER_TOKEN},
    )
    passes = PassSchedule(
        [
            PassWindow(
                "sat-a", STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=LOS_S)
            ),
            PassWindow(
                "sat-b",
                STATION,
                EPOCH + timedelta(seconds=SUCCESSOR_AOS_S),
                EPOCH + timedelta(seconds=3600),
            ),
        ]
    )
    config = ManagerConfig(settings=settings, replan_interval_s=1.0)
    async with running_manager(passes, online=("sat-a", "sat-b"), config=config) as h:
        h.nodes.export_rate_bps = rate_bps
        ids = []
        for _ in range(SESSIONS):
            info = await h.manager.create_session("chat")
            assert info.satellite_id == "sat-a"
            await h.manager.send_turn(
                info.session_id, PROMPT, deadline=h.clock.now() + timedelta(seconds=10)
            )
            ids.append(info.session_id)
        await h.clock.sleep((EPOCH + timedelta(seconds=LOS_S + 5) - h.clock.now()).total_seconds())
        events = [e for e in h.manager.list_handoffs() if e.state == "completed"]
    assert sorted(e.subject_id for e in events) == sorted(ids)
    for event in events:
        assert (event.from_satellite, event.to_satellite) == ("sat-a", "sat-b")
        assert event.at < event.los, f"{event.subject_id} finished {event.at - event.los} late"
        assert event.interruption_s < DOWN_S + 2 * DOWN_S + NO_QUEUEING_S
