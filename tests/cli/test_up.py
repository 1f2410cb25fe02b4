"""`groundplane up` on the built-in scenario: starts the whole system, serves a load, answers
`groundplane infer`, writes its summary and trace, and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundplane.scenario import DEFAULT_TOKEN, default_stations

pytestmark = pytest.mark.slow

TRACE_FIELDS = {
    "request_id",
    "submitted_at",
    "completed_at",
    "status",
    "user_lat",
    "user_lon",
    "station",
    "satellite",
    "attempts",
    "latency_ms",
}
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


def _groundplane(*args: str) -> list[str]:
    return [sys.executable, "-m", "groundplane.cli.main", *args]


def _run_up(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _groundplane("up", "--start", "2026-08-15T00:00:00Z", "--interval", "0.5", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_up_runs_the_default_scenario_and_writes_summary_and_trace(tmp_path: Path) -> None:
    """With no files, `up --duration 3` serves the built-in load, prints status lines, writes a
    summary whose counts add up and a trace line per request (simulated UTC times, station ids of
    the built-in stations), and exits 0 after a clean stop."""
    _need_mosquitto()
    summary_path, trace_path = tmp_path / "summary.json", tmp_path / "trace.jsonl"
    process = _run_up("--duration", "3", "--summary", str(summary_path), "--trace", str(trace_path))
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    assert "walker:" in out
    assert "gateway" in out
    assert DEFAULT_TOKEN in out
    assert "requests" in out
    assert "links" in out
    assert out.rstrip().endswith("stopped cleanly")
    summary = json.loads(summary_path.read_text())
    requests = summary["requests"]
    assert requests["submitted"] >= 5
    assert requests["succeeded"] >= 1
    assert requests["submitted"] == sum(
        requests[k] for k in ("succeeded", "failed", "rejected_unavailable", "rejected_overload")
    )
    assert requests["latency_ms"]["p50"] <= requests["latency_ms"]["p99"]
    assert set(summary) == {"requests", "handoffs", "sessions", "jobs"}
    lines = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert len(lines) == requests["submitted"]
    stations = {s.id for s in default_stations()}
    for line in lines:
        assert set(line) >= TRACE_FIELDS
        assert UTC_Z.match(line["submitted_at"])
        assert UTC_Z.match(line["completed_at"])
        assert line["submitted_at"].startswith("2026-08-15")
        if line["status"] == "ok":
            assert line["station"] in stations
            assert line["satellite"].startswith("walker-")


def test_infer_streams_an_answer_from_a_running_up_which_stops_on_sigint() -> None:
    """`groundplane infer` against the gateway address `up` printed, with the documented demo
    token, prints an answer and names the satellite; then Ctrl-C (SIGINT) stops `up` cleanly
    with exit 0."""
    _need_mosquitto()
    process = _run_up("--rate", "1")
    try:
        assert process.stdout is not None
        target = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and target is None:
            line = process.stdout.readline()
            found = re.search(r"gateway\s+(\S+:\d+)", line)
            target = found.group(1) if found else None
        assert target is not None, "up did not print its gateway address"
        infer = subprocess.run(
            _groundplane(
                "infer",
                "--gateway",
                target,
                "--lat",
                "40.71",
                "--lon",
                "-74.01",
                "--wait",
                "hello from New York",
            ),
            env={**os.environ, "GROUNDPLANE_TOKEN": DEFAULT_TOKEN},
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert infer.returncode == 0, infer.stderr
        assert infer.stdout.strip()
        assert "from walker-" in infer.stderr
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert out.rstrip().endswith("stopped cleanly")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_infer_without_a_token_teaches_where_it_comes_from() -> None:
    """No --token and no GROUNDPLANE_TOKEN: exit 2 with a message naming both."""
    env = {k: v for k, v in os.environ.items() if k != "GROUNDPLANE_TOKEN"}
    result = subprocess.run(
        _groundplane("infer", "--gateway", "127.0.0.1:1", "--lat", "0", "--lon", "0", "hi"),
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GROUNDPLANE_TOKEN" in result.stderr
    assert "--token" in result.stderr


def test_up_runs_sessions_and_jobs_through_the_handoff_manager(tmp_path: Path) -> None:
    """`up --sessions 1 --jobs 1 --job-items 5` with the handoff flags set prints the handoff
    service's address and writes a summary in which the session's turns all succeeded with the
    full context, and the job completed its five items with none executed twice; a negative
    --handoff-margin is refused with exit 2 and a message naming the setting."""
    _need_mosquitto()
    summary_path = tmp_path / "summary.json"
    process = _run_up(
        "--duration",
        "5",
        "--rate",
        "0",
        "--sessions",
        "1",
        "--jobs",
        "1",
        "--job-items",
        "5",
        "--successor-policy",
        "max-elevation",
        "--transfer-path",
        "ground-only",
        "--handoff-margin",
        "8",
        "--min-dwell",
        "20",
        "--data-dir",
        str(tmp_path / "handoff"),
        "--summary",
        str(summary_path),
    )
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    assert re.search(r"handoff\s+\S+:\d+", out), out
    summary = json.loads(summary_path.read_text())
    sessions = summary["sessions"]
    assert sessions["turns"] >= 3
    assert sessions["failed_turns"] == 0
    assert sessions["context_mismatches"] == 0
    assert summary["jobs"] == {"items": 5, "completed_items": 5, "duplicate_items": 0}
    assert set(summary["handoffs"]) >= {"planned", "completed", "failed"}
    assert (tmp_path / "handoff" / "handoff.sqlite").exists()
    refused = subprocess.run(
        _groundplane("up", "--handoff-margin", "-1", "--duration", "1"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--handoff-margin" in refused.stderr
