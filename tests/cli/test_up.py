"""`groundplane up` on the built-in scenario starts, reports visibility and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from groundplane.scenario import default_stations


def _run_up(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "groundplane.cli.main",
            "up",
            "--start",
            "2026-08-15T00:00:00Z",
            "--interval",
            "0.5",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_up_runs_the_default_scenario_for_its_duration() -> None:
    """With no files, `up --duration 2` shows every built-in station with a visible count and
    exits 0 after a clean stop."""
    process = _run_up("--duration", "2")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "walker:" in out
    for station in default_stations():
        assert station.id in out
    assert "visible satellites" in out
    assert out.rstrip().endswith("stopped cleanly")


@pytest.mark.slow
def test_up_stops_cleanly_on_sigint() -> None:
    """Ctrl-C (SIGINT) while running ends the run with a clean shutdown and exit 0."""
    process = _run_up()
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "visible satellites" in line:
                break
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert out.rstrip().endswith("stopped cleanly")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
