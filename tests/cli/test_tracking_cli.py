"""`groundplane passes` and `groundplane look`: the exact output contract and error exits."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from groundplane.cli.main import main
from groundplane.kernel.clock import format_utc
from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import SatelliteBatch, look_angles, utc_jd_fr
from groundplane.orbit.passes import find_passes
from groundplane.orbit.sites import Site

from ..data import DATA

ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: The CLI prints what the library computes; only JSON float formatting may differ.
EXACT_DEG = 1e-9
EXACT_KM = 1e-9
PASS_KEYS = {
    "catalog_id",
    "name",
    "site",
    "site_name",
    "aos",
    "tca",
    "los",
    "max_elevation_deg",
    "aos_azimuth_deg",
    "los_azimuth_deg",
    "aos_clipped",
    "los_clipped",
    "sunlit_at_tca",
    "visual",
}


def _utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def test_passes_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON output is {"passes": [...]} with exactly the documented keys, Z times in order,
    repeated --site ids "0", "1", and only the asked satellite."""
    code = main(
        [
            "passes",
            "--elements",
            ELEMENTS,
            "--site",
            "52.2,0.1,30",
            "--site",
            "-33.9,18.4",
            "--start",
            "2026-08-15T00:00:00Z",
            "--hours",
            "24",
            "--min-elevation",
            "10",
            "--sat",
            "25544",
            "--format",
            "json",
        ]
    )
    assert code == 0
    passes = json.loads(capsys.readouterr().out)["passes"]
    assert passes
    assert {p["site"] for p in passes} == {"0", "1"}
    (iss,) = [e for e in parse_elements(Path(ELEMENTS).read_text()) if e.catalog_id == "25544"]
    expected = find_passes(
        SatelliteBatch(["25544"], [iss.to_satrec()]),
        [
            Site("0", 52.2, 0.1, 30.0, min_elevation_deg=10),
            Site("1", -33.9, 18.4, 0.0, min_elevation_deg=10),
        ],
        datetime(2026, 8, 15, tzinfo=UTC),
        datetime(2026, 8, 16, tzinfo=UTC),
    )
    # The same window asked of the pass search directly: the same passes, to the millisecond.
    assert sorted((p["site"], p["aos"], p["los"]) for p in passes) == sorted(
        (p.site_id, format_utc(p.aos), format_utc(p.los)) for p in expected
    )
    for found in passes:
        assert set(found) == PASS_KEYS
        assert found["catalog_id"] == "25544"
        assert found["name"] == "ISS (ZARYA)"
        assert _utc(found["aos"]) < _utc(found["tca"]) < _utc(found["los"])
        assert found["max_elevation_deg"] >= 10.0
        assert 0 <= found["aos_azimuth_deg"] < 360
        assert 0.0 <= found["sunlit_at_tca"] <= 1.0
        assert isinstance(found["visual"], bool)
        assert not found["visual"] or found["sunlit_at_tca"] > 0


