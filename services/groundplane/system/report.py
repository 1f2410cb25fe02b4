"""What a run of the system produced: counters, latency percentiles, the summary and the trace.

The summary (``--summary FILE``) is one JSON object::

    {"requests": {"submitted", "succeeded", "failed", "rejected_unavailable",
                  "rejected_overload", "latency_ms": {"p50", "p99"},
                  "unavailable_reasons": {reason: count}},
     "handoffs": {"planned", "completed", "failed", "checkpointed", "resumed"},
     "sessions": {"turns", "failed_turns", "context_mismatches"},
     "jobs": {"items", "completed_items", "duplicate_items"},
     "processes": {"restarts", "by_service": {service: restarts}}}

``unavailable_reasons`` counts the UNAVAILABLE requests by the reason the gateway gave
(:func:`unavailable_reason` of the status details, most frequent first; their counts add up to
``rejected_unavailable``). ``handoffs`` counts the handoff manager's recorded events of this run
(sessions and jobs): ``planned`` plans made (one per serving assignment of a session), ``completed``
moves to a successor that finished (a job moving to another satellite counts too), ``failed`` moves
that failed (the session stayed where it was and was moved again), ``checkpointed`` states parked on
the ground for lack of a successor, ``resumed`` sessions brought back from such a checkpoint.
``sessions`` counts the turns of the load's sessions (a turn failed when no answer came after its
retries; a context mismatch is an answer that differs from the synthetic model's answer over the
session's whole context). ``jobs``: items submitted, items with a kept result, and items the nodes
executed more than once (counted at the node backends). ``processes``: how many times the
supervisor of a multi-process ``up`` restarted a child that died, in all and per service (0 and
``{}`` for ``--in-process``). The trace (``--trace FILE``) is one JSON
object per request and line (:class:`TraceRecord`), times in simulated UTC.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from groundplane.kernel.clock import format_utc, parse_utc
from groundplane.kernel.errors import InvalidArgument
from groundplane.node.directory import NodeDirectory
from groundplane.node.v1 import node_pb2


class Outcome(Enum):
    """How one request ended, as the load client saw it."""

    OK = "ok"
    FAILED = "failed"
    REJECTED_UNAVAILABLE = "rejected_unavailable"
    REJECTED_OVERLOAD = "rejected_overload"


TRACE_KEYS = (
    "request_id",
    "submitted_at",
    "completed_at",
    "status",
    "user_lat",
    "user_lon",
    "station",
    "satellite",
    "attempts",
    "latency_ms",
)
"""The keys every trace record has (``next_opportunity``, ``detail`` and ``trace_id`` only when
set)."""


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One request of the load.

    ``request_id`` is the gateway's request id when the gateway answered, else the load's own id.
    ``station`` and ``satellite`` are empty unless the request was served. ``latency_ms`` is wall
    time seen by the client. ``next_opportunity`` is the AOS the gateway announced with
    UNAVAILABLE (``None`` otherwise); ``detail`` the error message of a failed request.
    ``trace_id`` is the request's OpenTelemetry trace id (32 hex digits) when the run traced
    (always with ``up --trace``), the id the services' spans of that request carry.
    """

    request_id: str
    submitted_at: datetime
    completed_at: datetime
    status: Outcome
    user_lat: float
    user_lon: float
    station: str
    satellite: str
    attempts: int
    latency_ms: float
    next_opportunity: datetime | None = None
    detail: str = ""
    trace_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "submitted_at": format_utc(self.submitted_at),
            "completed_at": format_utc(self.completed_at),
            "status": self.status.value,
            "user_lat": self.user_lat,
            "user_lon": self.user_lon,
            "station": self.station,
            "satellite": self.satellite,
            "attempts": self.attempts,
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.next_opportunity is not None:
            data["next_opportunity"] = format_utc(self.next_opportunity)
        if self.detail:
            data["detail"] = self.detail
        if self.trace_id:
            data["trace_id"] = self.trace_id
        return data

    @classmethod
    def from_json(cls, data: object) -> TraceRecord:
        """The record :meth:`to_json` wrote (one line of ``up --trace``); InvalidArgument naming
        what is missing or malformed."""
        missing = [key for key in TRACE_KEYS if not isinstance(data, dict) or key not in data]
        if missing or not isinstance(data, dict):
            raise InvalidArgument(
                f"a trace record needs {', '.join(TRACE_KEYS)}; missing {', '.join(missing)}"
            )
        statuses = {o.value: o for o in Outcome}
        if data["status"] not in statuses:
            raise InvalidArgument(
                f"status must be one of {sorted(statuses)}, got {data['status']!r}"
            )
        try:
            opportunity = data.get("next_opportunity")
            return cls(
                request_id=str(data["request_id"]),
                submitted_at=parse_utc(data["submitted_at"]),
                completed_at=parse_utc(data["completed_at"]),
                status=statuses[data["status"]],
                user_lat=float(data["user_lat"]),
                user_lon=float(data["user_lon"]),
                station=str(data["station"]),
                satellite=str(data["satellite"]),
                attempts=int(data["attempts"]),
                latency_ms=float(data["latency_ms"]),
                next_opportunity=parse_utc(opportunity) if opportunity else None,
                detail=str(data.get("detail", "")),
                trace_id=str(data.get("trace_id", "")),
            )
        except (ValueError, TypeError, AttributeError) as bad:
            raise InvalidArgument(str(bad)) from None


