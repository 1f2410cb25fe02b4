"""Run plot: requests per satellite, latency percentiles and swimlanes are the trace's numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch

from groundplane.handoff.store import HandoffEvent
from groundplane.kernel.errors import InvalidArgument
from groundplane.plots.run import (
    parse_summary,
    parse_trace,
    run_figure,
    session_segments,
    user_key,
)
from groundplane.system.report import Outcome, RunStats, TraceRecord, write_summary, write_trace

from .figures import artist, artists

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
USERS = ((51.5, -0.12), (-33.9, 18.4), (35.7, 139.7))
SATELLITES = ("25544", "20580", "48274")


def _num(moment: datetime) -> float:
    return float(mdates.date2num(moment))  # type: ignore[no-untyped-call]  # untyped module


def _records() -> list[TraceRecord]:
    """A deterministic load: 300 requests over 5 minutes, three users, satellites that change
    every 100 s, every seventh request rejected, latencies that grow with time."""
    records = []
    for n in range(300):
        at = T0 + timedelta(seconds=n)
        lat, lon = USERS[n % 3]
        rejected = n % 7 == 0
        satellite = "" if rejected else SATELLITES[(n // 100 + n % 3) % 3]
        records.append(
            TraceRecord(
                request_id=f"r{n}",
                submitted_at=at,
                completed_at=at + timedelta(seconds=0.2),
                status=Outcome.REJECTED_UNAVAILABLE if rejected else Outcome.OK,
                user_lat=lat,
                user_lon=lon,
                station="" if rejected else "3",
                satellite=satellite,
                attempts=1,
                latency_ms=10.0 + n * 0.5 + (n % 10),
                next_opportunity=at + timedelta(minutes=5) if rejected else None,
            )
        )
    return records


def _nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _written(tmp_path: Path) -> tuple[list[TraceRecord], dict[str, object]]:
    """The records and summary after a round trip through the writers `groundplane up` uses."""
    stats = RunStats()
    for record in _records():
        stats.submitted += 1
        stats.record(record)
    stats.handoffs.planned, stats.handoffs.completed = 4, 3
    write_trace(tmp_path / "trace.jsonl", stats.trace)
    write_summary(tmp_path / "summary.json", stats)
    records = parse_trace((tmp_path / "trace.jsonl").read_text())
    summary = parse_summary((tmp_path / "summary.json").read_text())
    return records, summary


def test_trace_round_trips_through_the_writer_of_up(tmp_path: Path) -> None:
    """parse_trace reads back what write_trace wrote: same requests, times to the millisecond,
    latencies to the microsecond, the UNAVAILABLE next opportunity included."""
    records, _ = _written(tmp_path)
    original = _records()
    assert len(records) == len(original)
    for back, sent in zip(records, original, strict=True):
        assert back.request_id == sent.request_id
        assert back.status is sent.status
        assert back.satellite == sent.satellite
        assert back.submitted_at == sent.submitted_at
        assert back.latency_ms == pytest.approx(sent.latency_ms, abs=1e-3)
        assert back.next_opportunity == sent.next_opportunity


def test_requests_panel_counts_each_satellites_requests_per_bin(tmp_path: Path) -> None:
    """Each satellite's stairs hold its served requests per time bin (5 s: the smallest round
    width giving at most 60 bins over the 5 minutes),
    the not-served stairs the rejected ones; together they count every traced request."""
    records, summary = _written(tmp_path)
    figure = run_figure(records, summary)
    stairs = artists(figure, "requests:")
    total = 0
    for gid, patch in stairs.items():
        assert isinstance(patch, StepPatch)
        values, edges, _baseline = patch.get_data()
        assert edges[1] - edges[0] == pytest.approx(5.0 / 86_400.0)
        assert edges[0] == pytest.approx(_num(T0))
        key = gid.split(":", 1)[1]
        expected = np.zeros(len(values), dtype=int)
        for record in records:
            served = record.status is Outcome.OK
            if (key == "not-served" and not served) or (served and record.satellite == key):
                expected[int((record.submitted_at - T0).total_seconds() // 5)] += 1
        np.testing.assert_array_equal(values, expected)
        total += int(np.sum(values))
    assert set(stairs) == {f"requests:{s}" for s in SATELLITES} | {"requests:not-served"}
    assert total == len(records)


def test_latency_panel_is_the_nearest_rank_percentiles_per_bin_and_the_summarys(
    tmp_path: Path,
) -> None:
    """p50, p90 and p99 points are the nearest-rank percentiles of each bin's served latencies,
    at the bin centres; the dashed lines are the summary's whole-run p50 and p99."""
    records, summary = _written(tmp_path)
    figure = run_figure(records, summary)
    bins: dict[int, list[float]] = {}
    for record in records:
        if record.status is Outcome.OK:
            index = int((record.submitted_at - T0).total_seconds() // 5)
            bins.setdefault(index, []).append(record.latency_ms)
    centres = [_num(T0 + timedelta(seconds=5 * i + 2.5)) for i in sorted(bins)]
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        line = artist(figure, f"latency:{name}")
        assert isinstance(line, Line2D)
        np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), centres, atol=1e-9)
        expected = [_nearest_rank(bins[i], fraction) for i in sorted(bins)]
        np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), expected)
    latency = summary["requests"]
    assert isinstance(latency, dict)
    for name in ("p50", "p99"):
        line = artist(figure, f"summary:{name}")
        assert isinstance(line, Line2D)
        ys = np.asarray(line.get_ydata(), dtype=float)
        np.testing.assert_array_equal(ys, [latency["latency_ms"][name]] * 2)


