"""`groundplane passes` output from the pass table's columns: the same bytes as before.

The reference is the writer the CLI had before (one :class:`Pass` object per pass, ``strftime``
per timestamp, ``json.dump``, ``csv.DictWriter``), kept here verbatim; the CLI now formats whole
columns with numpy and serialises with orjson. Both run on the same passes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundplane.cli import inputs
from groundplane.cli.main import main
from groundplane.cli.tracking import PASS_FIELDS, _plannable, compute_passes
from groundplane.kernel.clock import format_utc
from groundplane.orbit.eclipses import sun_elevation_deg, sunlit_fraction_at
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import (
    SatelliteBatch,
    SiteFrames,
    offset_jd_fr,
    utc_datetimes,
    utc_jd_fr,
)
from groundplane.orbit.passes import Pass
from groundplane.orbit.sites import Site
from groundplane.tracking.pass_columns import (
    iso_utc_ms,
    iso_utc_s,
    round_like_python,
    utc_microseconds,
)

from ..data import DATA

#: Odd start and a mask so that passes are clipped at both ends and some are split by the mask.
START = "2026-08-16T03:17:29.5Z"
END = "2026-08-16T09:41:00Z"
SATELLITES = 60


# ------------------------------------------------------------- the writer as it was (reference)


def _lighting(
    found: Pass, elements: dict[str, ElementSet], sites: dict[str, Site]
) -> tuple[float, bool]:
    """Sunlit fraction at TCA and the visual flag of one pass, one row at a time."""
    jd, fr = utc_jd_fr(found.tca)
    batch = SatelliteBatch([found.catalog_id], [elements[found.catalog_id].to_satrec()])
    zero = np.zeros(1, dtype=np.intp)
    sunlit = float(sunlit_fraction_at(batch, zero, jd, fr)[0])
    sun_el = float(sun_elevation_deg(SiteFrames([sites[found.site_id]]), zero, jd, fr)[0])
    return sunlit, sunlit > 0 and sun_el < -6.0


def _reference_row(
    found: Pass,
    names: dict[str, str],
    site_names: dict[str, str],
    lighting: tuple[float, bool],
) -> dict[str, Any]:
    return {
        "catalog_id": found.catalog_id,
        "name": names.get(found.catalog_id, ""),
        "site": found.site_id,
        "site_name": site_names.get(found.site_id, ""),
        "aos": format_utc(found.aos),
        "tca": format_utc(found.tca),
        "los": format_utc(found.los),
        "max_elevation_deg": round(found.max_elevation_deg, 4),
        "aos_azimuth_deg": round(found.aos_azimuth_deg, 4),
        "los_azimuth_deg": round(found.los_azimuth_deg, 4),
        "aos_clipped": found.aos_clipped,
        "los_clipped": found.los_clipped,
        "sunlit_at_tca": round(lighting[0], 4),
        "visual": lighting[1],
    }


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _table_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _reference_table(
    found: list[Pass],
    names: dict[str, str],
    site_names: dict[str, str],
    lighting: list[tuple[float, bool]],
) -> str:
    header = (
        f"{'SAT':<8} {'NAME':<20} {'SITE':<18} {'AOS (UTC)':<20} {'TCA (UTC)':<19} "
        f"{'LOS (UTC)':<20} {'DURATION':>8} {'MAX EL':>6} {'AOS AZ':>6} {'LOS AZ':>6} "
        f"{'SUNLIT':>6} {'VISUAL':<6}\n"
    )
    buffer = io.StringIO()
    buffer.write(header)
    for p, (sunlit, visual) in zip(found, lighting, strict=True):
        clip_a = "<" if p.aos_clipped else " "
        clip_l = ">" if p.los_clipped else " "
        site = site_names.get(p.site_id) or p.site_id
        buffer.write(
            f"{p.catalog_id:<8} {names.get(p.catalog_id, '')[:20]:<20} {site[:18]:<18} "
            f"{clip_a}{_table_time(p.aos)} {_table_time(p.tca)} {_table_time(p.los)}{clip_l} "
            f"{_duration((p.los - p.aos).total_seconds()):>8} {p.max_elevation_deg:6.1f} "
            f"{p.aos_azimuth_deg:6.1f} {p.los_azimuth_deg:6.1f} "
            f"{sunlit:6.2f} {'*' if visual else ''}\n"
        )
    buffer.write(
        f"{len(found)} passes ('<' began before the window, '>' ends after it; "
        "elevation and azimuths in degrees; SUNLIT: sunlit fraction at TCA; "
        "VISUAL *: sunlit while the site's Sun is below -6°)\n"
    )
    return buffer.getvalue()


def _reference(
    fmt: str,
    elements_file: Path,
    mask_file: Path | None,
    sites_file: Path = DATA / "ground-stations.csv",
) -> str:
    mask = inputs.load_mask(None if mask_file is None else str(mask_file))
    sites = inputs.load_sites_csv(str(sites_file), 5.0, mask)
    start, end = inputs.window(START, END, None, datetime.now(UTC), 14)
    elements = _plannable(
        inputs.load_elements([str(elements_file)]),
        start,
        end,
        named=False,
        policy=inputs.age_policy(14),
    )
    names = {e.catalog_id: e.name for e in elements}
    site_names = {site.id: site.name for site in sites}
    found = compute_passes(elements, sites, start, end)
    by_id = {e.catalog_id: e for e in elements}
    site_by_id = {site.id: site for site in sites}
    lighting = [_lighting(p, by_id, site_by_id) for p in found]
    out = io.StringIO()
    if fmt == "json":
        rows = [
            _reference_row(p, names, site_names, lit)
            for p, lit in zip(found, lighting, strict=True)
        ]
        json.dump({"passes": rows}, out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=PASS_FIELDS, lineterminator="\n")
        writer.writeheader()
        for p, lit in zip(found, lighting, strict=True):
            row = _reference_row(p, names, site_names, lit)
            writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    else:
        out.write(_reference_table(found, names, site_names, lighting))
    return out.getvalue()


# ------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("passes-output")
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    elements = folder / "some.3le"
    elements.write_text("\n".join(lines[: 3 * SATELLITES]) + "\n")
    mask = folder / "mask.csv"
    mask.write_text("azimuth_deg,elevation_deg\n0,5\n80,5\n90,25\n100,5\n250,12\n")
    return elements, mask


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_passes_output_is_byte_for_byte_what_the_per_pass_writer_gave(
    fmt: str, case: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON, CSV and the table of 60 satellites × 12 named sites (a mask, both window ends
    cutting passes) are byte for byte the output of the former per-pass writer."""
    elements, mask = case
    argv = ["passes", "--elements", str(elements), "--sites", str(DATA / "ground-stations.csv")]
    argv += ["--start", START, "--end", END, "--min-elevation", "5", "--mask", str(mask)]
    assert main([*argv, "--format", fmt]) == 0
    written = capsys.readouterr().out
    expected = _reference(fmt, elements, mask)
    assert expected.count("\n") > 500  # hundreds of passes, clipped ones among them
    assert "true" in expected or "<" in expected
    assert written == expected
    if fmt == "json":
        assert json.loads(written) == json.loads(expected)


