"""The gateway's Prometheus metrics, in a registry of its own (``prometheus_client``).

================================================  =========  ==================================
metric                                            type       labels
================================================  =========  ==================================
groundplane_gateway_requests_total                counter    tenant, outcome (status code name)
groundplane_gateway_request_duration_seconds      histogram  tenant, method (infer,
                                                             infer_stream)
groundplane_gateway_attempts                      histogram  tenant (node attempts per call)
groundplane_gateway_requests_in_flight            gauge      tenant
================================================  =========  ==================================

Every label takes values from a bounded set: tenants are the configured ones, outcomes the gRPC
status code names, methods the two RPCs. Request, session and satellite ids go to the canonical
log line, never to a label. :class:`~groundplane.kernel.metrics_http.MetricsServer` serves
:attr:`GatewayMetrics.registry` at ``/metrics`` (``GatewaySettings.metrics_port``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


class GatewayMetrics:
    """Every metric of one gateway, registered in :attr:`registry` (one per gateway, so two
    gateways or a gateway and a handoff manager in one process keep separate series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "groundplane_gateway_requests",
            "Calls answered, by tenant and status code name.",
            ["tenant", "outcome"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "groundplane_gateway_request_duration_seconds",
            "Time from receiving a call to its last byte, in seconds of the gateway's clock.",
            ["tenant", "method"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.attempts = Histogram(
            "groundplane_gateway_attempts",
            "Node attempts per call (1 when the first satellite answered).",
            ["tenant"],
            buckets=ATTEMPT_BUCKETS,
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "groundplane_gateway_requests_in_flight",
            "Calls being served now, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        # The labelled children by label values: ``labels()`` validates and locks on every call
        # (~4 µs each, five a call); the label sets are bounded (see the module doc).
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def started(self, tenant: str) -> None:
        """A call of ``tenant`` is being served."""
        self._child(self.requests_in_flight, tenant).inc()

    def finished(
        self, tenant: str, *, outcome: str, method: str, duration_s: float, attempts: int | None
    ) -> None:
        """A call of ``tenant`` ended with ``outcome`` after ``duration_s``; ``attempts`` is
        None when no node was tried for it (an idempotent replay)."""
        self._child(self.requests_in_flight, tenant).dec()
        self._child(self.requests, tenant, outcome).inc()
        self._child(self.request_duration, tenant, method).observe(duration_s)
        if attempts is not None:
            self._child(self.attempts, tenant).observe(float(attempts))

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet), e.g.
        ``value("groundplane_gateway_requests_total", tenant="alpha", outcome="OK")``."""
        return self.registry.get_sample_value(name, labels) or 0.0