def test_user_lanes_show_each_users_served_requests_and_satellite_changes(
    tmp_path: Path,
) -> None:
    """Without handoff events: one lane per user location with a dot per served request (in
    time order) and a tick at each request served by another satellite than the user's
    previous one; the title says the trace has no sessions or handoffs."""
    records, summary = _written(tmp_path)
    figure = run_figure(records, summary)
    lanes_ax = figure.axes[2]
    assert "no session turns or handoff events" in lanes_ax.get_title(loc="left")
    assert "3 planned" not in lanes_ax.get_title(loc="left")
    assert "4 planned, 3 completed" in figure.get_suptitle()
    for lat, lon in USERS:
        served = [
            r for r in records if r.status is Outcome.OK and (r.user_lat, r.user_lon) == (lat, lon)
        ]
        key = user_key(served[0])
        dots = artist(figure, f"lane:{key}")
        assert isinstance(dots, PathCollection)
        offsets = np.asarray(dots.get_offsets(), dtype=float)
        np.testing.assert_allclose(offsets[:, 0], [_num(r.submitted_at) for r in served], atol=1e-9)
        changes = [b.submitted_at for a, b in pairwise(served) if a.satellite != b.satellite]
        ticks = artist(figure, f"change:{key}")
        assert isinstance(ticks, Line2D)
        np.testing.assert_allclose(
            np.asarray(ticks.get_xdata(), dtype=float), [_num(t) for t in changes], atol=1e-9
        )
        assert changes  # the synthetic load changes satellites every 100 s


def _event(session: str, state: str, at_s: float, old: str, new: str) -> HandoffEvent:
    at = T0 + timedelta(seconds=at_s)
    return HandoffEvent(
        "session",
        session,
        state,
        at,
        at,
        at + timedelta(minutes=5),
        old,
        "3",
        new,
        "4",
        "ground",
        1000,
        0.5,
    )


EVENTS = [
    _event("s1", "planned", 10, "25544", "20580"),
    _event("s1", "completed", 90, "25544", "20580"),
    _event("s1", "planned", 150, "20580", "48274"),
    _event("s1", "failed", 200, "20580", "48274"),
    _event("s1", "completed", 230, "20580", "48274"),
    _event("s2", "planned", 20, "48274", ""),
    _event("s2", "checkpointed", 60, "48274", ""),
    _event("s2", "resumed", 120, "", "25544"),
]


def test_session_segments_follow_completed_resumed_and_checkpointed_events() -> None:
    """A session stays on its satellite through planned/failed events, moves at completed and
    resumed ones, and is on the ground ("") between a checkpoint and its resume."""
    end = T0 + timedelta(seconds=300)
    lanes = session_segments(EVENTS, end)
    s1 = [
        (s.satellite, (s.start - T0).total_seconds(), (s.end - T0).total_seconds())
        for s in lanes["s1"]
    ]
    assert s1 == [("25544", 10, 90), ("20580", 90, 230), ("48274", 230, 300)]
    s2 = [
        (s.satellite, (s.start - T0).total_seconds(), (s.end - T0).total_seconds())
        for s in lanes["s2"]
    ]
    assert s2 == [("48274", 20, 60), ("", 60, 120), ("25544", 120, 300)]


def test_session_lanes_and_handoff_markers_come_from_the_handoff_events(tmp_path: Path) -> None:
    """Given handoff events: a lane per session whose bars are its serving segments, a marker
    at every completed and every failed handoff on its session's lane."""
    records, summary = _written(tmp_path)
    figure = run_figure(records, summary, EVENTS)
    end = max(r.completed_at for r in records)
    for session, segments in session_segments(EVENTS, end).items():
        bars = artist(figure, f"lane:{session}")
        assert isinstance(bars, PolyCollection)
        corners = [np.asarray(path.vertices, dtype=float)[:, 0] for path in bars.get_paths()]
        spans = [(float(xs.min()), float(xs.max())) for xs in corners]
        expected = [(_num(s.start), _num(s.end)) for s in segments]
        np.testing.assert_allclose(spans, expected, atol=1e-9)
    completed = artist(figure, "handoff:completed")
    failed = artist(figure, "handoff:failed")
    assert isinstance(completed, Line2D)
    assert isinstance(failed, Line2D)
    done = [e for e in EVENTS if e.state == "completed"]
    completed_x = np.asarray(completed.get_xdata(), dtype=float)
    np.testing.assert_allclose(np.sort(completed_x), sorted(_num(e.at) for e in done), atol=1e-9)
    np.testing.assert_allclose(np.asarray(failed.get_xdata(), dtype=float), [_num(EVENTS[3].at)])
    np.testing.assert_array_equal(np.asarray(failed.get_ydata()), [0])  # s1's lane


def test_bad_trace_and_summary_lines_name_the_line_and_the_format() -> None:
    """A line that is not JSON, a record without its fields and an unknown status are refused
    with the line number and what `up --trace` writes; a summary without its objects too."""
    with pytest.raises(InvalidArgument, match=r"trace line 2: expected one JSON object"):
        parse_trace('\n{"oops"\n')
    with pytest.raises(InvalidArgument, match=r"line 1: a trace record needs .* missing"):
        parse_trace('{"request_id": "x"}')
    good = _records()[1].to_json()
    with pytest.raises(InvalidArgument, match=r"line 1: status must be one of"):
        parse_trace(str({**good, "status": "lost"}).replace("'", '"'))
    with pytest.raises(InvalidArgument, match=r"'requests' and 'handoffs'"):
        parse_summary('{"requests": {}}')
    with pytest.raises(InvalidArgument, match="no requests"):
        run_figure([])
