"""The gateway's Prometheus metrics, with a small text exposition of its own (format 0.0.4).

=========================================  =========  ===============================
metric                                     type       labels
=========================================  =========  ===============================
groundplane_gateway_requests_total         counter    tenant, outcome (status code)
groundplane_gateway_request_duration_seconds histogram  tenant, method
groundplane_gateway_attempts               histogram  tenant (node attempts per call)
groundplane_gateway_in_flight              gauge      tenant
=========================================  =========  ===============================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Labels = tuple[tuple[str, str], ...]

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def _labels(values: dict[str, str]) -> Labels:
    return tuple(sorted(values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render_labels(labels: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return f"{{{body}}}" if body else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(_labels(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_render_labels(k)} {_number(v)}" for k, v in self.values.items()]
        return lines


class Gauge(Counter):
    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def render(self) -> list[str]:
        lines = super().render()
        lines[1] = f"# TYPE {self.name} gauge"
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets))
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = _labels(labels)
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        counts = self.counts.get(_labels(labels))
        return counts[-1] if counts else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in self.counts.items():
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                labels = _render_labels((*key, ("le", _number(bound))))
                lines.append(f"{self.name}_bucket{labels} {count}")
            lines.append(f"{self.name}_sum{_render_labels(key)} {_number(self.sums[key])}")
            lines.append(f"{self.name}_count{_render_labels(key)} {counts[-1]}")
        return lines


class GatewayMetrics:
    """Every metric of one gateway; :meth:`render` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.requests_total = Counter(
            "groundplane_gateway_requests_total", "Calls answered, by tenant and status code."
        )
        self.request_duration_seconds = Histogram(
            "groundplane_gateway_request_duration_seconds",
            "Time from receiving a call to its last byte, in seconds.",
            DURATION_BUCKETS_S,
        )
        self.attempts = Histogram(
            "groundplane_gateway_attempts",
            "Node attempts per call (1 when the first satellite answered).",
            ATTEMPT_BUCKETS,
        )
        self.in_flight = Gauge(
            "groundplane_gateway_in_flight", "Calls being served now, by tenant."
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.requests_total,
            self.request_duration_seconds,
            self.attempts,
            self.in_flight,
        ):
            lines += metric.render()
        return "\n".join(lines) + "\n"
