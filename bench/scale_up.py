"""Cost of multi-process ``groundplane up`` by constellation size: CPU-seconds per simulated
minute and peak RSS of the whole process tree, with the requests served.

For each size (96, 384, 1,584 and 6,336 satellites by default: ``walker:N/P/1@550km:53``, see
``startup_up.SPECS``) one ``groundplane up --constellation SPEC --start 2026-08-16T00:00:00Z
--duration D`` runs as a child of this script with ``up``'s defaults otherwise (multi-process,
60×, the default stations and users, 4 requests/s through the gateway). While it runs, every
0.5 s, the script reads ``/proc/<pid>/stat`` (utime + stime) and ``/proc/<pid>/status``
(``VmRSS``, ``VmHWM``) of every process of its tree (``up``, its ``serve`` children, Mosquitto:
every descendant, found by parent id).

* ``start CPU-s``: CPU of the tree from the spawn of ``up`` to its banner (every child ready);
* ``CPU-s/sim-min``: CPU of the tree over the ``--duration`` that follows (the sample nearest
  banner + D), per simulated minute (D × 60 / 60);
* ``total CPU-s``: the whole run, start and stop included (``wait4`` of ``up``: every reaped
  descendant counted);
* ``peak RSS``: the sum of every process's own peak (``VmHWM``), and the peak of the sampled sum
  of ``VmRSS`` (the tree's footprint at its largest);
* ``served``: requests answered / submitted (``--summary``).

The reference is the per-satellite cost between sizes: ``CPU-s/sim-min per 1k sats`` and its
ratio to the smallest size (≤ 1 when the cost grows at most linearly with the satellites).

    .venv/bin/python bench/scale_up.py [--sizes 96,384,1584,6336] [--duration 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from startup_up import walker

START = "2026-08-16T00:00:00Z"
SPEED = 60.0
"""``up``'s default speed (simulated seconds per wall second)."""
SAMPLE_S = 0.5
RUN_TIMEOUT_S = 240.0
"""Wall seconds one ``up`` may take in all (start, duration, stop) before it is killed."""
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat(pid: int) -> tuple[int, float] | None:
    """Parent id and utime + stime (s) of ``pid``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * TICK_S


def _memory_kb(pid: int) -> tuple[int, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in kB (0 when gone)."""
    rss = hwm = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class TreeSampler:
    """Samples the process tree under ``root`` every :data:`SAMPLE_S` in a thread."""

    root: int
    cpu_s: dict[int, float] = field(default_factory=dict)
    hwm_kb: dict[int, int] = field(default_factory=dict)
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(perf_counter, tree CPU-s so far, tree VmRSS kB)."""
    processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat is not None:
                    parents[int(entry)] = stat[0]
        members, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            for pid, ppid in parents.items():
                if ppid == parent and pid not in members:
                    members.add(pid)
                    frontier.append(pid)
        return sorted(members)

    def sample(self) -> None:
        rss_kb = 0
        pids = self.tree()
        for pid in pids:
            stat = _stat(pid)
            if stat is None:
                continue
            self.cpu_s[pid] = stat[1]
            rss, hwm = _memory_kb(pid)
            rss_kb += rss
            self.hwm_kb[pid] = max(hwm, self.hwm_kb.get(pid, 0))
        self.processes = max(self.processes, len(pids))
        self.samples.append((time.perf_counter(), sum(self.cpu_s.values()), rss_kb))

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop.set()

    def cpu_at(self, at: float) -> float:
        """The tree's CPU-s at the sample nearest ``at``."""
        return min(self.samples, key=lambda s: abs(s[0] - at))[1]


@dataclass(frozen=True)
class Result:
    satellites: int
    start_wall_s: float
    start_cpu_s: float
    cpu_per_sim_min: float
    total_cpu_s: float
    hwm_sum_mb: float
    rss_peak_mb: float
    processes: int
    served: int
    submitted: int
    load_1m: float


def run_size(satellites: int, duration_s: float, workdir: Path) -> Result:
    spec = walker(satellites)
    summary = workdir / f"summary-{satellites}.json"
    argv = [
        sys.executable,
        "-m",
        "groundplane.cli.main",
        "up",
        "--constellation",
        spec,
        "--start",
        START,
        "--duration",
        f"{duration_s:g}",
        "--summary",
        str(summary),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDPLANE_")}
    load = os.getloadavg()[0]
    spawned = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    sampler = TreeSampler(process.pid)
    thread = threading.Thread(target=sampler.run, name=f"sampler-{satellites}", daemon=True)
    thread.start()
    killer = threading.Timer(RUN_TIMEOUT_S, process.kill)
    killer.start()
    ready: float | None = None
    output = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if ready is None and line.startswith("  broker "):
            ready = time.perf_counter()
            sampler.sample()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    killer.cancel()
    sampler.stop()
    thread.join()
    if process.returncode != 0 or ready is None or not summary.exists():
        tail = "".join(output[-15:])
        raise SystemExit(f"{spec}: up exited {process.returncode}:\n{tail}")
    requests = json.loads(summary.read_text())["requests"]
    start_cpu = sampler.cpu_at(ready)
    steady_cpu = sampler.cpu_at(ready + duration_s) - start_cpu
    return Result(
        satellites=satellites,
        start_wall_s=ready - spawned,
        start_cpu_s=start_cpu,
        cpu_per_sim_min=steady_cpu / (duration_s * SPEED / 60.0),
        total_cpu_s=usage.ru_utime + usage.ru_stime,
        hwm_sum_mb=sum(sampler.hwm_kb.values()) / 1024,
        rss_peak_mb=max(s[2] for s in sampler.samples) / 1024,
        processes=sampler.processes,
        served=int(requests["succeeded"]),
        submitted=int(requests["submitted"]),
        load_1m=load,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,384,1584,6336", help="satellite counts")
    parser.add_argument("--duration", type=float, default=20.0, help="wall s of each run (≤ 60)")
    args = parser.parse_args()
    if not 0 < args.duration <= 60:
        raise SystemExit(f"--duration must be within (0, 60] wall seconds, got {args.duration}")
    sizes = [int(size) for size in args.sizes.split(",")]
    print(
        f"groundplane up (multi-process, {SPEED:g}×, 4 requests/s) from {START}, "
        f"--duration {args.duration:g} s = {args.duration * SPEED / 60:g} simulated minutes"
    )
    print(
        f"{'satellites':>10}{'procs':>6}{'start s':>8}{'start CPU-s':>12}{'CPU-s/sim-min':>14}"
        f"{'per 1k sats':>12}{'×smallest':>10}{'total CPU-s':>12}{'ΣVmHWM MB':>10}"
        f"{'peak RSS MB':>12}{'served':>10}{'load 1m':>8}"
    )
    smallest: float | None = None
    with tempfile.TemporaryDirectory(prefix="gp-scale-") as tmp:
        for size in sizes:
            result = run_size(size, args.duration, Path(tmp))
            per_k = result.cpu_per_sim_min / (size / 1000)
            smallest = per_k if smallest is None else smallest
            print(
                f"{size:>10}{result.processes:>6}{result.start_wall_s:>8.1f}"
                f"{result.start_cpu_s:>12.1f}{result.cpu_per_sim_min:>14.2f}{per_k:>12.2f}"
                f"{per_k / smallest:>10.2f}{result.total_cpu_s:>12.1f}{result.hwm_sum_mb:>10.0f}"
                f"{result.rss_peak_mb:>12.0f}{f'{result.served}/{result.submitted}':>10}"
                f"{result.load_1m:>8.2f}",
                flush=True,
            )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