UNAVAILABLE_REASONS: tuple[tuple[str, str], ...] = (
    # (words of the gateway's or routing's UNAVAILABLE details, the reason shown)
    (
        "no satellite is visible from a reachable ground station",
        "no satellite in view of the user's station",
    ),
    ("no ground station within", "no ground station within backhaul reach of the user"),
    ("candidates excluded", "every satellite in view excluded by routing"),
    ("has no route table yet", "the gateway has no route table yet"),
    ("no satellite could serve the request after", "every satellite tried failed"),
    ("went down during the request", "the link went down during the request"),
    ("could not continue the same answer", "the answer moved to a satellite that diverged"),
    ("stopped before it finished", "the first caller of the idempotency key went away"),
)
"""Known UNAVAILABLE details of the gateway (``groundplane.gateway.service``) and routing
(``groundplane.routing.policy`` and ``.table``), in the order they are tried."""
OTHER_UNAVAILABLE = "other (the details are in --trace)"


def unavailable_reason(detail: str) -> str:
    """The short reason of an UNAVAILABLE request from the status details the gateway sent.

    The details carry ids, distances and times; the reason names only the cause, so requests can
    be counted by it. Details matching none of :data:`UNAVAILABLE_REASONS` give
    :data:`OTHER_UNAVAILABLE`.
    """
    for words, reason in UNAVAILABLE_REASONS:
        if words in detail:
            return reason
    return OTHER_UNAVAILABLE


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class SessionCounters:
    turns: int = 0
    failed_turns: int = 0
    context_mismatches: int = 0


@dataclass
class HandoffCounters:
    planned: int = 0
    completed: int = 0
    failed: int = 0
    checkpointed: int = 0
    resumed: int = 0

    def count(self, state: str) -> None:
        """Count one handoff event by its state (``started`` and others are not counted)."""
        if state in ("planned", "completed", "failed", "checkpointed", "resumed"):
            setattr(self, state, getattr(self, state) + 1)


@dataclass
class JobCounters:
    items: int = 0
    completed_items: int = 0
    duplicate_items: int = 0


@dataclass
class ProcessCounters:
    """Restarts of the child processes of a multi-process run (none in-process)."""

    restarts: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


