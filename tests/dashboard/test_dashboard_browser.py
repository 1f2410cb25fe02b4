"""The dashboard end to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

A real in-process system (Mosquitto, tracking, links, nodes, routing, handoff, gateway, each on
loopback gRPC and the broker) and a :class:`DashboardApp` following it only through its
contracts; the page is loaded by the system's Chromium, a request is sent with
``groundplane infer`` (the CLI, as a separate process) and must appear in the page's feed. The
screenshot is kept as ``dashboard.png`` in the test's ``tmp_path`` (and copied to
``$GROUNDPLANE_TEST_ARTIFACTS`` when that is set).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from groundplane.dashboard.app import DashboardApp, DashboardSettings
from groundplane.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_TOKEN, default_stations, default_users
from groundplane.system.system import GroundplaneSystem, SystemConfig
from groundplane.tracking.v1 import tracking_pb2, tracking_pb2_grpc

CHROMIUM = Path("/usr/bin/chromium")
EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
PAGE_TIMEOUT_MS = 15_000
REQUEST_ID = re.compile(r"request (\S+)\]")

pytestmark = pytest.mark.slow


def _require_tools() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make system-deps)")


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
        sys.executable,
        "-m",
        "groundplane.cli.main",
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
    """The page loads from the package (no network beyond loopback), its satellite count equals
    tracking's catalog (ListElements), and a request sent with `groundplane infer` appears in its
    request feed with the request id, outcome OK and the satellite that answered; a call refused
    for its token appears with UNAUTHENTICATED; the load's unary calls are in the feed too; node
    health counts every node online (MQTT) and every input is connected; nothing is fetched from
    outside the dashboard; a screenshot is saved."""
    _require_tools()
    from playwright.async_api import async_playwright

    config = SystemConfig(
        elements=generate("walker:24/6/1@550km:53", EPOCH),
        stations=default_stations(),
        users=default_users(),
        rate_rps=2.0,
        workdir=tmp_path / "broker",
    )
    clock = SimulatedClock(EPOCH, speed=10.0)
    system = GroundplaneSystem(config, clock)
    async with asyncio.timeout(90), asyncio.TaskGroup() as group:
        running = group.create_task(system.run(), name="system-under-test")
        await system.wait_ready()
        settings = DashboardSettings(
            tracking_target=system.tracking_target,
            routing_target=system.routing_target,
            handoff_target=system.handoff_target,
            gateway_target=system.gateway_target,
            broker=system.broker_address,
            web_port=0,
            model=config.model.name,
            snapshot_interval_s=0.5,
            unready_delay_s=0.0,
        )
        async with DashboardApp(settings, clock) as app:
            await app.wait_ready(20)
            satellites = await _tracking_satellites(system.tracking_target)
            assert satellites == 24
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
                try:
                    page = await browser.new_page(viewport={"width": 1500, "height": 1000})
                    outside: list[str] = []
                    page.on(
                        "request",
                        lambda r: (
                            outside.append(r.url)
                            if not r.url.startswith(app.url.rstrip("/"))
                            else None
                        ),
                    )
                    await page.goto(app.url)
                    await page.wait_for_function(
                        "Number(document.body.dataset.snapshots || 0) >= 1",
                        timeout=PAGE_TIMEOUT_MS,
                    )
                    shown = await page.text_content("#satellite-count")
                    assert shown is not None
                    assert int(shown) == satellites

                    # A station the route table serves now: a user there is reachable.
                    snapshot: dict[str, Any] = await app.snapshot()
                    assert len(snapshot["satellites"]) == satellites
                    served = [s for s in snapshot["stations"] if s["routes_to"]]
                    assert served, snapshot["stations"]
                    request_id = await _infer(
                        system.gateway_target, served[0]["lat"], served[0]["lon"]
                    )
                    row = page.locator(f'#request-feed tr[data-request-id="{request_id}"]')
                    await row.wait_for(timeout=PAGE_TIMEOUT_MS)
                    cells = await row.locator("td").all_text_contents()
                    assert request_id in cells
                    assert "OK" in cells
                    assert any(c.startswith("walker-") for c in cells), cells

                    # A refused call is in the feed too, with its status code.
                    await _refused(system.gateway_target)
                    refused = page.locator("#request-feed tr", has_text="UNAUTHENTICATED")
                    await refused.first.wait_for(timeout=PAGE_TIMEOUT_MS)

                    after: dict[str, Any] = await app.snapshot()
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
        system.stop()
        await running
