"""`groundplane up` on the built-in scenario: starts the whole system, serves a load, answers
`groundplane infer`, writes its summary and trace, and stops cleanly."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundplane.kernel.clock import ClockSpec
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
IN_PROCESS = "--in-process"
"""Most tests here run `up` with every service in its own process (fast); the default scenario
runs both ways, and tests/system (test_processes, test_interrupt) run the multi-process default."""
SERVICES = ("tracking", "links", "nodes-0", "routing", "handoff", "gateway")
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


def _groundplane(*args: str) -> list[str]:
    return [sys.executable, "-m", "groundplane.cli.main", *args]


def _run_up(
    *extra: str,
    interval: str | None = "0.5",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    in_process: bool = True,
) -> subprocess.Popen[str]:
    status = () if interval is None else ("--status-interval", interval)
    mode = (IN_PROCESS,) if in_process else ()
    return subprocess.Popen(
        _groundplane("up", *mode, "--start", "2026-08-15T00:00:00Z", *status, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def _read_until(
    process: subprocess.Popen[str], pattern: str, timeout_s: float = 60
) -> re.Match[str]:
    """Read ``process``'s stdout line by line until a line matches ``pattern``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"up printed no line matching {pattern!r}; got:\n{''.join(seen)}")


@pytest.mark.parametrize("in_process", [False, True], ids=["processes", "in-process"])
def test_up_runs_the_default_scenario_and_writes_summary_and_trace(
    tmp_path: Path, in_process: bool
) -> None:
    """With no files, `up --duration 3` serves the built-in load, prints status lines, writes a
    summary whose counts add up (and no process restarts: each service is counted when it is a
    child process, none in-process) and a trace line per request (simulated UTC times, station
    ids of the built-in stations), and exits 0 after a clean stop."""
    _need_mosquitto()
    summary_path, trace_path = tmp_path / "summary.json", tmp_path / "trace.jsonl"
    process = _run_up(
        "--duration",
        "3",
        "--summary",
        str(summary_path),
        "--trace",
        str(trace_path),
        in_process=in_process,
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "walker:" in out
    assert "gateway" in out
    token = re.search(r"token (\S+)", out)
    assert token is not None, out
    assert token.group(1) != DEFAULT_TOKEN, "a fresh random demo token per run"
    assert len(token.group(1)) >= 32
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
    assert set(summary) == {"requests", "handoffs", "sessions", "jobs", "processes"}
    by_service = {} if in_process else dict.fromkeys(SERVICES, 0)
    assert summary["processes"] == {"restarts": 0, "by_service": by_service}
    lines = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert len(lines) == requests["submitted"]
    stations = {s.id for s in default_stations()}
    # Each request is one OpenTelemetry trace (tracing is on with --trace), its id recorded.
    assert all(re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) for line in lines)
    assert len({line["trace_id"] for line in lines}) == len(lines)
    for line in lines:
        assert set(line) >= TRACE_FIELDS
        assert UTC_Z.match(line["submitted_at"])
        assert UTC_Z.match(line["completed_at"])
        assert line["submitted_at"].startswith("2026-08-15")
        if line["status"] == "ok":
            assert line["station"] in stations
            assert line["satellite"].startswith("walker-")


