"""`groundplane plot …`: each subcommand writes its figure in the format of the -o suffix, refuses
what it cannot draw with a teaching message, and the CLI loads matplotlib only to draw."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.cli.main import main
from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.system.report import Outcome, RunStats, TraceRecord, write_summary, write_trace

from ..data import DATA

ELEMENTS = str(DATA / "satellites-2026-08.3le")
STATIONS = str(DATA / "ground-stations.csv")
WINDOW = ["--start", "2026-08-15T00:00:00Z", "--hours", "6"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def _is_svg(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:400]
    return head.startswith("<?xml") and "<svg" in head


def test_plot_sky_writes_png_and_svg_by_suffix(tmp_path: Path) -> None:
    """`plot sky` with a masked site writes a PNG for .png and an SVG for .svg."""
    mask = tmp_path / "mask.csv"
    mask.write_text("azimuth_deg,elevation_deg\n0,5\n90,20\n180,5\n270,12\n")
    for name, check in (("sky.png", _is_png), ("sky.svg", _is_svg)):
        out = tmp_path / name
        args = ["plot", "sky", "--elements", ELEMENTS, "--sat", "25544"]
        args += ["--site", "52.2,0.1,30", "--mask", str(mask), "--min-elevation", "10"]
        # 12 h, not 6: over 2026-08-15 00–06 UTC this mask trips the pass search (next test).
        window = ["--start", "2026-08-15T00:00:00Z", "--hours", "12"]
        assert main([*args, *window, "-o", str(out)]) == 0
        assert check(out)


def test_plot_sky_with_a_mask_whose_window_has_peaks_outside_every_pass(tmp_path: Path) -> None:
    """The ISS over a masked Cambridge, 2026-08-15 00–06 UTC (no elevation peak inside a pass):
    the sky plot is drawn."""
    mask = tmp_path / "mask.csv"
    mask.write_text("azimuth_deg,elevation_deg\n0,5\n90,20\n180,5\n270,12\n")
    args = ["plot", "sky", "--elements", ELEMENTS, "--sat", "25544", "--site", "52.2,0.1,30"]
    args += ["--mask", str(mask), "--min-elevation", "10", *WINDOW]
    assert main([*args, "-o", str(tmp_path / "sky.png")]) == 0


def test_plot_groundtrack_and_passes_write_pngs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plot groundtrack` with two satellites and the stations file, and `plot passes` over the
    stations, write PNGs and report what they drew on stderr."""
    track = tmp_path / "track.png"
    sats = ["--sat", "25544", "--sat", "20580"]
    assert (
        main(
            [
                *("plot", "groundtrack", "--elements", ELEMENTS, *sats, "--sites", STATIONS),
                *("--min-elevation", "10", *WINDOW, "-o", str(track)),
            ]
        )
        == 0
    )
    assert _is_png(track)
    assert "2 tracks, 24 footprints" in capsys.readouterr().err
    timeline = tmp_path / "passes.png"
    assert (
        main(
            [
                *("plot", "passes", "--elements", ELEMENTS, *sats, "--sites", STATIONS),
                *(*WINDOW, "-o", str(timeline)),
            ]
        )
        == 0
    )
    assert _is_png(timeline)
    assert "passes" in capsys.readouterr().err


def test_plot_groundtrack_accepts_negative_site_coordinates(tmp_path: Path) -> None:
    """`--site -33.9,18.4` (a value starting with a minus) is read as a site, as for `passes`."""
    out = tmp_path / "track.svg"
    assert (
        main(
            [
                *("plot", "groundtrack", "--elements", ELEMENTS, "--sat", "25544"),
                *("--site", "-33.9,18.4", *WINDOW, "-o", str(out)),
            ]
        )
        == 0
    )
    assert _is_svg(out)


def _run_files(tmp_path: Path) -> tuple[Path, Path]:
    stats = RunStats()
    start = datetime(2026, 8, 15, tzinfo=UTC)
    for n in range(40):
        at = start + timedelta(seconds=2 * n)
        stats.submitted += 1
        stats.record(
            TraceRecord(
                f"r{n}",
                at,
                at,
                Outcome.OK,
                51.5,
                -0.1,
                "3",
                "25544" if n < 20 else "20580",
                1,
                12.0 + n,
            )
        )
    trace, summary = tmp_path / "trace.jsonl", tmp_path / "summary.json"
    write_trace(trace, stats.trace)
    write_summary(summary, stats)
    return trace, summary


def test_plot_run_draws_a_trace_and_summary_with_handoffs_from_the_store(tmp_path: Path) -> None:
    """`plot run` draws the files `up --trace/--summary` write, with or without the handoff
    store `up --data-dir` keeps."""
    trace, summary = _run_files(tmp_path)
    out = tmp_path / "run.png"
    assert (
        main(["plot", "run", "--trace", str(trace), "--summary", str(summary), "-o", str(out)]) == 0
    )
    assert _is_png(out)
    store_path = tmp_path / "handoff.sqlite"
    store = HandoffStore(store_path)
    at = datetime(2026, 8, 15, 0, 0, 40, tzinfo=UTC)
    store.add_event(
        HandoffEvent(
            "session", "s1", "completed", at, at, at, "25544", "3", "20580", "3", "isl", 10, 0.1
        )
    )
    store.close()
    with_handoffs = tmp_path / "run-handoffs.svg"
    args = ["plot", "run", "--trace", str(trace), "--handoffs", str(store_path)]
    assert main([*args, "-o", str(with_handoffs)]) == 0
    assert _is_svg(with_handoffs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "run", "--trace", "{trace}", "-o", "{tmp}/run.jpg"], "must end in .png or .svg"),
        (["plot", "run", "--trace", "{tmp}/none.jsonl", "-o", "{tmp}/r.png"], "no such file"),
        (
            [
                "plot",
                "run",
                "--trace",
                "{trace}",
                "--handoffs",
                "{tmp}/x.sqlite",
                "-o",
                "{tmp}/r.png",
            ],
            "give the handoff.sqlite that `groundplane up --data-dir DIR` keeps",
        ),
        (["plot", "run", "--trace", "{empty}", "-o", "{tmp}/r.png"], "no requests in the trace"),
        (
            ["plot", "run", "--trace", "{trace}", "--dpi", "0", "-o", "{tmp}/r.png"],
            "--dpi must be a positive number of pixels per inch",
        ),
    ],
)
def test_plot_refuses_with_a_teaching_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Wrong suffix, missing files, an empty trace and a zero --dpi exit 2 with one line saying
    what to give."""
    trace, _ = _run_files(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    filled = [a.format(tmp=tmp_path, trace=trace, empty=empty) for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert err.startswith("groundplane plot: ")
    assert message in err
    assert not (tmp_path / "x.sqlite").exists()  # a mistyped store is not created


def test_plot_sky_refuses_an_unknown_satellite_before_drawing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --sat is the same one-line error as for `passes`, and no file is written."""
    out = tmp_path / "sky.png"
    argv = ["plot", "sky", "--elements", ELEMENTS, "--sat", "99999", "--site", "52,0", *WINDOW]
    assert main([*argv, "-o", str(out)]) == 2
    assert "--sat 99999: no such satellite" in capsys.readouterr().err
    assert not out.exists()


def test_the_cli_loads_matplotlib_only_to_draw() -> None:
    """Building the parser (what `groundplane --help` and every other command do) imports
    neither matplotlib nor the plots' drawing modules."""
    code = (
        "import sys\n"
        "from groundplane.cli.main import build_parser\n"
        "build_parser()\n"
        "drawing = ('matplotlib', 'groundplane.plots')\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(drawing))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
