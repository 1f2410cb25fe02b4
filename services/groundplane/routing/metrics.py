"""Routing's Prometheus metrics, in a registry of its own (``prometheus_client``).

==========================================  =======  =============================================
metric                                      type     labels
==========================================  =======  =============================================
groundplane_routing_catalog_views_total     counter  (tracking catalog views applied)
groundplane_routing_table_version           gauge    (the latest route table's version)
groundplane_routing_paths                   gauge    state (usable, excluded): (station,
                                                     satellite) paths in the latest table
groundplane_routing_decisions_total         counter  outcome (routed, unavailable): ``Route``
                                                     answers
==========================================  =======  =============================================

:class:`~groundplane.kernel.metrics_http.MetricsServer` serves :attr:`RoutingMetrics.registry`
at ``/metrics`` (``groundplane serve routing --metrics-port``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from groundplane.routing.policy import RouteDecision
from groundplane.routing.table import RouteTable


class RoutingMetrics:
    """Every metric of one routing service, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # A counter rather than the catalog's version: tracking's versions are large integers
        # that a float sample cannot tell apart from their successor.
        self.catalog_views = Counter(
            "groundplane_routing_catalog_views",
            "Catalog views (tracking's elements and sites) applied to visibility and passes.",
            registry=self.registry,
        )
        self.table_version = Gauge(
            "groundplane_routing_table_version",
            "Version of the latest route table.",
            registry=self.registry,
        )
        self.paths = Gauge(
            "groundplane_routing_paths",
            "(station, satellite) paths in the latest route table, usable or excluded.",
            ["state"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "groundplane_routing_decisions",
            "Route calls answered: routed (at least one candidate) or unavailable.",
            ["outcome"],
            registry=self.registry,
        )

    def table(self, table: RouteTable) -> None:
        """The latest table is ``table``."""
        paths = [path for station in table.stations for path in station.paths]
        excluded = sum(1 for path in paths if path.exclusion is not None)
        self.table_version.set(table.version)
        self.paths.labels(state="usable").set(len(paths) - excluded)
        self.paths.labels(state="excluded").set(excluded)

    def decided(self, decision: RouteDecision) -> None:
        self.decisions.labels(outcome="routed" if decision.ranked else "unavailable").inc()

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet)."""
        return self.registry.get_sample_value(name, labels) or 0.0