@dataclass
class EnergyCounters:
    """The nodes' energy (``up --energy``), totalled from their latest reports."""

    battery_wh_drawn: float = 0.0
    compute_battery_wh: float = 0.0
    min_soc: float = 1.0
    nodes_below_reserve: int = 0
    served_in_eclipse: int = 0
    thermal_throttle_s: float = 0.0
    in_eclipse: int = 0
    nodes: int = 0

    @classmethod
    def of(cls, reports: Iterable[node_pb2.NodeEnergy]) -> EnergyCounters:
        out = cls()
        for energy in reports:
            out.nodes += 1
            out.battery_wh_drawn += energy.battery_drawn_wh
            out.compute_battery_wh += energy.compute_battery_wh
            out.min_soc = min(out.min_soc, energy.min_soc)
            out.nodes_below_reserve += 1 if energy.below_reserve_s > 0 else 0
            out.served_in_eclipse += energy.served_in_eclipse
            out.thermal_throttle_s += energy.throttled_s
            out.in_eclipse += 1 if energy.sunlit_fraction < 0.5 else 0
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "battery_wh_drawn": round(self.battery_wh_drawn, 3),
            "compute_battery_wh": round(self.compute_battery_wh, 3),
            "min_soc": round(self.min_soc, 4),
            "nodes_below_reserve": self.nodes_below_reserve,
            "served_in_eclipse": self.served_in_eclipse,
            "thermal_throttle_s": round(self.thermal_throttle_s, 1),
            "nodes_reporting": self.nodes,
        }


def energy_counters(directory: NodeDirectory) -> EnergyCounters:
    """The energy totals of every node whose latest load report carries its energy."""
    return EnergyCounters.of(
        view.load.energy
        for view in directory.nodes()
        if view.load is not None and view.load.HasField("energy")
    )


@dataclass
class RunStats:
    """Counters of a run, updated by the load as requests finish."""

    submitted: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    latencies_ms: list[float] = field(default_factory=list)
    sessions: SessionCounters = field(default_factory=SessionCounters)
    handoffs: HandoffCounters = field(default_factory=HandoffCounters)
    jobs: JobCounters = field(default_factory=JobCounters)
    processes: ProcessCounters = field(default_factory=ProcessCounters)
    trace: list[TraceRecord] = field(default_factory=list)
    energy: EnergyCounters | None = None
    """With ``up --energy``: the nodes' energy, refreshed with the other counters."""
    keep_trace: bool = True
    unavailable_reasons: Counter[str] = field(default_factory=Counter)
    """UNAVAILABLE requests by :func:`unavailable_reason` of their details."""

    def record(self, record: TraceRecord) -> None:
        self.outcomes[record.status] += 1
        if record.status is Outcome.REJECTED_UNAVAILABLE:
            self.unavailable_reasons[unavailable_reason(record.detail)] += 1
        if record.status is Outcome.OK:
            self.latencies_ms.append(record.latency_ms)
        if self.keep_trace:
            self.trace.append(record)

    @property
    def succeeded(self) -> int:
        return self.outcomes[Outcome.OK]

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values())

    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    def summary(self) -> dict[str, Any]:
        def ms(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 3)

        return {
            "requests": {
                "submitted": self.submitted,
                "succeeded": self.outcomes[Outcome.OK],
                "failed": self.outcomes[Outcome.FAILED],
                "rejected_unavailable": self.outcomes[Outcome.REJECTED_UNAVAILABLE],
                "rejected_overload": self.outcomes[Outcome.REJECTED_OVERLOAD],
                "latency_ms": {
                    "p50": ms(percentile(self.latencies_ms, 0.50)),
                    "p99": ms(percentile(self.latencies_ms, 0.99)),
                },
                "unavailable_reasons": dict(self.unavailable_reasons.most_common()),
            },
            "handoffs": {
                "planned": self.handoffs.planned,
                "completed": self.handoffs.completed,
                "failed": self.handoffs.failed,
                "checkpointed": self.handoffs.checkpointed,
                "resumed": self.handoffs.resumed,
            },
            "sessions": {
                "turns": self.sessions.turns,
                "failed_turns": self.sessions.failed_turns,
                "context_mismatches": self.sessions.context_mismatches,
            },
            "jobs": {
                "items": self.jobs.items,
                "completed_items": self.jobs.completed_items,
                "duplicate_items": self.jobs.duplicate_items,
            },
            "processes": {
                "restarts": self.processes.restarts,
                "by_service": dict(self.processes.by_service),
            },
            **({} if self.energy is None else {"energy": self.energy.summary()}),
        }


def write_summary(path: Path, stats: RunStats) -> None:
    path.write_text(json.dumps(stats.summary(), indent=2) + "\n", encoding="utf-8")


def write_trace(path: Path, records: Iterable[TraceRecord]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
