"""Energy-blind vs energy-aware routing on the same ``groundplane up --energy`` scenario.

Runs ``groundplane up --energy`` twice in the same invocation, identical but for ``--policy``:
the scenario's energy-blind default (``max-elevation``) and ``energy-aware``; same fixed start,
speed, duration, load (default users, ``--rate``), sessions and jobs. Each run writes its
``--summary``; the figures compared are the issue's:

* battery energy drawn (``energy.battery_wh_drawn``, all nodes, bus included) and the part the
  compute drew beyond the bus's own eclipse draw (``energy.compute_battery_wh``: what routing
  can change; the bus drains every battery in every eclipse whatever the policy);
* nodes that went below their reserve (goal 0);
* requests served (goal within 2 %) and p99 latency (goal within 20 %).

Then the cost of the sunlit fraction per visibility tick at 10,000 satellites: one SGP4
propagation of 10,000 satellites at one instant (the reference every tick pays already) and the
same plus the analytic Sun and the conical shadow, as a ratio.

    .venv/bin/python bench/energy.py [--speed 720] [--duration 120] [--in-process]
        [--constellation walker:96/8/1@550km:53] [--rate 4] [--sessions 4] [--jobs 2]

(720× for 120 wall seconds is 24 simulated hours per run.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from groundplane.orbit.constellations import generate
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction

START = "2026-03-01T00:00:00Z"
POLICIES = ("max-elevation", "energy-aware")


def run_up(policy: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    summary = workdir / f"summary-{policy}.json"
    command = [
        sys.executable,
        "-m",
        "groundplane.cli.main",
        "up",
        "--energy",
        "--policy",
        policy,
        "--constellation",
        args.constellation,
        "--start",
        START,
        "--speed",
        f"{args.speed:g}",
        "--duration",
        f"{args.duration:g}",
        "--rate",
        f"{args.rate:g}",
        "--sessions",
        str(args.sessions),
        "--jobs",
        str(args.jobs),
        "--summary",
        str(summary),
        "--status-interval",
        "30",
        *(["--in-process"] if args.in_process else []),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDPLANE_")}
    env["PATH"] = "/usr/sbin:" + env.get("PATH", "")
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"groundplane up --policy {policy} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  {policy}: {took:.0f} s wall; " + done.stdout.strip().splitlines()[-2], flush=True)
    result: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
    return result


def sunlit_cost(satellites: int = 10_000, repeats: int = 5) -> tuple[float, float]:
    """Best-of-``repeats`` seconds: propagation alone, and propagation + Sun + shadow."""
    epoch = datetime(2026, 3, 1, tzinfo=UTC)
    elements = generate(f"walker:{satellites}/100/1@550km:53", epoch)
    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    jd, fr = utc_jd_fr(epoch)
    base, full = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        states = propagate(batch, jd, fr)
        t1 = time.perf_counter()
        lit = sunlit_fraction(states.r_teme_km, sun_position_teme_km(jd, fr))
        t2 = time.perf_counter()
        assert lit.shape == (satellites, 1)
        assert np.isfinite(lit).all()
        base.append(t1 - t0)
        full.append(t2 - t0)
    return min(base), min(full)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--constellation", default="walker:96/8/1@550km:53")
    parser.add_argument("--speed", type=float, default=720.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    hours = args.speed * args.duration / 3600.0
    mode = "in-process" if args.in_process else "multi-process"
    print(
        f"energy bench: {args.constellation}, {hours:g} simulated h ({args.speed:g}× for "
        f"{args.duration:g} s), {args.rate:g} req/s, {args.sessions} sessions, {args.jobs} jobs, "
        f"{mode}, start {START}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="gp-energy-bench-") as tmp:
        results = {policy: run_up(policy, args, Path(tmp)) for policy in POLICIES}
    rows = []
    for policy in POLICIES:
        summary = results[policy]
        energy, requests = summary["energy"], summary["requests"]
        rows.append(
            (
                policy,
                energy["battery_wh_drawn"],
                energy["compute_battery_wh"],
                energy["nodes_below_reserve"],
                energy["served_in_eclipse"],
                requests["succeeded"],
                requests["latency_ms"]["p99"] or float("nan"),
                summary["jobs"]["completed_items"],
            )
        )
    print(
        f"{'policy':<14} {'battery Wh':>11} {'compute Wh':>11} {'<reserve':>8} "
        f"{'in eclipse':>10} {'served':>7} {'p99 ms':>8} {'job items':>9}"
    )
    for row in rows:
        print(
            f"{row[0]:<14} {row[1]:>11.1f} {row[2]:>11.2f} {row[3]:>8} {row[4]:>10} "
            f"{row[5]:>7} {row[6]:>8.1f} {row[7]:>9}"
        )
    blind, aware = rows
    print(
        f"ratios energy-aware / blind: battery drawn {aware[1] / blind[1]:.3f}, compute battery "
        f"{aware[2] / blind[2] if blind[2] else float('nan'):.3f}, served "
        f"{aware[5] / blind[5] if blind[5] else float('nan'):.3f}, p99 "
        f"{aware[6] / blind[6]:.3f}; nodes below reserve {blind[3]} → {aware[3]}"
    )
    base_s, full_s = sunlit_cost()
    print(
        f"sunlit fraction per tick at 10,000 satellites: {full_s * 1e3:.1f} ms (propagation alone "
        f"{base_s * 1e3:.1f} ms; ratio {full_s / base_s:.2f}×)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
