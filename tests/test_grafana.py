"""The Grafana dashboard in deploy/grafana/ asks only for metrics groundplane exports, with
labels those metrics have.

Here against the registries of the components that can be built in-process with their labelled
series observed (gateway, handoff, routing, hil); tests/observability/test_metrics_processes.py
checks every series against what the seven real ``serve`` processes expose."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from groundplane.gateway.metrics import GatewayMetrics
from groundplane.handoff.metrics import HandoffMetrics
from groundplane.hil.hamlib import RigClient, RotatorClient
from groundplane.hil.metrics import HilMetrics
from groundplane.hil.tracker import TrackerStatus
from groundplane.routing.metrics import RoutingMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "groundplane.json"
SERIES = re.compile(r"(groundplane_[a-z_]+)(\{[^}]*\})?")


def exported_labels(registries: list[CollectorRegistry]) -> dict[str, set[str]]:
    """Every series name the registries expose, with the label names it carries."""
    names: dict[str, set[str]] = {}
    for registry in registries:
        for family in registry.collect():
            names.setdefault(family.name, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def dashboard_queries(dashboard: dict[str, object]) -> list[str]:
    """Every PromQL text of the dashboard: panel targets and variable queries."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"expr", "definition"} and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return found


def dashboard_series(dashboard: dict[str, object]) -> set[str]:
    """Every groundplane series name the dashboard's queries name."""
    return {name for query in dashboard_queries(dashboard) for name, _ in SERIES.findall(query)}


def check_labels(query: str, exported: dict[str, set[str]]) -> None:
    """Each label ``query`` selects on a series, and each ``by (...)`` label, is one that series
    carries (series not in ``exported`` are not checked here)."""
    series = [(n, s) for n, s in SERIES.findall(query) if n in exported]
    for name, selector in series:
        for label in re.findall(r"([a-z_]+)\s*=~?", selector):
            assert label in exported[name], f"{name} has no label {label!r} (in {query!r})"
    for grouped in re.findall(r"by \(([^)]*)\)", query):
        for label in (part.strip() for part in grouped.split(",")):
            carried = label == "le" or all(label in exported[n] for n, _ in series)
            assert carried, f"{label!r} grouped in {query!r} is not a label of its series"


def test_dashboard_queries_name_only_exported_series_and_their_labels() -> None:
    """Each gateway, handoff, routing and hil series in a panel or variable query is one their
    registries expose (once a request, a handoff, a session, a route table, a decision, a
    station's commands and a pointing error were counted), every label it selects is one that
    series carries, and every `by (...)` label too; each query names a groundplane series."""
    gateway, handoff, routing = GatewayMetrics(), HandoffMetrics(), RoutingMetrics()
    gateway.started("demo")
    gateway.finished("demo", outcome="OK", method="infer", duration_s=0.01, attempts=1)
    handoff.handoff("completed")
    handoff.moved("ground", 1024)
    handoff.interruption(0.2)
    handoff.count_sessions(lambda: {"active": 1})
    routing.paths.labels(state="usable").set(1)
    routing.decisions.labels(outcome="routed").inc()
    rotator, radio = RotatorClient("127.0.0.1", 4533), RigClient("127.0.0.1", 4532)
    rotator.commands["set_pos"] += 1
    radio.commands["set_freq"] += 1
    status = TrackerStatus(at=datetime(2026, 8, 15, tzinfo=UTC), phase="tracking")
    hil = HilMetrics(rotator=rotator, radio=radio, status=lambda: status)
    hil.pointing_error.observe(0.3)
    registries = [gateway.registry, handoff.registry, routing.registry, hil.registry]
    exported = exported_labels(registries)
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 20
    built = re.compile(r"groundplane_(gateway|handoff|routing|hil)_")
    for query in queries:
        series = SERIES.findall(query)
        assert series, f"no groundplane series in {query!r}"
        for name, _ in series:
            if built.match(name):
                assert name in exported, f"{name} (in {query!r}) is not exported"
        check_labels(query, exported)
