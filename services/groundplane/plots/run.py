"""What a ``groundplane up`` run did, from its trace (``--trace``) and summary (``--summary``).

Three panels over the run's simulated UTC time:

1. requests served per satellite per time bin (the busiest satellites; the rest as "other"), and
   the requests not served (failed, unavailable, overload);
2. latency percentiles (p50, p90, p99, nearest rank, wall milliseconds) of the served requests per
   bin, with the summary's whole-run p50 and p99 as dashed lines;
3. a swimlane of serving satellites. The trace holds the load's stateless requests only: it has no
   session turns and no handoff events, so by default each lane is a ground user (a location of
   the trace) and each dot a served request coloured by its satellite, with a tick where the
   user's serving satellite changed (a routing change, not a handoff). Given the handoff
   manager's events (``up --data-dir DIR`` keeps them in ``DIR/handoff.sqlite``), the lanes are
   sessions instead: bars of the satellite serving the session between handoffs, and every
   completed or failed handoff drawn as a marker on its lane and on the other panels.

The summary's handoff counts are written in the title either way.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from groundplane.handoff.store import HandoffEvent
from groundplane.kernel.errors import InvalidArgument
from groundplane.plots.dates import date_num, date_nums, utc_date_axis
from groundplane.system.report import Outcome, TraceRecord, percentile

TOP_SATELLITES = 8
"""Satellites drawn on their own in the request panel; the rest are summed as "other"."""
MAX_LANES = 24
"""Swimlanes drawn at most (the users or sessions with the most requests or events)."""
TARGET_BINS = 60
_BIN_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def parse_trace(text: str, source: str = "trace") -> list[TraceRecord]:
    """Trace records of ``up --trace`` (one JSON object per line; blank lines are skipped)."""
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as bad:
            raise InvalidArgument(
                f"{source} line {line_no}: expected one JSON object per line (the format "
                f"`groundplane up --trace` writes), got invalid JSON: {bad.msg}"
            ) from None
        try:
            records.append(TraceRecord.from_json(data))
        except InvalidArgument as bad:
            raise InvalidArgument(f"{source} line {line_no}: {bad}") from None
    return records


def parse_summary(text: str, source: str = "summary") -> dict[str, Any]:
    """The summary object of ``up --summary`` (checked for its ``requests`` and ``handoffs``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as bad:
        raise InvalidArgument(
            f"{source}: expected the JSON object `groundplane up --summary` writes, got invalid "
            f"JSON: {bad.msg} (line {bad.lineno})"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), dict) for key in ("requests", "handoffs")
    ):
        raise InvalidArgument(
            f"{source}: expected an object with 'requests' and 'handoffs' objects (the format "
            "`groundplane up --summary` writes)"
        )
    return data


def bin_width_s(start: datetime, end: datetime) -> float:
    """The smallest round bin width giving at most :data:`TARGET_BINS` bins over the span."""
    span_s = (end - start).total_seconds()
    for step in _BIN_STEPS_S:
        if span_s / step <= TARGET_BINS:
            return float(step)
    return float(_BIN_STEPS_S[-1])


@dataclass(frozen=True)
class Bins:
    """Time bins ``[edges[i], edges[i + 1])`` (matplotlib date numbers) and each record's bin."""

    edges: np.ndarray[Any, np.dtype[np.float64]]
    index: np.ndarray[Any, np.dtype[np.intp]]

    @property
    def count(self) -> int:
        return int(self.edges.size - 1)


