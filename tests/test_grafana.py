"""The Grafana dashboard in deploy/grafana/ asks only for metrics groundplane exports, with
labels those metrics have."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from groundplane.gateway.metrics import GatewayMetrics
from groundplane.handoff.metrics import HandoffMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "groundplane.json"


def _exported(registries: list[CollectorRegistry]) -> dict[str, set[str]]:
    """Every series name the registries expose, with the label names it carries."""
    names: dict[str, set[str]] = {}
    for registry in registries:
        for family in registry.collect():
            names.setdefault(family.name, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _queries(dashboard: dict[str, object]) -> list[str]:
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


def test_dashboard_queries_name_only_exported_series_and_their_labels() -> None:
    """Each groundplane_* series in a panel or variable query is one the gateway's and the
    handoff manager's registries expose (once a request, a handoff and a session were counted),
    every label it selects is one that series carries, and every `by (...)` label too."""
    gateway, handoff = GatewayMetrics(), HandoffMetrics()
    gateway.started("demo")
    gateway.finished("demo", outcome="OK", method="infer", duration_s=0.01, attempts=1)
    handoff.handoff("completed")
    handoff.moved("ground", 1024)
    handoff.interruption(0.2)
    handoff.count_sessions(lambda: {"active": 1})
    exported = _exported([gateway.registry, handoff.registry])
    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 8
    for query in queries:
        series = re.findall(r"(groundplane_[a-z_]+)(\{[^}]*\})?", query)
        assert series, f"no groundplane series in {query!r}"
        for name, selector in series:
            assert name in exported, f"{name} (in {query!r}) is not exported"
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in exported[name], f"{name} has no label {label!r}"
        for grouped in re.findall(r"by \(([^)]*)\)", query):
            for label in (part.strip() for part in grouped.split(",")):
                carried = label == "le" or all(label in exported[n] for n, _ in series)
                assert carried, f"{label!r} grouped in {query!r} is not a label of its series"