def test_passes_csv_and_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CSV output has the documented header; a mask of 80° all round leaves fewer passes than
    no mask, and every remaining one culminates above 80°."""
    args = [
        "passes",
        "--elements",
        ELEMENTS,
        "--sites",
        str(DATA / "ground-stations.csv"),
        "--start",
        "2026-08-15T00:00:00Z",
        "--end",
        "2026-08-16T00:00:00Z",
        "--sat",
        "25544",
        "--format",
        "csv",
    ]
    assert main(args) == 0
    open_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    mask = tmp_path / "mask.csv"
    mask.write_text("azimuth_deg,elevation_deg\n0,80\n120,80\n240,80\n")
    assert main([*args, "--mask", str(mask)]) == 0
    masked_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert open_rows
    assert set(open_rows[0]) == PASS_KEYS
    assert len(masked_rows) < len(open_rows)
    assert all(float(r["max_elevation_deg"]) > 80.0 for r in masked_rows)


def test_look_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    """look --format json has the documented keys; with a frequency the Doppler keys follow
    f·(1 − ṙ/c) and f·(1 + ṙ/c)."""
    code = main(
        [
            "look",
            "--elements",
            ELEMENTS,
            "--sat",
            "25544",
            "--site",
            "52.2,0.1,30",
            "--at",
            "2026-08-15T12:00:00Z",
            "--frequency-hz",
            "437.8e6",
            "--format",
            "json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {
        "catalog_id",
        "azimuth_deg",
        "elevation_deg",
        "range_km",
        "range_rate_km_s",
        "sunlit_fraction",
        "downlink_hz",
        "uplink_hz",
    }
    assert 0.0 <= result["sunlit_fraction"] <= 1.0
    ratio = result["range_rate_km_s"] / 299_792.458
    assert result["downlink_hz"] == pytest.approx(437.8e6 * (1 - ratio))
    assert result["uplink_hz"] == pytest.approx(437.8e6 * (1 + ratio))
    # The same question asked of the geometry library directly (ISS from 52.2 N 0.1 E, 30 m).
    (iss,) = [e for e in parse_elements(Path(ELEMENTS).read_text()) if e.catalog_id == "25544"]
    jd, fr = utc_jd_fr([datetime(2026, 8, 15, 12, tzinfo=UTC)])
    angles = look_angles(
        SatelliteBatch(["25544"], [iss.to_satrec()]), [Site("x", 52.2, 0.1, 30.0)], jd, fr
    )
    assert result["azimuth_deg"] == pytest.approx(angles.azimuth_deg[0, 0, 0], abs=EXACT_DEG)
    assert result["elevation_deg"] == pytest.approx(angles.elevation_deg[0, 0, 0], abs=EXACT_DEG)
    assert result["range_km"] == pytest.approx(angles.range_km[0, 0, 0], abs=EXACT_KM)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            [
                "look",
                "--elements",
                ELEMENTS,
                "--sat",
                "25544",
                "--site",
                "nan,0",
                "--at",
                "2026-08-15T12:00:00Z",
            ],
            "lat_deg",
        ),
        (
            [
                "look",
                "--elements",
                "/nonexistent.tle",
                "--sat",
                "1",
                "--site",
                "0,0",
                "--at",
                "2026-08-15T12:00:00Z",
            ],
            "no such file",
        ),
        (
            [
                "look",
                "--elements",
                ELEMENTS,
                "--sat",
                "424242",
                "--site",
                "0,0",
                "--at",
                "2026-08-15T12:00:00Z",
            ],
            "no such satellite",
        ),
        (
            [
                "look",
                "--elements",
                ELEMENTS,
                "--sat",
                "25544",
                "--site",
                "0,0",
                "--at",
                "2026-12-15T12:00:00Z",
            ],
            "days old",
        ),
        (
            [
                "passes",
                "--elements",
                ELEMENTS,
                "--site",
                "0,0",
                "--start",
                "2026-08-15T00:00:00Z",
                "--end",
                "2026-08-14T00:00:00Z",
            ],
            "before the end",
        ),
        (
            [
                "passes",
                "--elements",
                ELEMENTS,
                "--site",
                "0,0",
                "--start",
                "tomorrow",
                "--hours",
                "1",
            ],
            "ISO-8601",
        ),
    ],
)
def test_errors_exit_2_with_a_teaching_message(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input prints one line naming the problem on stderr and exits 2, printing no result."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in captured.err


def _passes_args(*extra: str) -> list[str]:
    return [
        "passes",
        "--elements",
        ELEMENTS,
        "--sites",
        str(DATA / "ground-stations.csv"),
        "--start",
        "2026-08-15T00:00:00Z",
        "--hours",
        "6",
        "--min-elevation",
        "10",
        "--sat",
        "25544",
        *extra,
    ]


def _site_names() -> dict[str, str]:
    rows = csv.reader(io.StringIO((DATA / "ground-stations.csv").read_text()))
    return {row[0]: row[1] for row in rows if row and row[0].isdigit()}


def test_passes_json_and_csv_carry_the_site_name(capsys: pytest.CaptureFixture[str]) -> None:
    """Each pass names its site as in the sites file, next to the site id, in JSON and CSV."""
    names = _site_names()
    assert main(_passes_args("--format", "json")) == 0
    passes = json.loads(capsys.readouterr().out)["passes"]
    assert passes
    assert all(p["site_name"] == names[p["site"]] for p in passes)
    assert main(_passes_args("--format", "csv")) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["site"], r["site_name"]) for r in rows] == [
        (p["site"], p["site_name"]) for p in passes
    ]


def test_passes_csv_booleans_are_lowercase(capsys: pytest.CaptureFixture[str]) -> None:
    """CSV spells the clipped flags true/false (as JSON does), never Python's True/False; the
    first ISS pass of the window is clipped at AOS."""
    assert main(_passes_args("--format", "csv")) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    flags = [r["aos_clipped"] for r in rows] + [r["los_clipped"] for r in rows]
    assert set(flags) == {"true", "false"}
    assert rows[0]["aos_clipped"] == "true"


def test_passes_table_shows_tca_duration_and_site_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table has TCA and DURATION columns and each row names its site and the TCA, to the
    second, between AOS and LOS; the duration is LOS − AOS."""
    assert main(_passes_args("--format", "json")) == 0
    passes = json.loads(capsys.readouterr().out)["passes"]
    assert main(_passes_args()) == 0
    header, *rows, footer = capsys.readouterr().out.splitlines()
    assert "TCA (UTC)" in header
    assert "DURATION" in header
    assert len(rows) == len(passes)
    assert footer.startswith(f"{len(passes)} passes")
    for row, found in zip(rows, passes, strict=True):
        assert found["site_name"] in row
        aos, tca, los = (_utc(found[key]) for key in ("aos", "tca", "los"))
        times = [t.strftime("%Y-%m-%d %H:%M:%S") for t in (aos, tca, los)]
        positions = [row.index(t) for t in times]
        assert positions == sorted(positions)
        minutes, seconds = divmod(round((los - aos).total_seconds()), 60)
        assert f" {minutes}m{seconds:02d}s " in row


