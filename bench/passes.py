"""Benchmark: `groundplane passes` as a whole process vs Skyfield ``find_events``, same run.

Run: .venv/bin/python bench/passes.py [--runs 5] [--subset 60] [--scale 1000,3000,10000]
     [--no-compile]

0. groundplane's bytecode is written first (as pip does when installing a wheel), unless
   ``--no-compile``: an editable install under ``PYTHONDONTWRITEBYTECODE=1`` would recompile
   its sources in every CLI process.

1. The CLI as a user runs it, a fresh process each time (median of ``--runs``)::

       groundplane passes --elements data/satellites-2026-08.3le --sites data/ground-stations.csv
           --start 2026-08-16T00:00:00Z --hours 24 --min-elevation 10 --format json > FILE

   timed from spawn to exit, with its peak RSS (``os.wait4`` of that child). The same command
   with ``--timings`` reports its own stages on stderr: start-up (process start → command
   handler, from /proc: interpreter, imports, argument parsing), inputs, pass search and
   refinement, output. ``passes --help`` is timed alone too (start-up without the work).
2. Search vs refinement, which the CLI reports as one stage, split by running the same search
   in this process through the library with timers around ``orbit.passes``' SGP4 call
   (``propagate``), its batched refinement of every piece (``_refine``) and the exact-SGP4
   polish of each edge (``_polish_edges``, which itself calls ``propagate``: a nested call counts
   in both). Only names that exist are timed (the split says so).
3. Reference: Skyfield ``EarthSatellite.find_events`` (altitude 10°, the same sites and window)
   on a random subset of the satellites the CLI planned (``--subset`` × 12 sites), scaled per
   satellite-site-day to the CLI's whole work. Skyfield is timed in this process (no start-up
   counted for it); the CLI's figure includes its whole process. The subset runs in
   ``--runs`` slices, one after each CLI run, so both see the same load on a shared machine;
   each round gives a ratio (its Skyfield slice scaled, over its CLI run) and their median is
   printed with the ratio of the totals. The CLI's JSON output is
   checked against Skyfield's rises and sets on the subset (passes missed either way).
4. Scale through the library API: a Walker constellation (550 km, 53°) of N satellites × 100
   sites × 24 h (``find_pass_table`` in one call), each N in a fresh process: time and peak RSS,
   and both per satellite, for growth from 1,000 to 10,000 satellites.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from groundplane.orbit.elements import ElementSet, parse_elements
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site, parse_sites_csv
from groundplane.tracking.catalog import AgeVerdict, ElementAgePolicy

#: The repository's data files (data/README.md).
DATA = Path(__file__).resolve().parents[1] / "data"
ELEMENTS = DATA / "satellites-2026-08.3le"
SITES = DATA / "ground-stations.csv"
START = datetime(2026, 8, 16, tzinfo=UTC)
HOURS = 24.0
MIN_ELEVATION_DEG = 10.0
GROUNDPLANE = Path(sys.executable).with_name("groundplane")
COMMAND = [
    str(GROUNDPLANE),
    "passes",
    "--elements",
    str(ELEMENTS),
    "--sites",
    str(SITES),
    "--start",
    "2026-08-16T00:00:00Z",
    "--hours",
    f"{HOURS:g}",
    "--min-elevation",
    f"{MIN_ELEVATION_DEG:g}",
    "--format",
    "json",
]
#: Seconds: a CLI AOS/LOS and a Skyfield rise/set closer than this are the same event.
MATCH_S = 5.0


# ------------------------------------------------------------------------------ the process


def run_child(argv: list[str], stdout: Any) -> tuple[float, Any, str]:
    """Wall seconds from spawn to exit, resource usage (``os.wait4`` of this child alone:
    ``ru_maxrss`` KiB, ``ru_utime``/``ru_stime``) and stderr of one child writing to ``stdout``."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=stdout, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        err = errors.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {err[-2000:]}")
    return wall, usage, err


def stages_of(stderr: str) -> dict[str, float]:
    """The ``--timings`` line: stage name → seconds."""
    (line,) = [x for x in stderr.splitlines() if x.startswith("timings (s): ")]
    listed = line.removeprefix("timings (s): ").split(" (")[0]
    return {name: float(seconds) for name, seconds in re.findall(r"([a-z-]+) ([0-9.]+)", listed)}


# ------------------------------------------------------------------- search vs refinement


