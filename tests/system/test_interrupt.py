"""Ctrl-C in a terminal (or closing it) stops `groundplane up` cleanly.

A terminal sends SIGINT (SIGHUP when it closes) to its whole foreground process group, not only
to `up`: every child `up` starts (the private Mosquitto) must sit in its own process group, or
it dies first and the services shut down against a dead broker (hundreds of warnings, a shutdown
of tens of seconds, handoffs failing only because of the shutdown). `up` stops its children
itself, in order: the broker last.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.handoff.v1 import handoff_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60.0
"""Wall seconds for `up` to print its addresses and for its first handoff to complete."""
STOP_BOUND_S = 10.0
"""A correctness bound, not a benchmark: a clean stop takes about a second."""
EXIT_TIMEOUT_S = 90.0
"""How long the test waits for `up` to exit at all (a stop against a dead broker took 45 s)."""
PROBLEM = re.compile(r"traceback|warning|error|exception|never retrieved", re.IGNORECASE)
"""What a warning, an error or a traceback printed to stdout looks like."""


SERVICES = ("tracking", "links", "nodes", "routing", "handoff", "gateway")


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


def _mosquitto_children(parent: int) -> dict[int, str]:
    """pid → command line of the mosquitto processes whose parent is ``parent``."""
    return {pid: cmd for pid, (comm, cmd) in _children(parent).items() if comm == "mosquitto"}


def _children(parent: int) -> dict[int, tuple[str, str]]:
    """pid → (name, command line) of the processes whose parent is ``parent``."""
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing paren.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent:
            found[int(entry.name)] = (comm, cmdline)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _wait_for_a_completed_handoff(target: str) -> None:
    """Block until the handoff service has recorded a completed handoff (replayed or live)."""
    with grpc.insecure_channel(target) as channel:  # closing it cancels the stream
        stub = pb_grpc.HandoffServiceStub(channel)
        request = pb.WatchHandoffsRequest(replay=True)
        for reply in stub.WatchHandoffs(request, timeout=START_TIMEOUT_S):
            if reply.event.state == "completed":
                return
    raise AssertionError("the handoff event stream ended before any handoff completed")


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"]
)
def test_a_signal_to_the_process_group_stops_up_cleanly_and_counts_nothing_as_failed(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """`up` (each service a child process) with sessions and a job, run in its own process
    group like a terminal's foreground job, then SIGINT (Ctrl-C) or SIGHUP (the terminal closed)
    to the whole group once a handoff has completed: `up` exits 0 within STOP_BOUND_S, writes no
    warning, error or traceback, its summary counts no failed handoff and no failed turn, and
    neither its Mosquitto nor any of its service processes is left running."""
    _need_mosquitto()
    summary_path, stderr_path = tmp_path / "summary.json", tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "groundplane.cli.main",
                "up",
                "--start",
                "2026-08-15T00:00:00Z",
                "--interval",
                "0.5",
                "--rate",
                "1",
                "--sessions",
                "2",
                "--jobs",
                "1",
                "--data-dir",
                str(tmp_path / "handoff"),
                "--summary",
                str(summary_path),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group, as a shell gives a foreground job
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stdout, name="up-stdout", daemon=True)
    reader.start()
    out: list[str] = []
    brokers: dict[int, str] = {}
    children: dict[int, tuple[str, str]] = {}
    try:
        handoff_target = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while handoff_target is None:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"up ended before serving: {''.join(out)}"
            out.append(line)
            found = re.search(r"handoff\s+(\S+:\d+)", line)
            handoff_target = found.group(1) if found else None
        brokers = _mosquitto_children(process.pid)
        assert len(brokers) == 1, f"expected up's one private Mosquitto, found {brokers}"
        # The broker and a `groundplane serve …` process per service (one nodes shard).
        children = _children(process.pid)
        assert len(children) == 1 + len(SERVICES), children
        _wait_for_a_completed_handoff(handoff_target)

        interrupted = time.monotonic()
        os.killpg(process.pid, stop_signal)  # what the terminal does: the whole group
        process.wait(timeout=EXIT_TIMEOUT_S)  # to report how long it took, within or not
        stop_s = time.monotonic() - interrupted
        reader.join(timeout=STOP_BOUND_S)
        while (line := lines.get_nowait()) is not None:
            out.append(line)
        orphans = [pid for pid in brokers if _alive(pid)]
        left = [pid for pid in children if _alive(pid)]
        config = next(iter(brokers.values())).split(" -c ")[-1]
        pgrep = subprocess.run(["pgrep", "-f", config], capture_output=True, text=True, check=False)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in [*brokers, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)  # an orphan: it fails below, but nothing is left
        reader.join(timeout=STOP_BOUND_S)
        if process.stdout is not None:
            process.stdout.close()
    err = stderr_path.read_text().splitlines()
    problems = err + [line.rstrip() for line in out if PROBLEM.search(line)]
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    seen = {
        "exit code": process.returncode,
        "stopped within the bound": stop_s <= STOP_BOUND_S,
        "tracebacks": sum("Traceback" in line for line in problems),
        "warning lines": len(problems),
        "failed handoffs": summary.get("handoffs", {}).get("failed"),
        "failed turns": summary.get("sessions", {}).get("failed_turns"),
        "mosquitto left running": orphans,
        "children left running": left,
        "processes with its config": pgrep.stdout.split(),
    }
    clean = {
        "exit code": 0,
        "stopped within the bound": True,
        "tracebacks": 0,
        "warning lines": 0,
        "failed handoffs": 0,
        "failed turns": 0,
        "mosquitto left running": [],
        "children left running": [],
        "processes with its config": [],
    }
    assert seen == clean, (
        f"stopped in {stop_s:.1f} s (bound {STOP_BOUND_S} s); first problem lines:\n"
        + "\n".join(problems[:15])
    )
    assert out[-1].rstrip().endswith("stopped cleanly")
    assert summary["handoffs"]["completed"] >= 1, summary
