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
from groundplane.tracking.elements import parse_elements
from groundplane.tracking.geometry import SatelliteBatch, look_angles, utc_jd_fr
from groundplane.tracking.passes import find_passes
from groundplane.tracking.sites import Site

from ..data import DATA

ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: The CLI prints what the library computes; only JSON float formatting may differ.
EXACT_DEG = 1e-9
EXACT_KM = 1e-9
PASS_KEYS = {
    "catalog_id",
    "name",
    "site",
    "aos",
    "tca",
    "los",
    "max_elevation_deg",
    "aos_azimuth_deg",
    "los_azimuth_deg",
    "aos_clipped",
    "los_clipped",
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
        "downlink_hz",
        "uplink_hz",
    }
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
