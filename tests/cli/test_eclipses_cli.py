"""`groundplane eclipses`: the JSON/CSV/table contract, clipping, and agreement with the library."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from groundplane.cli.main import main
from groundplane.orbit.eclipses import find_eclipses
from groundplane.orbit.elements import parse_tle
from groundplane.orbit.geometry import SatelliteBatch

from ..data import DATA

ELEMENTS = str(DATA / "satellites-2026-08.3le")
BASE = ["eclipses", "--elements", ELEMENTS, "--start", "2026-08-16T00:00:00Z", "--hours", "6"]


def test_json_contract_and_agreement_with_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON rows carry exactly the documented keys, UTC times with Z, null umbrae only for
    penumbra-only passages, clipped flags at the window's edges, and the library's times (ms)."""
    argv = [*BASE, "--sat", "25544", "--sat", "41105", "--sat", "58646", "--format", "json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["eclipses"]
    assert rows
    keys = {
        "catalog_id",
        "name",
        "penumbra_entry",
        "umbra_entry",
        "umbra_exit",
        "penumbra_exit",
        "duration_s",
        "entry_clipped",
        "exit_clipped",
    }
    for row in rows:
        assert set(row) == keys
        assert row["penumbra_entry"].endswith("Z")
        assert row["penumbra_exit"].endswith("Z")
        assert (row["umbra_entry"] is None) == (row["umbra_exit"] is None)
        assert row["penumbra_entry"] <= row["penumbra_exit"]
        if row["entry_clipped"]:
            assert row["penumbra_entry"] == "2026-08-16T00:00:00.000Z"
        if row["exit_clipped"]:
            assert row["penumbra_exit"] == "2026-08-16T06:00:00.000Z"
    entries = [r["penumbra_entry"] for r in rows]
    assert entries == sorted(entries)
    assert any(r["name"] == "ISS (ZARYA)" for r in rows)
    sets = {e.catalog_id: e for e in parse_tle((DATA / "satellites-2026-08.3le").read_text())}
    iss = sets["25544"]
    lib = find_eclipses(
        SatelliteBatch(["25544"], [iss.to_satrec()]),
        datetime(2026, 8, 16, tzinfo=UTC),
        datetime(2026, 8, 16, 6, tzinfo=UTC),
    )
    cli = [r for r in rows if r["catalog_id"] == "25544"]
    assert len(cli) == len(lib)
    for row, eclipse in zip(cli, lib, strict=True):
        got = datetime.fromisoformat(row["penumbra_entry"].replace("Z", "+00:00"))
        assert abs((got - eclipse.penumbra_entry).total_seconds()) < 1e-3
        assert row["duration_s"] == pytest.approx(eclipse.duration_s, abs=2e-3)
        assert row["entry_clipped"] == eclipse.entry_clipped


def test_csv_and_table_list_the_same_eclipses(capsys: pytest.CaptureFixture[str]) -> None:
    """CSV has the JSON's columns (booleans true/false, empty umbra cells) and the table one line
    per eclipse plus a count; both list as many eclipses as the JSON."""
    argv = [*BASE, "--sat", "25544", "--sat", "41105"]
    assert main([*argv, "--format", "json"]) == 0
    count = len(json.loads(capsys.readouterr().out)["eclipses"])
    assert main([*argv, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == count
    assert {r["entry_clipped"] for r in rows} <= {"true", "false"}
    assert main(argv) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("SAT")
    assert text[-1].startswith(f"{count} eclipses")
    assert len(text) == count + 2


def test_too_old_elements_are_refused_with_the_flag_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A named satellite whose elements are older than the allowance fails with exit 2 and a
    message naming --max-element-age-days; raising the allowance lets it run."""
    late = ["eclipses", "--elements", ELEMENTS, "--sat", "25544", "--start", "2026-09-20T00:00Z"]
    assert main([*late, "--hours", "2"]) == 2
    assert "--max-element-age-days" in capsys.readouterr().err
    assert main([*late, "--hours", "2", "--max-element-age-days", "40", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["eclipses"]


def test_look_reports_the_shadow_the_eclipses_command_lists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`look` gives sunlit_fraction 0 in the middle of an umbra `eclipses` lists, 1 midway
    between two eclipses, and strictly between at the midpoint of a penumbra crossing."""
    assert main([*BASE, "--sat", "25544", "--format", "json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out)["eclipses"] if not r["entry_clipped"]]
    first, second = rows[0], rows[1]

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    def look(instant: datetime) -> float:
        stamp = instant.isoformat().replace("+00:00", "Z")
        argv = ["look", "--elements", ELEMENTS, "--sat", "25544", "--site", "0,0"]
        assert main([*argv, "--at", stamp, "--format", "json"]) == 0
        value: float = json.loads(capsys.readouterr().out)["sunlit_fraction"]
        return value

    umbra_mid = at(first["umbra_entry"]) + (at(first["umbra_exit"]) - at(first["umbra_entry"])) / 2
    assert look(umbra_mid) == 0.0
    between = (
        at(first["penumbra_exit"]) + (at(second["penumbra_entry"]) - at(first["penumbra_exit"])) / 2
    )
    assert look(between) == 1.0
    penumbra_mid = (
        at(first["penumbra_entry"]) + (at(first["umbra_entry"]) - at(first["penumbra_entry"])) / 2
    )
    assert 0.05 < look(penumbra_mid) < 0.95
