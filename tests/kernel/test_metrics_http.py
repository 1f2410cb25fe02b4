"""``MetricsServer``: one component's registry at ``GET /metrics`` over real HTTP."""

from __future__ import annotations

import socket
import threading
import urllib.error

import pytest
from prometheus_client import CollectorRegistry, Counter

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer

from ..scrape import get, sample, samples


def registry_with(name: str, value: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    Counter(name, "A test counter.", registry=registry).inc(value)
    return registry


async def test_serves_its_registry_at_metrics_on_the_bound_free_port() -> None:
    """Asked for port 0, the server listens on a free port it reports, answers ``/metrics``
    with its registry in the text format, and counts moved between scrapes show."""
    registry = CollectorRegistry(auto_describe=True)
    calls = Counter("demo_calls", "Calls.", ["outcome"], registry=registry)
    async with MetricsServer(registry, host="127.0.0.1", port=0) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        before = await samples(server.url)
        calls.labels(outcome="OK").inc(3)
        after = await samples(server.url)
    assert sample(before, "demo_calls_total", outcome="OK") == 0
    assert sample(after, "demo_calls_total", outcome="OK") == 3


async def test_any_other_path_is_404_naming_the_metrics_path() -> None:
    """``/``, ``/metrics/`` and ``/favicon.ico`` are 404 with a body that says where the metrics
    are (prometheus_client alone would answer the exposition at any path)."""
    async with MetricsServer(registry_with("demo", 1), host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/", "/metrics/", "/favicon.ico", "/other"):
            status, _, body = await get(base + path)
            assert status == 404, path
            assert "metrics are served at /metrics" in body


async def test_two_components_in_one_process_keep_their_own_series() -> None:
    """Two servers of two registries in one process each show only their own series."""
    first, second = registry_with("first_thing", 1), registry_with("second_thing", 2)
    async with (
        MetricsServer(first, host="127.0.0.1", port=0) as a,
        MetricsServer(second, host="127.0.0.1", port=0) as b,
    ):
        scraped_a, scraped_b = await samples(a.url), await samples(b.url)
    assert sample(scraped_a, "first_thing_total") == 1
    assert ("second_thing_total", frozenset()) not in scraped_a
    assert sample(scraped_b, "second_thing_total") == 2
    assert ("first_thing_total", frozenset()) not in scraped_b


async def test_leaving_closes_the_port_and_joins_the_serving_thread() -> None:
    """After the ``async with`` the port refuses connections and no server thread is left."""
    async with MetricsServer(registry_with("demo", 1), host="127.0.0.1", port=0) as server:
        url, port = server.url, server.port
        assert (await get(url))[0] == 200
    assert not [t for t in threading.enumerate() if t.name == f"metrics-http:{port}"]
    with pytest.raises(urllib.error.URLError):
        await get(url)


async def test_a_taken_port_is_invalid_argument_naming_the_setting() -> None:
    """A port another socket holds fails at start, saying which port and which setting."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(InvalidArgument, match=rf"127\.0\.0\.1:{port}.*metrics_port"):
            async with MetricsServer(registry_with("demo", 1), host="127.0.0.1", port=port):
                pass


def test_a_port_out_of_range_is_invalid_argument() -> None:
    """A port outside 0..65535 is refused before anything binds."""
    with pytest.raises(InvalidArgument, match=r"0\.\.65535.*got 70000"):
        MetricsServer(CollectorRegistry(), host="127.0.0.1", port=70000)
