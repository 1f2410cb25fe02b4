"""The handoff manager's Prometheus metrics (text exposition format 0.0.4).

=============================================  =========  ==============================
metric                                         type       labels
=============================================  =========  ==============================
groundplane_handoff_total                      counter    result (completed, failed,
                                                          checkpointed, resumed, recovered)
groundplane_handoff_bytes_moved_total          counter    path (isl, ground, none)
groundplane_handoff_interruption_seconds       histogram  (simulated seconds turns were held)
groundplane_handoff_sessions                   gauge      state
=============================================  =========  ==============================
"""

from __future__ import annotations

import bisect

INTERRUPTION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class HandoffMetrics:
    def __init__(self) -> None:
        self.handoffs: dict[str, int] = {}
        self.bytes_moved: dict[str, int] = {}
        self.interruption_counts = [0] * (len(INTERRUPTION_BUCKETS_S) + 1)
        self.interruption_sum_s = 0.0
        self.interruptions_s: list[float] = []
        """Every interruption observed (for benchmarks and tests; bounded to the last 100,000)."""
        self.sessions: dict[str, int] = {}

    def handoff(self, result: str) -> None:
        self.handoffs[result] = self.handoffs.get(result, 0) + 1

    def moved(self, path: str, state_bytes: int) -> None:
        self.bytes_moved[path] = self.bytes_moved.get(path, 0) + state_bytes

    def interruption(self, seconds: float) -> None:
        self.interruption_counts[bisect.bisect_left(INTERRUPTION_BUCKETS_S, seconds)] += 1
        self.interruption_sum_s += seconds
        self.interruptions_s.append(seconds)
        if len(self.interruptions_s) > 100_000:
            del self.interruptions_s[:50_000]

    def render(self) -> str:
        lines = [
            "# HELP groundplane_handoff_total Handoff steps by result.",
            "# TYPE groundplane_handoff_total counter",
            *(f'groundplane_handoff_total{{result="{k}"}} {v}' for k, v in self.handoffs.items()),
            "# HELP groundplane_handoff_bytes_moved_total Modelled session state bytes moved.",
            "# TYPE groundplane_handoff_bytes_moved_total counter",
            *(
                f'groundplane_handoff_bytes_moved_total{{path="{k}"}} {v}'
                for k, v in self.bytes_moved.items()
            ),
            "# HELP groundplane_handoff_interruption_seconds Time a session's turns were held.",
            "# TYPE groundplane_handoff_interruption_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(INTERRUPTION_BUCKETS_S, self.interruption_counts, strict=False):
            cumulative += count
            lines.append(
                f'groundplane_handoff_interruption_seconds_bucket{{le="{bound}"}} {cumulative}'
            )
        cumulative += self.interruption_counts[-1]
        lines += [
            f'groundplane_handoff_interruption_seconds_bucket{{le="+Inf"}} {cumulative}',
            f"groundplane_handoff_interruption_seconds_sum {self.interruption_sum_s}",
            f"groundplane_handoff_interruption_seconds_count {cumulative}",
            "# HELP groundplane_handoff_sessions Sessions by state.",
            "# TYPE groundplane_handoff_sessions gauge",
            *(f'groundplane_handoff_sessions{{state="{k}"}} {v}' for k, v in self.sessions.items()),
        ]
        return "\n".join(lines) + "\n"