def test_infer_streams_an_answer_from_a_running_up_which_stops_on_sigint() -> None:
    """`groundplane infer` against the gateway address `up` printed, with the demo token it
    printed, prints an answer and names the satellite; then Ctrl-C (SIGINT) stops `up` cleanly
    with exit 0."""
    _need_mosquitto()
    process = _run_up("--rate", "1")
    try:
        assert process.stdout is not None
        target = token = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and target is None:
            line = process.stdout.readline()
            found = re.search(r"gateway\s+(\S+:\d+) .* token (\S+)", line)
            target, token = (found.group(1), found.group(2)) if found else (None, None)
        assert target is not None, "up did not print its gateway address"
        assert token is not None, "up did not print its demo token"

        def infer(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                _groundplane(
                    "infer",
                    "--gateway",
                    str(target),
                    "--lat",
                    "40.71",
                    "--lon",
                    "-74.01",
                    "--wait",
                    *extra,
                    "hello from New York",
                ),
                env={**os.environ, "GROUNDPLANE_TOKEN": str(token)},
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )

        for extra in ((), ("--session", "first-hour")):
            answer = infer(*extra)
            assert answer.returncode == 0, answer.stderr
            assert "from walker-" in answer.stderr
            # The summary counts the answer's tokens (whitespace-separated words, as the nodes
            # count them), not the stream's chunks: a session turn arrives as one chunk.
            tokens = len(answer.stdout.split())
            assert tokens > 1
            assert re.search(rf"\[{tokens} tokens in [1-9]\d* chunks? from walker-", answer.stderr)
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
        _groundplane("up", IN_PROCESS, "--handoff-margin", "-1", "--duration", "1"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--handoff-margin" in refused.stderr


def test_up_refuses_handoff_options_its_handoff_process_does_not_take() -> None:
    """Multi-process (the default), a --transfer-path or --successor-policy other than the
    default is refused with exit 2, naming --in-process, instead of being silently dropped."""
    for flag, value in (
        ("--transfer-path", "ground-only"),
        ("--successor-policy", "max-elevation"),
    ):
        refused = subprocess.run(
            _groundplane("up", flag, value, "--duration", "1"),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        assert f"{flag} {value} applies only with --in-process" in refused.stderr


STATUS = re.compile(
    r"^sim 2026-08-1[56]T\d\d:\d\d:\d\dZ \(60×\)  requests \d+: .* unavailable.*; nodes \d+ online"
)
ADDRESS = r"\s+127\.0\.0\.1:\d+\s"


def test_up_off_a_terminal_prints_one_marked_status_line_per_interval(tmp_path: Path) -> None:
    """With stdout a pipe, `up --status-interval 1 --duration 4` prints every service's address
    (broker, tracking, routing, handoff, gateway) and its clock spec for other processes, says
    where grpcurl comes from, and prints
    at most one status line per interval: single lines whose time is marked as simulated, at the
    run's speed. A user far from every station makes requests UNAVAILABLE; the status, the final
    lines and the summary name the reason the gateway gave, counted per reason."""
    _need_mosquitto()
    users = tmp_path / "users.csv"
    users.write_text("nyc,New York,40.71,-74.01\npacific,Mid-Pacific,-10.0,-140.0\n")
    summary_path = tmp_path / "summary.json"
    process = _run_up(
        "--duration", "4", "--users", str(users), "--summary", str(summary_path), interval="1"
    )
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    for service in ("broker", "tracking", "routing", "handoff", "gateway"):
        assert re.search(rf"^  {service}{ADDRESS}", out, re.MULTILINE), (service, out)
    assert "grpcurl is a separate download" in out
    shared = re.search(r"^  clock     --clock '([^']+)'", out, re.MULTILINE)
    assert shared is not None, out
    spec = ClockSpec.parse(shared.group(1))
    assert spec.speed == 60.0
    status = [line for line in out.splitlines() if line.startswith("sim ")]
    assert 1 <= len(status) <= 4, out
    for line in status:
        assert STATUS.match(line), line
    assert not re.search(r"^\s+nodes ", out, re.MULTILINE), "the multi-line live block was printed"
    reach = "no ground station within backhaul reach of the user"
    assert reach in status[-1]
    final = [line for line in out.splitlines() if line.startswith("groundplane up: unavailable: ")]
    assert len(final) == 1
    assert reach in final[0]
    requests = json.loads(summary_path.read_text())["requests"]
    reasons = requests["unavailable_reasons"]
    assert reasons[reach] >= 1
    assert sum(reasons.values()) == requests["rejected_unavailable"]


def test_up_broker_dev_credentials_print_a_read_only_mosquitto_sub(tmp_path: Path) -> None:
    """`up --broker-dev-credentials` prints a mosquitto_sub command that, pasted as is, receives
    groundplane's messages (the retained node and link states); the same account may not publish.
    With the default status interval off a terminal, a 3 s run prints one status line. Run from
    an empty folder with its own TMPDIR, `up` leaves both empty. --broker with the flag is
    refused with exit 2, naming both flags."""
    _need_mosquitto()
    if shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto_sub/mosquitto_pub are not installed")
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    process = _run_up("--broker-dev-credentials", "--rate", "1", interval=None, cwd=cwd, env=env)
    try:
        command = shlex.split(_read_until(process, r"^  watch\s+(mosquitto_sub .*)$").group(1))
        assert "gp-watch" in command
        assert command[-4:] == ["-t", "gp/v1/#", "-F", "%t %l bytes"]
        received = subprocess.run(
            [*command, "-C", "5", "-W", "30"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert received.returncode == 0, received.stderr
        lines = received.stdout.splitlines()
        assert len(lines) == 5, lines
        for line in lines:
            assert re.fullmatch(r"gp/v1/\S+ \d+ bytes", line), line
        at = command.index("-t")
        refused = subprocess.run(
            [
                "mosquitto_pub",
                *command[1:at],
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "gp/v1/x",
                "-m",
                "x",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "Not authorized" in refused.stderr
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert list(cwd.iterdir()) == []
    assert list(tmp.iterdir()) == []
    short = _run_up("--duration", "3", "--rate", "1", interval=None, cwd=cwd, env=env)
    out, err = short.communicate(timeout=90)
    assert short.returncode == 0, err
    assert len([line for line in out.splitlines() if line.startswith("sim ")]) == 1, out
    assert list(cwd.iterdir()) == []
    assert list(tmp.iterdir()) == []
    both = subprocess.run(
        _groundplane(
            "up",
            IN_PROCESS,
            "--broker-dev-credentials",
            "--duration",
            "1",
        ),
        env={
            **os.environ,
            "GROUNDPLANE_NODE_PASSWORD": "x",
            "GROUNDPLANE_BROKER": "mqtt://u:p@127.0.0.1:1",
        },
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2
    assert "--broker-dev-credentials adds an account" in both.stderr
    assert "--broker names an existing one" in both.stderr


def test_up_on_a_terminal_redraws_a_live_status_block(tmp_path: Path) -> None:
    """With stdout a terminal (a pty), `up` keeps the live status: a multi-line block (requests,
    nodes, handoffs) redrawn in place with save/restore-cursor escapes, its time marked as
    simulated."""
    _need_mosquitto()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        _groundplane(
            "up",
            IN_PROCESS,
            "--start",
            "2026-08-15T00:00:00Z",
            "--duration",
            "3",
            "--status-interval",
            "1",
        ),
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        _, err = process.communicate(timeout=30)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    out = b"".join(chunks).decode("utf-8", "replace")
    blocks = out.split("\x1b[s\x1b[J")[1:]
    assert 1 <= len(blocks) <= 3, out
    for block in blocks:
        assert re.match(r"sim 2026-08-15T\d\d:\d\d:\d\dZ \(60×\)  requests \d+ submitted", block)
        assert "\r\n  nodes " in block or "\n  nodes " in block
        assert "  handoffs " in block
        assert "\x1b[u" in block