def test_timings_go_to_stderr_and_leave_stdout_alone(
    case: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--timings prints one line of stage times on stderr; stdout is the same JSON."""
    elements, _ = case
    argv = ["passes", "--elements", str(elements), "--site", "52.2,0.1", "--start", START]
    argv += ["--end", END, "--format", "json"]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main([*argv, "--timings"]) == 0
    timed = capsys.readouterr()
    assert timed.out == plain
    (line,) = [line for line in timed.err.splitlines() if line.startswith("timings (s): ")]
    stages = dict(re.findall(r"([a-z-]+) ([0-9.]+)", line.split("(s): ")[1].split(" (")[0]))
    assert {"inputs", "search", "output"} <= set(stages)
    assert all(float(seconds) >= 0 for seconds in stages.values())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-400, max_value=400, allow_nan=False),
            # Exact decimal halves at the 5th decimal and their binary neighbours.
            st.integers(-4_000_000, 4_000_000).map(lambda k: (k + 0.5) / 1e4),
            st.integers(-4_000_000, 4_000_000).map(
                lambda k: math.nextafter((k + 0.5) / 1e4, math.inf)
            ),
            st.sampled_from([math.inf, -math.inf, -0.0, 0.0, 0.00005, 1e-12]),
        ),
        max_size=40,
    )
)
def test_rounding_columns_gives_what_python_round_gives(values: list[float]) -> None:
    """Angles rounded as a column are Python's ``round(v, 4)`` for every value, halves and
    their neighbours included (same float, same sign of zero)."""
    got = round_like_python(np.array(values, dtype=np.float64), 4)
    want = [round(v, 4) if math.isfinite(v) else v for v in values]
    assert [repr(v) for v in got] == [repr(v) for v in want]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=2_400_000.5, max_value=2_500_000.5).map(math.floor),
    st.floats(min_value=0.0, max_value=0.999999),
    st.lists(st.floats(min_value=0.0, max_value=14 * 86400.0), min_size=1, max_size=30),
)
def test_instants_as_columns_are_the_instants_of_the_pass_objects(
    jd: float, fr: float, seconds: list[float]
) -> None:
    """Microseconds, ISO-8601 strings (ms and s) from numpy are those of the datetimes the pass
    objects carry (``utc_datetimes``) formatted as the CLI formatted them, for any window start
    from 1858 to 2132."""
    offsets = np.array(seconds)
    micro = utc_microseconds(jd + 0.5, fr, offsets)
    datetimes = utc_datetimes(*offset_jd_fr(jd + 0.5, fr, offsets))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert micro.tolist() == [(d - epoch) // timedelta(microseconds=1) for d in datetimes]
    assert iso_utc_ms(micro) == [format_utc(d) for d in datetimes]
    assert iso_utc_s(micro, " ") == [d.strftime("%Y-%m-%d %H:%M:%S") for d in datetimes]


def test_non_ascii_names_are_utf8_and_read_back_the_same(
    case: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site named outside ASCII is written as UTF-8 (json.dump escaped it); the JSON read
    back is the same document the former writer gave."""
    elements, _ = case
    sites = tmp_path / "sites.csv"
    sites.write_text("id,name,lat,lon,alt_m\nsv,Ny-Ålesund Øst,78.93,11.93,50\n", encoding="utf-8")
    argv = ["passes", "--elements", str(elements), "--sites", str(sites), "--start", START]
    assert main([*argv, "--end", END, "--min-elevation", "5", "--format", "json"]) == 0
    written = capsys.readouterr().out
    assert "Ny-Ålesund Øst" in written
    document = json.loads(written)
    assert document["passes"]
    assert {row["site_name"] for row in document["passes"]} == {"Ny-Ålesund Øst"}
    expected = _reference("json", elements, None, sites)
    assert "\\u00c5" in expected  # json.dump's escape of Å
    assert document == json.loads(expected)
