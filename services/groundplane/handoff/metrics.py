"""The handoff manager's Prometheus metrics, in a registry of its own (``prometheus_client``).

=============================================  =========  ==================================
metric                                         type       labels
=============================================  =========  ==================================
groundplane_handoff_total                      counter    result (completed, failed,
                                                          checkpointed, resumed, recovered)
groundplane_handoff_moved_bytes_total          counter    path (isl, ground, none)
groundplane_handoff_interruption_seconds       histogram  (simulated seconds turns were held)
groundplane_handoff_sessions                   gauge      state (active, checkpointed)
=============================================  =========  ==================================

Every label takes values from a bounded set; session ids go to the handoff events, never to a
label. ``groundplane_handoff_sessions`` is read from the manager's open sessions at each scrape.
:class:`~groundplane.kernel.metrics_http.MetricsServer` serves :attr:`HandoffMetrics.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

INTERRUPTION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

SESSIONS = "groundplane_handoff_sessions"
SESSIONS_HELP = "Open sessions by state."


class _Sessions(Collector):
    """``groundplane_handoff_sessions`` from a count taken at scrape time."""

    def __init__(self) -> None:
        self.count: Callable[[], Mapping[str, int]] = dict

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(SESSIONS, SESSIONS_HELP, labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(SESSIONS, SESSIONS_HELP, labels=["state"])
        for state, count in sorted(self.count().items()):
            family.add_metric([state], count)
        yield family


class HandoffMetrics:
    """Every metric of one handoff manager, registered in :attr:`registry` (one per manager, so
    it never shares a series with a gateway or another manager in the same process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.handoffs = Counter(
            "groundplane_handoff",
            "Handoff steps by result.",
            ["result"],
            registry=self.registry,
        )
        self.moved_bytes = Counter(
            "groundplane_handoff_moved_bytes",
            "Modelled session state bytes moved, by path.",
            ["path"],
            registry=self.registry,
        )
        self.interruptions = Histogram(
            "groundplane_handoff_interruption_seconds",
            "Time a session's turns were held by a move, in simulated seconds.",
            buckets=INTERRUPTION_BUCKETS_S,
            registry=self.registry,
        )
        self._sessions = _Sessions()
        self.registry.register(self._sessions)

    def handoff(self, result: str) -> None:
        self.handoffs.labels(result=result).inc()

    def moved(self, path: str, state_bytes: int) -> None:
        self.moved_bytes.labels(path=path).inc(state_bytes)

    def interruption(self, seconds: float) -> None:
        self.interruptions.observe(seconds)

    def count_sessions(self, count: Callable[[], Mapping[str, int]]) -> None:
        """Take ``groundplane_handoff_sessions`` from ``count()`` (state → open sessions) at each
        scrape; it runs on the metrics server's thread, so it must only read."""
        self._sessions.count = count

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet), e.g.
        ``value("groundplane_handoff_total", result="completed")``."""
        return self.registry.get_sample_value(name, labels) or 0.0
