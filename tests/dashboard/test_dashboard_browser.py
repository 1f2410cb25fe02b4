"""The dashboard end to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

``groundplane up --in-process --dashboard 0`` runs as its own process (Mosquitto, tracking, links,
nodes, routing, handoff, gateway, and the dashboard following them only through their contracts);
the page is loaded by the system's Chromium, a request is sent with ``groundplane infer`` (the
CLI, a process of its own) and must appear in the page's feed. The screenshot is kept as
``dashboard.png`` in the test's ``tmp_path`` (and copied to ``$GROUNDPLANE_TEST_ARTIFACTS`` when
that is set).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from groundplane.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from groundplane.scenario import DEFAULT_TOKEN
from groundplane.tracking.v1 import tracking_pb2, tracking_pb2_grpc

CHROMIUM = Path("/usr/bin/chromium")
GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
PAGE_TIMEOUT_MS = 15_000
REQUEST_ID = re.compile(r"request (\S+)\]")
BANNER = re.compile(r"^\s+(tracking|gateway|dashboard)\s+(\S+)")

pytestmark = pytest.mark.slow


def _require_tools() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make system-deps)")


@dataclass
class Up:
    """A running ``groundplane up``: the addresses its banner printed."""

    process: asyncio.subprocess.Process
    addresses: dict[str, str]


@asynccontextmanager
async def _up(tmp_path: Path) -> AsyncIterator[Up]:
    """``groundplane up --in-process --dashboard 0`` until its banner's dashboard line; stopped
    with SIGINT at the end (it must stop cleanly, status 0)."""
    process = await asyncio.create_subprocess_exec(
        GROUNDPLANE,
        "up",
        "--in-process",
        "--dashboard",
        "0",
        "--constellation",
        "walker:24/6/1@550km:53",
        "--start",
        "2026-08-15T12:00:00Z",
        "--speed",
        "10",
        "--rate",
        "2",
        "--status-interval",
        "60",
        # The documented dev token, so the infer call below knows it (default: a random one).
        env={**os.environ, "GROUNDPLANE_DEMO_TOKEN": DEFAULT_TOKEN},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    output: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "dashboard" not in addresses:
                line = (await process.stdout.readline()).decode()
                if not line:
                    pytest.fail(f"groundplane up ended early: {''.join(output)[-3000:]}")
                output.append(line)
                found = BANNER.match(line)
                if found:
                    addresses[found.group(1)] = found.group(2)
        yield Up(process, addresses)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, _ = await process.communicate()
        assert process.returncode == 0, rest.decode()[-3000:]
        assert "stopped cleanly" in rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


async def _tracking_satellites(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = tracking_pb2_grpc.TrackingServiceStub(channel)
        listed = await stub.ListElements(
            tracking_pb2.ListElementsRequest(active_only=True), timeout=10
        )
    return len({record.element_set.catalog_id for record in listed.records})


async def _infer(gateway: str, lat: float, lon: float) -> str:
    """Run ``groundplane infer`` as its own process; the request id from its summary line."""
    process = await asyncio.create_subprocess_exec(
        GROUNDPLANE,
        "infer",
        "--gateway",
        gateway,
        "--lat",
        f"{lat}",
        "--lon",
        f"{lon}",
        "--wait",
        "--timeout",
        "20",
        "hello from the dashboard test",
        env={**os.environ, "GROUNDPLANE_TOKEN": DEFAULT_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(40):
        out, err = await process.communicate()
    assert process.returncode == 0, (out + err).decode()
    found = REQUEST_ID.search(err.decode())
    assert found is not None, err.decode()
    return found.group(1)


async def _refused(gateway: str) -> None:
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Infer(
                gateway_pb2.InferRequest(model="synth-7b", prompt="hi"),
                metadata=(("authorization", "Bearer not-a-token-of-anyone"),),
                timeout=10,
            )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_page_shows_tracking_s_satellites_and_a_request_sent_with_infer(
    tmp_path: Path,
) -> None:
    """`groundplane up --dashboard` prints the page's URL; the page loads from the package (no
    request leaves the dashboard's origin), its satellite count equals tracking's catalog
    (ListElements), and a request sent with `groundplane infer` appears in its request feed with
    the request id, outcome OK and the satellite that answered; a call refused for its token
    appears with UNAUTHENTICATED; the load's unary calls are in the feed too; node health counts
    every node online (MQTT) and every input is connected; a screenshot is saved."""
    _require_tools()
    from playwright.async_api import async_playwright

    async with _up(tmp_path) as up:
        url = up.addresses["dashboard"]
        assert url.startswith("http://127.0.0.1:")
        satellites = await _tracking_satellites(up.addresses["tracking"])
        assert satellites == 24
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
            try:
                page = await browser.new_page(viewport={"width": 1500, "height": 1000})
                outside: list[str] = []
                page.on(
                    "request",
                    lambda r: None if r.url.startswith(url) else outside.append(r.url),
                )
                await page.goto(url)
                await page.wait_for_function(
                    "Number(document.body.dataset.snapshots || 0) >= 1", timeout=PAGE_TIMEOUT_MS
                )
                shown = await page.text_content("#satellite-count")
                assert shown is not None
                assert int(shown) == satellites

                # A station the route table serves now: a user there is reachable.
                snapshot = await asyncio.to_thread(_get_json, url + "api/snapshot")
                assert len(snapshot["satellites"]) == satellites
                served = [s for s in snapshot["stations"] if s["routes_to"]]
                assert served, snapshot["stations"]
                request_id = await _infer(
                    up.addresses["gateway"], served[0]["lat"], served[0]["lon"]
                )
                row = page.locator(f'#request-feed tr[data-request-id="{request_id}"]')
                await row.wait_for(timeout=PAGE_TIMEOUT_MS)
                cells = await row.locator("td").all_text_contents()
                assert request_id in cells
                assert "OK" in cells
                assert any(c.startswith("walker-") for c in cells), cells

                # A refused call is in the feed too, with its status code.
                await _refused(up.addresses["gateway"])
                refused = page.locator("#request-feed tr", has_text="UNAUTHENTICATED")
                await refused.first.wait_for(timeout=PAGE_TIMEOUT_MS)

                after = await asyncio.to_thread(_get_json, url + "api/snapshot")
                # The run's own load calls the unary Infer; those are published as well.
                assert any(not r["streamed"] for r in after["requests"]), after["requests"]
                assert after["nodes"]["counts"]["online"] == satellites  # over MQTT
                assert after["sources"] == dict.fromkeys(after["sources"], True)
                assert outside == [], f"the page fetched from outside: {outside}"
                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                artifacts = os.environ.get("GROUNDPLANE_TEST_ARTIFACTS")
                if artifacts:
                    Path(artifacts).mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, Path(artifacts) / "dashboard.png")
            finally:
                await browser.close()
