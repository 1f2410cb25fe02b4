"""What a run of the system produced: counters, latency percentiles, the summary and the trace.

The summary (``--summary FILE``) is one JSON object::

    {"requests": {"submitted", "succeeded", "failed", "rejected_unavailable",
                  "rejected_overload", "latency_ms": {"p50", "p99"}},
     "handoffs": {"planned", "completed", "failed"},
     "sessions": {"turns", "failed_turns", "context_mismatches"},
     "jobs": {"items", "completed_items", "duplicate_items"}}

``handoffs`` and ``jobs`` stay zero until the handoff service exists. The trace (``--trace
FILE``) is one JSON object per request and line (:class:`TraceRecord`), times in simulated UTC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from groundplane.kernel.clock import format_utc


class Outcome(Enum):
    """How one request ended, as the load client saw it."""

    OK = "ok"
    FAILED = "failed"
    REJECTED_UNAVAILABLE = "rejected_unavailable"
    REJECTED_OVERLOAD = "rejected_overload"


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One request of the load.

    ``request_id`` is the gateway's request id when the gateway answered, else the load's own id.
    ``station`` and ``satellite`` are empty unless the request was served. ``latency_ms`` is wall
    time seen by the client. ``next_opportunity`` is the AOS the gateway announced with
    UNAVAILABLE (``None`` otherwise); ``detail`` the error message of a failed request.
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
        return data


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
class RunStats:
    """Counters of a run, updated by the load as requests finish."""

    submitted: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    latencies_ms: list[float] = field(default_factory=list)
    sessions: SessionCounters = field(default_factory=SessionCounters)
    trace: list[TraceRecord] = field(default_factory=list)
    keep_trace: bool = True

    def record(self, record: TraceRecord) -> None:
        self.outcomes[record.status] += 1
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
            },
            # The handoff service does not exist yet: nothing is planned or carried over.
            "handoffs": {"planned": 0, "completed": 0, "failed": 0},
            "sessions": {
                "turns": self.sessions.turns,
                "failed_turns": self.sessions.failed_turns,
                "context_mismatches": self.sessions.context_mismatches,
            },
            "jobs": {"items": 0, "completed_items": 0, "duplicate_items": 0},
        }


def write_summary(path: Path, stats: RunStats) -> None:
    path.write_text(json.dumps(stats.summary(), indent=2) + "\n", encoding="utf-8")


def write_trace(path: Path, records: Iterable[TraceRecord]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