def time_bins(records: Sequence[TraceRecord]) -> Bins:
    """Bins of :func:`bin_width_s` from the first submission; every record falls in one."""
    first = min(r.submitted_at for r in records)
    last = max(r.submitted_at for r in records)
    width_s = bin_width_s(first, last)
    count = max(1, math.floor((last - first).total_seconds() / width_s) + 1)
    edges = date_nums([first + timedelta(seconds=i * width_s) for i in range(count + 1)])
    offsets = np.array([(r.submitted_at - first).total_seconds() for r in records])
    index = np.minimum((offsets // width_s).astype(np.intp), count - 1)
    return Bins(np.asarray(edges, dtype=np.float64), index)


def busiest_satellites(records: Sequence[TraceRecord], top: int = TOP_SATELLITES) -> list[str]:
    """Satellites that served the most requests (ties by id), at most ``top``."""
    served = Counter(r.satellite for r in records if r.status is Outcome.OK and r.satellite)
    return [sat for sat, _ in sorted(served.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def user_key(record: TraceRecord) -> str:
    """The ground user of a trace record: its location (the trace has no user id)."""
    return f"{record.user_lat:.4f},{record.user_lon:.4f}"


def run_figure(
    records: Sequence[TraceRecord],
    summary: Mapping[str, Any] | None = None,
    handoffs: Sequence[HandoffEvent] = (),
    *,
    title: str = "",
) -> Figure:
    """The three panels of a run (see the module documentation).

    Artists: ``requests:<sat>``, ``requests:other``, ``requests:not-served`` (stairs of counts
    per bin), ``latency:p50|p90|p99`` (one point per bin with served requests, at the bin's
    centre), ``summary:p50|p99`` (horizontal lines), ``lane:<key>`` (one lane's dots or bars),
    ``change:<key>`` (satellite changes of a user lane), ``handoff:<state>`` (markers).
    """
    if not records:
        raise InvalidArgument("the trace has no requests: nothing to plot (was --rate 0?)")
    figure = Figure(figsize=(10.0, 9.0), layout="constrained")
    requests_ax, latency_ax, lanes_ax = figure.subplots(
        3, 1, sharex=True, height_ratios=(1.0, 1.0, 1.3)
    )
    bins = time_bins(records)
    top = busiest_satellites(records)
    colour_of = {sat: f"C{i % 10}" for i, sat in enumerate(top)}
    for event in handoffs:  # satellites serving sessions get colours of their own too
        for sat in (event.from_satellite, event.to_satellite):
            if sat and sat not in colour_of:
                colour_of[sat] = f"C{len(colour_of) % 10}"
    _requests_panel(requests_ax, records, bins, top, colour_of)
    _latency_panel(latency_ax, records, bins, summary)
    if handoffs:
        _session_lanes(lanes_ax, handoffs, records, colour_of)
    else:
        _user_lanes(lanes_ax, records, colour_of)
    _handoff_markers((requests_ax, latency_ax), handoffs)
    utc_date_axis(lanes_ax.xaxis)
    lanes_ax.set_xlabel("simulated UTC")
    lanes_ax.set_xlim(float(bins.edges[0]), float(bins.edges[-1]))
    figure.suptitle(title or _title(records, summary), fontsize=10)
    return figure


def _title(records: Sequence[TraceRecord], summary: Mapping[str, Any] | None) -> str:
    served = sum(1 for r in records if r.status is Outcome.OK)
    text = f"groundplane up: {len(records)} traced requests, {served} served"
    if summary is not None:
        h = summary["handoffs"]
        text += (
            f"\nhandoffs (summary): {h.get('planned', 0)} planned, {h.get('completed', 0)} "
            f"completed, {h.get('failed', 0)} failed, {h.get('checkpointed', 0)} checkpointed, "
            f"{h.get('resumed', 0)} resumed"
        )
    return text


def _requests_panel(
    ax: Axes,
    records: Sequence[TraceRecord],
    bins: Bins,
    top: Sequence[str],
    colour_of: Mapping[str, str],
) -> None:
    counts: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {}
    for key in (*top, "other", "not-served"):
        counts[key] = np.zeros(bins.count, dtype=np.int64)
    wanted = set(top)
    for record, b in zip(records, bins.index.tolist(), strict=True):
        if record.status is not Outcome.OK:
            key = "not-served"
        elif record.satellite in wanted:
            key = record.satellite
        else:
            key = "other"
        counts[key][b] += 1
    for key, values in counts.items():
        if key in ("other", "not-served") and not values.any():
            continue
        colour = {"other": "0.55", "not-served": "k"}.get(key, colour_of.get(key, "0.55"))
        style = ":" if key == "not-served" else "-"
        label = "not served" if key == "not-served" else key
        ax.stairs(
            values, bins.edges, color=colour, linestyle=style, label=label, gid=f"requests:{key}"
        )
    width_s = round((bins.edges[1] - bins.edges[0]) * 86_400.0)
    ax.set_ylabel(f"requests per {width_s:g} s")
    ax.set_title("requests served per satellite", fontsize=9, loc="left")
    ax.legend(fontsize=6, ncols=5, loc="upper right")


def _latency_panel(
    ax: Axes, records: Sequence[TraceRecord], bins: Bins, summary: Mapping[str, Any] | None
) -> None:
    per_bin: list[list[float]] = [[] for _ in range(bins.count)]
    for record, b in zip(records, bins.index.tolist(), strict=True):
        if record.status is Outcome.OK:
            per_bin[b].append(record.latency_ms)
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2.0
    filled = [i for i, values in enumerate(per_bin) if values]
    for (name, fraction), marker in zip(PERCENTILES, ("o", "s", "^"), strict=True):
        ax.plot(
            centres[filled],
            [percentile(per_bin[i], fraction) for i in filled],
            marker=marker,
            markersize=3,
            linewidth=0.8,
            label=name,
            gid=f"latency:{name}",
        )
    if summary is not None:
        latency = summary["requests"].get("latency_ms", {})
        for name, style in (("p50", "--"), ("p99", "-.")):
            value = latency.get(name)
            if value is not None:
                ax.axhline(
                    value,
                    color="0.4",
                    linestyle=style,
                    linewidth=0.8,
                    label=f"run {name} {value:g} ms",
                    gid=f"summary:{name}",
                )
    ax.set_ylabel("latency (wall ms)")
    ax.set_title("latency of served requests", fontsize=9, loc="left")
    ax.legend(fontsize=6, ncols=5, loc="upper right")


def _user_lanes(ax: Axes, records: Sequence[TraceRecord], colour_of: Mapping[str, str]) -> None:
    served = [r for r in records if r.status is Outcome.OK and r.satellite]
    by_user: dict[str, list[TraceRecord]] = {}
    for record in sorted(served, key=lambda r: r.submitted_at):
        by_user.setdefault(user_key(record), []).append(record)
    lanes = sorted(by_user, key=lambda k: (-len(by_user[k]), k))[:MAX_LANES]
    for y, key in enumerate(lanes):
        lane = by_user[key]
        times = date_nums([r.submitted_at for r in lane])
        colours = [colour_of.get(r.satellite, "0.55") for r in lane]
        ax.scatter(times, np.full(len(lane), y), c=colours, s=6, gid=f"lane:{key}")
        changes = [
            t
            for t, previous, record in zip(times[1:], lane[:-1], lane[1:], strict=True)
            if record.satellite != previous.satellite
        ]
        if changes:
            ax.plot(changes, [y] * len(changes), "|", color="k", markersize=9, gid=f"change:{key}")
    ax.set_yticks(range(len(lanes)), lanes, fontsize=6)
    ax.set_ylim(max(len(lanes), 1) - 0.5, -0.5)
    shown = f"{len(lanes)} of {len(by_user)}" if len(by_user) > len(lanes) else f"{len(lanes)}"
    ax.set_title(
        f"serving satellite per user location ({shown}; dots coloured as above, ticks: "
        "satellite changes; the trace has no session turns or handoff events)",
        fontsize=9,
        loc="left",
    )


@dataclass(frozen=True)
class LaneSegment:
    """A session served by ``satellite`` (``""``: on the ground) from ``start`` to ``end``."""

    satellite: str
    start: datetime
    end: datetime


def session_segments(events: Sequence[HandoffEvent], end: datetime) -> dict[str, list[LaneSegment]]:
    """Per session, the satellites that served it between its handoff events, up to ``end``.

    A session's lane starts at its first event on that event's ``from_satellite``; a
    ``completed`` or ``resumed`` event moves it to ``to_satellite``, a ``checkpointed`` event
    parks it on the ground (``""``). Other states (``planned``, ``started``, ``failed``) leave it
    where it was.
    """
    by_session: dict[str, list[HandoffEvent]] = {}
    for event in sorted(events, key=lambda e: (e.at, e.event_id)):
        if event.subject_kind == "session":
            by_session.setdefault(event.subject_id, []).append(event)
    lanes: dict[str, list[LaneSegment]] = {}
    for session_id, session_events in by_session.items():
        segments: list[LaneSegment] = []
        satellite, since = session_events[0].from_satellite, session_events[0].at
        for event in session_events:
            moved_to = {
                "completed": event.to_satellite,
                "resumed": event.to_satellite,
                "checkpointed": "",
            }.get(event.state)
            if moved_to is None or moved_to == satellite:
                continue
            if event.at > since:
                segments.append(LaneSegment(satellite, since, event.at))
            satellite, since = moved_to, event.at
        if end > since:
            segments.append(LaneSegment(satellite, since, end))
        lanes[session_id] = segments
    return lanes


def _session_lanes(
    ax: Axes,
    events: Sequence[HandoffEvent],
    records: Sequence[TraceRecord],
    colour_of: Mapping[str, str],
) -> None:
    end = max([r.completed_at for r in records] + [e.at for e in events])
    lanes = session_segments(events, end)
    shown = sorted(lanes)[:MAX_LANES]
    for y, session_id in enumerate(shown):
        spans = [
            (date_num(s.start), date_num(s.end) - date_num(s.start)) for s in lanes[session_id]
        ]
        colours = [
            colour_of.get(s.satellite, "0.55") if s.satellite else "white"
            for s in lanes[session_id]
        ]
        ax.broken_barh(
            spans,
            (y - 0.35, 0.7),
            facecolors=colours,
            edgecolors="0.3",
            linewidth=0.3,
            gid=f"lane:{session_id}",
        )
        for segment, (left, width) in zip(lanes[session_id], spans, strict=True):
            ax.text(
                left + width / 2.0,
                y,
                segment.satellite or "ground",
                ha="center",
                va="center",
                fontsize=5,
                clip_on=True,
            )
    row_of = {session_id: y for y, session_id in enumerate(shown)}
    for state, marker, colour in (("completed", "v", "k"), ("failed", "x", "r")):
        points = [
            (date_num(e.at), row_of[e.subject_id])
            for e in events
            if e.state == state and e.subject_id in row_of
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker, color=colour, markersize=5, gid=f"handoff:{state}")
    ax.set_yticks(range(len(shown)), [s[-24:] for s in shown], fontsize=6)
    ax.set_ylim(max(len(shown), 1) - 0.5, -0.5)
    count = f"{len(shown)} of {len(lanes)}" if len(lanes) > len(shown) else f"{len(shown)}"
    ax.set_title(
        f"serving satellite per session ({count}; ▼ handoff completed, x failed)",
        fontsize=9,
        loc="left",
    )


def _handoff_markers(axes: Sequence[Axes], events: Sequence[HandoffEvent]) -> None:
    moments = [date_num(e.at) for e in events if e.state in ("completed", "failed")]
    for ax in axes:
        for moment in moments:
            ax.axvline(moment, color="0.6", linewidth=0.5, linestyle=":", zorder=0)