@contextmanager
def timed_names(module: Any, names: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Seconds spent in each of ``module``'s functions ``names`` (the outermost calls only)."""
    spent = dict.fromkeys((n for n in names if hasattr(module, n)), 0.0)
    originals = {n: getattr(module, n) for n in spent}
    depth = [0]

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[name] += time.perf_counter() - began

        return timed

    for name, function in originals.items():
        setattr(module, name, wrap(name, function))
    try:
        yield spent
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


#: The functions of ``orbit.passes`` the in-process split times.
SPLIT_NAMES = ("propagate", "_refine", "_polish_edges")


def library_split(batch: SatelliteBatch, sites: list[Site]) -> dict[str, float]:
    from groundplane.orbit import passes  # noqa: PLC0415 - patched for the split only

    stop = START + timedelta(hours=HOURS)
    passes.find_pass_table(batch, sites, START, stop)  # warm-up
    with timed_names(passes, SPLIT_NAMES) as spent:
        began = time.perf_counter()
        passes.find_pass_table(batch, sites, START, stop)
        total = time.perf_counter() - began
    return {"total": total, **spent}


# ------------------------------------------------------------------------------ Skyfield


def skyfield_events(
    elements: list[ElementSet], sites: list[Site]
) -> tuple[float, dict[tuple[str, str], list[tuple[float, float]]]]:
    """Skyfield's passes (rise, set seconds after START; ``nan`` where the window cuts them)
    of every satellite × site, and the seconds it took."""
    from sgp4.api import Satrec  # noqa: PLC0415
    from skyfield.api import EarthSatellite, wgs84  # noqa: PLC0415
    from skyfield.api import load as sf_load  # noqa: PLC0415

    ts = sf_load.timescale(builtin=True)
    t0 = ts.from_datetime(START)
    t1 = ts.from_datetime(START + timedelta(hours=HOURS))
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    began = time.perf_counter()
    for element_set in elements:
        satrec: Satrec = element_set.to_satrec()
        sat = EarthSatellite.from_satrec(satrec, ts)
        for site in sites:
            topos = wgs84.latlon(site.lat_deg, site.lon_deg, elevation_m=site.alt_m)
            times, kinds = sat.find_events(topos, t0, t1, altitude_degrees=MIN_ELEVATION_DEG)
            seconds = [(t - t0.tt) * 86400.0 for t in times.tt]
            passes: list[tuple[float, float]] = []
            rise = math.nan
            for at, kind in zip(seconds, kinds, strict=True):
                if kind == 0:
                    rise = at
                elif kind == 2:
                    passes.append((rise, at))
                    rise = math.nan
            if not math.isnan(rise):
                passes.append((rise, math.nan))
            found[(element_set.catalog_id, site.id)] = passes
    return time.perf_counter() - began, found


def compare(
    ours: list[dict[str, Any]], theirs: dict[tuple[str, str], list[tuple[float, float]]]
) -> tuple[int, int, int]:
    """(passes compared, ours without a Skyfield match, Skyfield's without ours) on the pairs
    Skyfield ran; an edge the window cuts is not compared."""

    def seconds(text: str) -> float:
        return (datetime.fromisoformat(text.replace("Z", "+00:00")) - START).total_seconds()

    by_pair: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in ours:
        key = (row["catalog_id"], row["site"])
        if key in theirs:
            aos = math.nan if row["aos_clipped"] else seconds(row["aos"])
            los = math.nan if row["los_clipped"] else seconds(row["los"])
            by_pair.setdefault(key, []).append((aos, los))

    def unmatched(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> int:
        def near(x: float, y: float) -> bool:
            return math.isnan(x) or math.isnan(y) or abs(x - y) <= MATCH_S

        return sum(
            not any(near(p[0], q[0]) and near(p[1], q[1]) for q in b)
            for p in a
            if not (math.isnan(p[0]) and math.isnan(p[1]))
        )

    compared = sum(len(v) for v in by_pair.values())
    missing = sum(unmatched(by_pair.get(k, []), v) for k, v in theirs.items())
    extra = sum(unmatched(v, by_pair.get(k, [])) for k, v in theirs.items())
    return compared, missing, extra


# ------------------------------------------------------------------------------- scale


def scale_sites(count: int) -> list[Site]:
    """``count`` sites spread evenly (a Fibonacci lattice) between 58° S and 58° N."""
    golden = (1 + 5**0.5) / 2
    return [
        Site(
            f"s{i:03d}",
            math.degrees(math.asin(-0.85 + 1.7 * (i + 0.5) / count)),
            (360.0 * i / golden) % 360.0 - 180.0,
            0.0,
            min_elevation_deg=MIN_ELEVATION_DEG,
        )
        for i in range(count)
    ]


def scale_child(total: int) -> None:
    """One library call on a Walker shell of ``total`` satellites × 100 sites × 24 h; prints
    ``{"satellites", "passes", "seconds"}`` (run in a fresh process for its peak RSS)."""
    from groundplane.orbit.constellations import generate  # noqa: PLC0415
    from groundplane.orbit.passes import find_pass_table  # noqa: PLC0415

    planes = max(1, round(math.sqrt(total / 2)))
    while total % planes:
        planes -= 1
    elements = generate(f"walker:{total}/{planes}/1@550km:53", START)
    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    sites = scale_sites(100)
    began = time.perf_counter()
    table = find_pass_table(batch, sites, START, START + timedelta(hours=HOURS))
    took = time.perf_counter() - began
    print(json.dumps({"satellites": total, "passes": len(table), "seconds": took}))


# -------------------------------------------------------------------------------- main


def planned(elements: list[ElementSet]) -> list[ElementSet]:
    """The satellites the CLI plans for this window (too-old elements are skipped)."""
    policy = ElementAgePolicy()
    stop = START + timedelta(hours=HOURS)
    return [
        e
        for e in elements
        if AgeVerdict.REFUSE not in (policy.judge(e, START).verdict, policy.judge(e, stop).verdict)
    ]


def compile_package() -> None:
    """Write the bytecode of groundplane's modules, as ``pip install`` of a wheel does.

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` (set on the shared build machine)
    never writes it, so every CLI process would compile groundplane's sources again (~70 ms of
    CPU at start-up) while numpy and the other installed packages load their bytecode.
    """
    import groundplane  # noqa: PLC0415 - only to find the package's folder

    folders = list(groundplane.__path__)  # a namespace package: no __file__
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)
    print(
        f"bytecode: {', '.join(folders)} compiled first (as pip does for a wheel; "
        "--no-compile skips; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"
    )


def main() -> None:  # noqa: PLR0915 - one report, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=60, help="satellites Skyfield runs")
    parser.add_argument("--scale", default="1000,3000,10000", help="sizes; '' skips")
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-compile", action="store_true", help="do not write groundplane's bytecode first"
    )
    args = parser.parse_args()
    if args.scale_child:
        scale_child(args.scale_child)
        return
    if not args.no_compile:
        compile_package()

    print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    elements = planned(parse_elements(ELEMENTS.read_text(), source=str(ELEMENTS)))
    sites = parse_sites_csv(SITES.read_text(), MIN_ELEVATION_DEG, source=str(SITES))
    work = len(elements) * len(sites)
    print(
        f"work: {len(elements)} satellites (of the file's, the rest too old) × {len(sites)} "
        f"sites × {HOURS:g} h = {work} satellite-site-days, min elevation {MIN_ELEVATION_DEG:g}°"
    )

    # Rounds: each runs the CLI (plain, then with --timings) and one slice of the Skyfield
    # subset, so both see the same load; a round's ratio compares neighbours in time.
    rng = np.random.default_rng(3)
    subset = [elements[i] for i in sorted(rng.choice(len(elements), args.subset, replace=False))]
    slices = [subset[i :: args.runs] for i in range(args.runs)]
    helps: list[float] = []
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[int] = []
    stages: list[dict[str, float]] = []
    rests: list[float] = []
    sky_s = sky_cpu = 0.0
    theirs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    round_ratios: list[float] = []
    round_cpu_ratios: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "passes.json"
        for part in slices:
            helps.append(run_child([*COMMAND[:2], "--help"], subprocess.DEVNULL)[0])
            with output.open("w") as handle:
                wall, usage, _ = run_child(COMMAND, handle)
            walls.append(wall)
            cpus.append(usage.ru_utime + usage.ru_stime)
            rss.append(usage.ru_maxrss)
            with output.open("w") as handle:
                timed_wall, _, err = run_child([*COMMAND, "--timings"], handle)
            stages.append(stages_of(err))
            rests.append(timed_wall - sum(stages[-1].values()))
            cpu_before = time.process_time()
            part_s, part_events = skyfield_events(part, sites)
            part_cpu = time.process_time() - cpu_before
            sky_s += part_s
            sky_cpu += part_cpu
            theirs.update(part_events)
            pairs = len(part) * len(sites)
            round_ratios.append(part_s / pairs * work / wall)
            round_cpu_ratios.append(part_cpu / pairs * work / cpus[-1])
        size_mb = output.stat().st_size / 1e6
        rows = json.loads(output.read_text())["passes"]
    cli_s = statistics.median(walls)
    print(
        f"CLI (whole process, --format json > file, {size_mb:.1f} MB, {len(rows)} passes): "
        f"median {cli_s:.3f} s, best {min(walls):.3f} s over {args.runs} runs (CPU time "
        f"median {statistics.median(cpus):.3f} s); peak RSS {max(rss) / 1024:.0f} MiB"
    )
    print(
        f"  `passes --help` alone: median {statistics.median(helps):.3f} s, best {min(helps):.3f} s"
    )
    names = list(stages[0])
    medians = {n: statistics.median(s[n] for s in stages) for n in names}
    for name in names:
        print(f"  {name}: {medians[name]:.3f} s (median of {args.runs}, from --timings)")
    print(
        f"  rest (interpreter exit, spawn, unaccounted): {statistics.median(rests):.3f} s "
        "(wall of the --timings run minus its stages)"
    )

    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    split = library_split(batch, sites)
    timed = [n for n in SPLIT_NAMES if n in split]
    parts = ", ".join(f"{n} {split[n]:.3f} s" for n in timed) or "nothing timed"
    print(
        f"search split (library, in process, one run of {split['total']:.3f} s; a nested call "
        f"counts in each of its callers): {parts}"
    )

    sky_per = sky_s / (len(subset) * len(sites))
    sky_full = sky_per * work
    print(
        f"Skyfield find_events (in process, in {args.runs} slices between the CLI runs): "
        f"{sky_s:.2f} s for {len(subset)}×{len(sites)} = "
        f"{sky_per * 1e3:.2f} ms per satellite-site-day → {sky_full:.1f} s scaled to the work"
    )
    print(
        f"ratio, Skyfield / whole CLI process: {sky_full / statistics.mean(walls):.1f}× (totals), "
        f"{statistics.median(round_ratios):.1f}× (median of the {args.runs} rounds' ratios, "
        f"range {min(round_ratios):.1f}-{max(round_ratios):.1f}); target ≥ 30×. In CPU time: "
        f"{sky_cpu / (len(subset) * len(sites)) * work / statistics.mean(cpus):.1f}× (totals), "
        f"{statistics.median(round_cpu_ratios):.1f}× (median of rounds)"
    )
    compared, missing, extra = compare(rows, theirs)
    print(
        f"check on the subset: {compared} CLI passes; Skyfield passes without a CLI pass whose "
        f"AOS and LOS are both within {MATCH_S:g} s: {missing}; CLI passes without such a "
        f"Skyfield one: {extra} (a pass with one edge off by > {MATCH_S:g} s counts in both)"
    )

    print("load average: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    sizes = [int(x) for x in args.scale.split(",") if x.strip()]
    if not sizes:
        return
    print("scale (library API, find_pass_table in one call, Walker 550 km/53° × 100 sites × 24 h):")
    base: tuple[float, float] | None = None
    previous: tuple[int, float, int] | None = None
    for total in sizes:
        with tempfile.TemporaryFile("w+") as out:
            wall, usage, _ = run_child([sys.executable, __file__, "--scale-child", str(total)], out)
            peak = usage.ru_maxrss
            cpu = usage.ru_utime + usage.ru_stime
            out.seek(0)
            line = json.loads(out.read())
        per_s = line["seconds"] / total
        per_kb = peak / total
        base = base or (per_s, per_kb)
        growth = ""
        if previous is not None:
            added = total - previous[0]
            growth = (
                f"; from {previous[0]}: +{(line['seconds'] - previous[1]) / added * 1e3:.2f} ms "
                f"and +{(peak - previous[2]) / added:.0f} KiB per added satellite"
            )
        previous = (total, line["seconds"], peak)
        print(
            f"  {total:>6} satellites: {line['seconds']:.1f} s search ({wall:.1f} s process, "
            f"{cpu:.1f} s CPU), "
            f"{line['passes']} passes, peak RSS {peak / 1024:.0f} MiB; per satellite "
            f"{per_s * 1e3:.2f} ms ({per_s / base[0]:.2f}× the first), "
            f"{per_kb:.0f} KiB ({per_kb / base[1]:.2f}×){growth}"
        )
    print("load average at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