def test_passes_same_sat_twice_is_predicted_once(capsys: pytest.CaptureFixture[str]) -> None:
    """``--sat 25544 --sat 25544`` is the same as one ``--sat 25544``."""
    assert main(_passes_args("--format", "json")) == 0
    once = capsys.readouterr().out
    assert main(_passes_args("--sat", "25544", "--format", "json")) == 0
    assert capsys.readouterr().out == once


def test_passes_window_beyond_the_service_limit_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--hours 400`` exits 2 with one line naming the 14-day (336-hour) limit instead of
    hundreds of per-satellite warnings and zero passes."""
    argv = _passes_args()
    argv[argv.index("--hours") + 1] = "400"
    assert main([a for a in argv if a not in ("--sat", "25544")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "at most 14 days (336 hours" in captured.err


def _look_args(at: str, *extra: str) -> list[str]:
    return [
        "look",
        "--elements",
        ELEMENTS,
        "--sat",
        "25544",
        "--site",
        "52.2,0.1,30",
        "--at",
        at,
        *extra,
    ]


def test_look_says_when_the_satellite_is_below_the_horizon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At 12:00Z the ISS is at −19.6° from Cambridge: the table says it is below the horizon;
    at the culmination of a pass over Cambridge it does not."""
    assert main(_look_args("2026-08-15T12:00:00Z")) == 0
    below = capsys.readouterr().out
    assert "elevation_deg    -19.56" in below
    assert "below the horizon" in below
    found = [
        "passes",
        "--elements",
        ELEMENTS,
        "--site",
        "52.2,0.1,30",
        "--start",
        "2026-08-15T00:00:00Z",
        "--hours",
        "24",
        "--min-elevation",
        "10",
        "--sat",
        "25544",
        "--format",
        "json",
    ]
    assert main(found) == 0
    tca = json.loads(capsys.readouterr().out)["passes"][0]["tca"]
    assert main(_look_args(tca)) == 0
    above = capsys.readouterr().out
    assert "elevation_deg" in above
    assert "below the horizon" not in above


def test_look_at_now_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """``--at now`` and ``--at now-2h`` are times (judged against the wall clock, so the age
    limit is lifted here for the shipped elements)."""
    for at in ("now", "now-2h"):
        assert main(_look_args(at, "--max-element-age-days", "100000", "--format", "json")) == 0
        assert json.loads(capsys.readouterr().out)["catalog_id"] == "25544"


def test_stale_elements_name_the_flag_that_accepts_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four months after their epoch the elements are refused with a message naming
    --max-element-age-days; with that flag raised, passes and look answer."""
    late = ["--start", "2026-12-15T00:00:00Z"]
    argv = _passes_args("--format", "json")
    argv[argv.index("--start") : argv.index("--start") + 2] = late
    assert main(argv) == 2
    assert "--max-element-age-days" in capsys.readouterr().err
    assert main(_look_args("2026-12-15T00:00:00Z")) == 2
    assert "--max-element-age-days" in capsys.readouterr().err
    assert main([*argv, "--max-element-age-days", "200"]) == 0
    assert json.loads(capsys.readouterr().out)["passes"]
    assert main(_look_args("2026-12-15T00:00:00Z", "--max-element-age-days", "200")) == 0
    assert "elevation_deg" in capsys.readouterr().out


def test_elements_are_judged_at_the_asked_window_not_the_wall_clock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The shipped August-2026 elements predict an August-2026 window (and look at an
    August-2026 instant) without any flag, whatever today's date is."""
    assert main(_passes_args("--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["passes"]
    assert main(_look_args("2026-08-15T12:00:00Z", "--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["catalog_id"] == "25544"
