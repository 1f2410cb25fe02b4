"""The pure handoff planner and the store: plan times, successor choice, paths, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from groundplane.handoff.planner import (
    HandoffSettings,
    PassSchedule,
    PassWindow,
    PlanKind,
    TransferPath,
    plan_handoff,
    reserved_after_s,
)
from groundplane.handoff.store import ACTIVE, HandoffStore, SessionRecord, TurnRecord

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
SETTINGS = HandoffSettings(
    lead_margin_s=2.0, min_dwell_s=5.0, ground_rate_bps=1e8, isl_rate_bps=1e9
)


def window(sat: str, aos_s: float, los_s: float, station: str = "gs") -> PassWindow:
    return PassWindow(sat, station, T0 + timedelta(seconds=aos_s), T0 + timedelta(seconds=los_s))


def test_plan_time_is_los_minus_transfer_and_margin_and_successor_lasts_longest() -> None:
    """With 100 MB of state at 100 Mbit/s through the ground (8 s down + 8 s up) and a 2 s
    margin, the handoff off a pass ending at 100 s starts at 82 s, and of two successors in view
    the one with the longest remaining visibility is chosen."""
    current = window("a", 0, 100)
    short, long = window("b", 50, 130), window("c", 60, 200)
    plan = plan_handoff(current, [current, short, long], T0, 100_000_000, SETTINGS)
    assert plan.kind is PlanKind.HANDOFF
    assert plan.successor == long
    assert plan.path is TransferPath.GROUND
    assert abs(plan.transfer_s - 16.0) < 1e-9
    assert abs((plan.at - (T0 + timedelta(seconds=82))).total_seconds()) < 1e-6


def test_isl_in_view_shortens_the_transfer_and_delays_the_start() -> None:
    """When an inter-satellite link to the successor is in view, the state goes over it at the
    ISL rate (0.8 s for 100 MB at 1 Gbit/s), so the handoff starts 2.8 s before LOS."""
    current, successor = window("a", 0, 100), window("b", 50, 200)
    plan = plan_handoff(
        current,
        [current, successor],
        T0,
        100_000_000,
        SETTINGS,
        isl_in_view=lambda x, y, _at: {x, y} == {"a", "b"},
    )
    assert plan.path is TransferPath.ISL
    assert abs((plan.los - plan.at).total_seconds() - 2.8) < 1e-6


def test_no_successor_means_checkpoint_and_resume_at_next_aos() -> None:
    """A successor that sets before the transfer, margin and minimum dwell are over does not
    qualify: the plan is a checkpoint before LOS, resuming at the next pass's AOS; passes that do
    not serve the model (ineligible) are skipped."""
    current = window("a", 0, 100)
    brief, later, ineligible = window("b", 90, 104), window("c", 300, 400), window("d", 150, 400)
    schedule = PassSchedule([current, brief, later, ineligible])
    plan = plan_handoff(
        current,
        schedule.windows(T0, T0 + timedelta(hours=1)),
        T0,
        10_000_000,
        SETTINGS,
        eligible=lambda sat: sat != "d",
    )
    assert plan.kind is PlanKind.CHECKPOINT
    assert plan.resume == later
    assert plan.at < plan.los


def test_schedule_geometry_puts_links_up_only_during_windows() -> None:
    """The schedule's geometry provider reports a link exactly while its window covers the
    instant (AOS inclusive, LOS exclusive)."""
    schedule = PassSchedule([window("a", 10, 20)])
    provide = schedule.ground_geometry()
    at = [T0 + timedelta(seconds=s) for s in (9.999, 10, 19.999)] + [T0 + timedelta(seconds=20)]
    assert [("gs", "a") in provide(t) for t in at] == [False, True, True, False]


def test_store_survives_reopening(tmp_path: Path) -> None:
    """Sessions, turns, reserved epochs and events written by one store are read back by a new
    store on the same file, and a reserved epoch is never handed out twice."""
    path = tmp_path / "h.sqlite"
    first = HandoffStore(path)
    first.create_session(SessionRecord("s", "m", ACTIVE, "a", "gs", 0, 0, T0, None, T0))
    first.add_turn("s", TurnRecord(0, "t0", "hi", "ho", "a", 0, T0))
    assert first.reserve_epoch("s") == 1
    first.create_job("j", "m", 8, ["x", "y"], T0)
    assert first.complete_item("j", 1, "done", "a", T0)
    assert not first.complete_item("j", 1, "again", "a", T0)
    first.close()
    second = HandoffStore(path)
    assert second.session("s").satellite_id == "a"
    assert [t.answer for t in second.turns("s")] == ["ho"]
    assert second.reserve_epoch("s") == 2
    assert second.pending_items("j") == [(0, "x")]
    assert second.item_results("j") == {1: "done"}


def test_transfers_sharing_a_link_are_laid_back_to_back_ending_at_los_minus_margin() -> None:
    """Four sessions leave one pass over one link with 4, 8, 2 and 6 s transfers (ground path).
    Planned with the time reserved after each (session id order), their transfer windows do not
    overlap, follow one another without gaps, and the last ends at LOS − margin; the layout is
    the same whatever order the transfers were recorded in."""
    current, successor = window("a", 0, 100), window("b", 10, 300)
    sizes = {"s1": 25_000_000, "s2": 50_000_000, "s3": 12_500_000, "s4": 37_500_000}
    transfers = {sid: 2 * size * 8 / SETTINGS.ground_rate_bps for sid, size in sizes.items()}
    reversed_order = dict(reversed(list(transfers.items())))
    spans = []
    for sid, size in sizes.items():
        reserved_s = reserved_after_s(transfers, sid)
        assert reserved_s == reserved_after_s(reversed_order, sid)
        plan = plan_handoff(
            current, [current, successor], T0, size, SETTINGS, link_reserved_s=reserved_s
        )
        assert plan.kind is PlanKind.HANDOFF
        assert plan.successor == successor
        spans.append((plan.at, plan.at + timedelta(seconds=plan.transfer_s)))
    spans.sort()
    for (_, end), (start, _) in pairwise(spans):
        assert abs((start - end).total_seconds()) < 1e-6
    margin = timedelta(seconds=SETTINGS.lead_margin_s)
    assert abs((spans[-1][1] - (current.los - margin)).total_seconds()) < 1e-6


def test_a_reserved_slot_before_any_successor_rises_starts_when_one_rises() -> None:
    """When the time reserved on the link would start the handoff (at 50 s) before the only
    successor rises (at 70 s), the plan is still a handoff to it, starting at its AOS rather than
    a checkpoint; alone the same handoff would start at 82 s."""
    current, successor = window("a", 0, 100), window("b", 70, 300)
    alone = plan_handoff(current, [current, successor], T0, 100_000_000, SETTINGS)
    assert alone.at == T0 + timedelta(seconds=82)
    plan = plan_handoff(
        current, [current, successor], T0, 100_000_000, SETTINGS, link_reserved_s=32.0
    )
    assert plan.kind is PlanKind.HANDOFF
    assert plan.successor == successor
    assert plan.at == successor.aos
