"""Every service process serves Prometheus metrics from prometheus_client: each
``groundplane serve SERVICE`` (tracking, links, nodes, routing, handoff, gateway, hil) is started
as a child with ``--metrics-port``, its ``/metrics`` is scraped over HTTP and parsed with
``prometheus_client.parser``, and the Grafana dashboard's series are checked against what the
real processes expose."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from groundplane.mqtt.broker import PrivateBroker, free_loopback_port
from groundplane.orbit.constellations import generate
from groundplane.scenario import default_stations
from groundplane.system.processes import write_sites_csv

from ..hil.conftest import HamlibDaemon, start_daemon
from ..processes import Served, serve
from ..scrape import get
from ..test_grafana import DASHBOARD, check_labels, dashboard_queries, dashboard_series

pytestmark = pytest.mark.slow

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
CONSTELLATION = "walker:8/2/1@550km:53"
SATELLITES = tuple(e.catalog_id for e in generate(CONSTELLATION, EPOCH))
SHARD_ID = "obs"
START_TIMEOUT_S = 90.0
"""A cold start imports numpy, grpc and sgp4; seven children share two cores."""
STOP_TIMEOUT_S = 20.0

EXPECTED: dict[str, set[str]] = {
    "tracking": {
        "groundplane_tracking_catalog_satellites",
        "groundplane_tracking_sites",
        "groundplane_tracking_catalog_watchers",
    },
    "links": {
        "groundplane_links_up",
        "groundplane_links_catalog_satellites",
        "groundplane_links_messages_delivered",
        "groundplane_links_messages_dropped",
    },
    "nodes": {
        "groundplane_nodes_agents",
        "groundplane_nodes_in_flight",
        "groundplane_nodes_executions",
    },
    "routing": {
        "groundplane_routing_catalog_views",
        "groundplane_routing_table_version",
        "groundplane_routing_paths",
        "groundplane_routing_decisions",
    },
    "handoff": {
        "groundplane_handoff",
        "groundplane_handoff_moved_bytes",
        "groundplane_handoff_interruption_seconds",
        "groundplane_handoff_sessions",
    },
    "gateway": {
        "groundplane_gateway_requests",
        "groundplane_gateway_request_duration_seconds",
        "groundplane_gateway_attempts",
        "groundplane_gateway_requests_in_flight",
    },
    "hil": {
        "groundplane_hil_tracking_active",
        "groundplane_hil_passes",
        "groundplane_hil_device_connected",
        "groundplane_hil_commands",
        "groundplane_hil_command_errors",
        "groundplane_hil_pointing_error_degrees",
    },
}
"""The metric families each service must expose (prometheus_client's family names: a
counter's without ``_total``)."""
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


class Scraped:
    """One process's exposition, parsed."""

    def __init__(self, body: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(body):
            self.types[family.name] = family.type
            self.samples.extend(family.samples)

    def series(self) -> set[str]:
        """Every series name the families define (also those with no sample yet)."""
        return {
            name + suffix
            for name, kind in self.types.items()
            for suffix in SERIES_SUFFIXES.get(kind, ("",))
        }

    def value(self, name: str, **labels: str) -> float:
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
        raise AssertionError(f"no sample {name}{labels}")


async def _start(
    stack: AsyncExitStack, tmp_path: Path, service: str, *args: str
) -> tuple[Served, int]:
    port = free_loopback_port()
    served = await stack.enter_async_context(
        serve(
            service,
            "--port",
            "0",
            "--metrics-port",
            str(port),
            "--unready-delay",
            "0",
            "--drain-grace",
            "1",
            "--log-format",
            "json",
            *args,
            stderr_path=tmp_path / f"{service}.stderr",
            start_timeout_s=START_TIMEOUT_S,
        )
    )
    return served, port


@pytest.fixture
async def rotctld() -> AsyncIterator[HamlibDaemon]:
    if shutil.which("rotctld") is None:
        pytest.skip("rotctld not installed (apt-get install libhamlib-utils)")
    started: list[HamlibDaemon] = []
    try:
        yield start_daemon("rotctld", None, started)
    finally:
        for daemon in started:
            daemon.kill()


async def test_every_service_process_serves_its_metrics_and_the_dashboard_asks_only_for_them(
    tmp_path: Path, rotctld: HamlibDaemon
) -> None:
    """Seven ``serve`` children (tracking with 8 satellites and the default stations, links, a
    nodes shard, routing, handoff, the gateway, station control on a dummy rotctld), each with
    ``--metrics-port``: every ``/metrics`` answers prometheus_client's text format, parses with
    its parser, and has its service's families and no other service's; counters' samples end
    in ``_total``, histograms' in ``_bucket``/``_sum``/``_count``; tracking counts its 8
    satellites and the nodes shard its 8 agents. Every groundplane series the Grafana dashboard
    queries is one of the scraped processes' series."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    sites = tmp_path / "sites.csv"
    write_sites_csv(sites, default_stations())
    scraped: dict[str, Scraped] = {}
    async with AsyncExitStack() as stack:
        broker = PrivateBroker(shards={SHARD_ID: SATELLITES}, workdir=tmp_path / "broker")
        await stack.enter_async_context(broker)
        service_url = broker.address.url
        clock = ("--start", EPOCH.isoformat())
        tracking, tracking_metrics = await _start(
            stack,
            tmp_path,
            "tracking",
            "--db",
            ":memory:",
            "--constellation",
            CONSTELLATION,
            "--sites",
            str(sites),
            *clock,
        )
        ports = {"tracking": tracking_metrics}
        follow = ("--tracking", tracking.target, *clock)
        started = await asyncio.gather(
            _start(stack, tmp_path, "links", *follow, "--broker", service_url),
            _start(
                stack,
                tmp_path,
                "nodes",
                *follow,
                "--broker",
                broker.shard_address(SHARD_ID).url,
                "--shard-id",
                SHARD_ID,
                "--satellites",
                ",".join(SATELLITES),
            ),
            _start(stack, tmp_path, "routing", *follow, "--broker", service_url),
            _start(
                stack,
                tmp_path,
                "handoff",
                *follow,
                "--broker",
                service_url,
                "--db",
                str(tmp_path / "handoff.sqlite"),
            ),
            _start(
                stack,
                tmp_path,
                "hil",
                *follow,
                "--site",
                "78.2297,15.4077",
                "--rotctld",
                f"127.0.0.1:{rotctld.port}",
            ),
        )
        names = ("links", "nodes", "routing", "handoff", "hil")
        ports.update({name: port for name, (_, port) in zip(names, started, strict=True)})
        routing, handoff = started[2][0], started[3][0]
        gateway, ports["gateway"] = await _start(
            stack,
            tmp_path,
            "gateway",
            "--routing",
            routing.target,
            "--handoff",
            handoff.target,
            "--broker",
            service_url,
            *clock,
        )
        for service, port in ports.items():
            status, content_type, body = await get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200, (service, body)
            assert content_type.startswith("text/plain; version=0.0.4"), content_type
            scraped[service] = Scraped(body)
        children = [tracking, *(served for served, _ in started)]
        # SIGTERM to all at once; each must exit 0 (the gateway first: it follows the others).
        await gateway.stop(STOP_TIMEOUT_S)
        await asyncio.gather(*(child.stop(STOP_TIMEOUT_S) for child in children))
    for service, expected in EXPECTED.items():
        ours = {name for name in scraped[service].types if name.startswith("groundplane_")}
        assert expected <= ours, f"{service} lacks {expected - ours}"
        assert all(name.startswith(f"groundplane_{service}") for name in ours), (service, ours)
        for sample in scraped[service].samples:
            kind = scraped[service].types.get(_family_of(sample.name, scraped[service].types))
            if kind == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            if kind == "histogram":
                assert sample.name.endswith(("_bucket", "_sum", "_count", "_created")), sample
    assert scraped["tracking"].value("groundplane_tracking_catalog_satellites") == len(SATELLITES)
    assert scraped["nodes"].value("groundplane_nodes_agents", shard_id=SHARD_ID) == len(SATELLITES)
    exported = set().union(*(s.series() for s in scraped.values()))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = dashboard_series(dashboard)
    missing = queried - exported
    assert not missing, f"the dashboard queries series no process exports: {sorted(missing)}"
    for service in EXPECTED:
        assert any(q.startswith(f"groundplane_{service}") for q in queried), (
            f"the dashboard has no panel over {service}'s metrics"
        )
    labels: dict[str, set[str]] = {}
    for process in scraped.values():
        for sample in process.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    for query in dashboard_queries(dashboard):
        check_labels(query, labels)


def _family_of(sample_name: str, types: dict[str, str]) -> str:
    for suffix in ("_total", "_created", "_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in types:
            return sample_name.removesuffix(suffix)
    return sample_name
