"""The dashboard's Prometheus metrics, in a registry of its own (``prometheus_client``).

=======================================  =========  ============================================
metric                                   type       labels
=======================================  =========  ============================================
groundplane_dashboard_event_streams      gauge      (pages connected to ``GET /events`` now)
groundplane_dashboard_snapshots_total    counter    (snapshots computed; pages open together
                                                    share one)
groundplane_dashboard_snapshot_seconds   histogram  (wall seconds to compute one)
groundplane_dashboard_feed_events_total  counter    feed (``handoff``, ``request``): events
                                                    received from the watch streams
=======================================  =========  ============================================

:class:`~groundplane.kernel.metrics_http.MetricsServer` serves :attr:`DashboardMetrics.registry`
at ``/metrics`` (``groundplane serve dashboard --metrics-port``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DashboardMetrics:
    """Every metric of one dashboard, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.event_streams = Gauge(
            "groundplane_dashboard_event_streams",
            "Pages connected to the snapshot stream (GET /events) now.",
            registry=self.registry,
        )
        self.snapshots = Counter(
            "groundplane_dashboard_snapshots",
            "Snapshots of the system computed for the page.",
            registry=self.registry,
        )
        self.snapshot_seconds = Histogram(
            "groundplane_dashboard_snapshot_seconds",
            "Wall seconds to compute one snapshot (SGP4 positions, routes, chart).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.feed_events = Counter(
            "groundplane_dashboard_feed_events",
            "Events received from the watch streams, by feed.",
            ["feed"],
            registry=self.registry,
        )
        for feed in ("handoff", "request"):
            self.feed_events.labels(feed=feed)
