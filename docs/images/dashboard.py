"""Take the README's dashboard screenshot: `groundplane up --dashboard` in headless Chromium.

Run from the repository root: ``.venv/bin/python docs/images/dashboard.py`` (needs Mosquitto and
Debian's ``chromium``, as ``make system-deps`` installs). It starts ``groundplane up`` (the
default 96-satellite scenario from 2026-08-15T00:00Z, two sessions and a job so the handoff feed
has entries) with ``--dashboard 0``, reads the page's URL from its banner, lets the run go on for
``SETTLE_S`` wall seconds, saves ``dashboard.png`` next to this script, and stops ``up`` with
SIGINT (a clean stop). The PNG is reduced to a 128-colour palette (Pillow, which matplotlib
brings).
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from pathlib import Path

from PIL import Image
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent
GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
CHROMIUM = "/usr/bin/chromium"
SETTLE_S = 25.0
"""Wall seconds between the page's first snapshot and the screenshot (the chart fills up)."""


async def _dashboard_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(120):
        while line := (await process.stdout.readline()).decode():
            print(line, end="")
            if line.strip().startswith("dashboard "):
                return line.split()[1]
    raise SystemExit("groundplane up ended without printing the dashboard's URL")


async def main() -> int:
    process = await asyncio.create_subprocess_exec(
        GROUNDPLANE,
        "up",
        "--start",
        "2026-08-15T00:00:00Z",
        "--sessions",
        "2",
        "--jobs",
        "1",
        "--dashboard",
        "0",
        "--status-interval",
        "30",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = await _dashboard_url(process)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            page = await browser.new_page(viewport={"width": 1500, "height": 940})
            await page.goto(url)
            await page.wait_for_function(
                "Number(document.body.dataset.snapshots || 0) >= 1", timeout=30_000
            )
            await asyncio.sleep(SETTLE_S)
            shot = await page.screenshot()
            await browser.close()
        # A 128-colour palette (octree, which keeps the few yellow and red pixels) keeps the flat
        # page sharp at a third of the size.
        Image.open(io.BytesIO(shot)).quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(
            HERE / "dashboard.png", optimize=True
        )
        print(f"wrote {HERE / 'dashboard.png'}")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                await process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
