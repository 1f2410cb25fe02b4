"""Element set ingest, validation, Satrec construction and export."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sgp4.api import Satrec, SatrecArray

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.elements import (
    ElementError,
    ElementFormat,
    ElementSet,
    alpha5_to_number,
    canonical_catalog_id,
    detect_format,
    format_elements,
    format_omm_csv,
    format_omm_json,
    format_omm_xml,
    format_tle,
    number_to_alpha5,
    parse_elements,
    parse_omm_csv,
    parse_omm_json,
    parse_omm_xml,
    parse_tle,
    parse_tle_lines,
    tle_checksum,
    to_tle_lines,
)

from ..data import DATA

ONE_CENTIMETRE_KM = 1e-5
ONE_MICROSECOND = timedelta(microseconds=1)
HALF_TLE_EPOCH_UNIT = timedelta(microseconds=432)  # half of 1e-8 day

ISS_NAME = "ISS (ZARYA)"
ISS_LINE1 = "1 25544U 98067A   24130.36689744  .00016024  00000+0  27777-3 0  9992"
ISS_LINE2 = "2 25544  51.6381 147.8590 0003466 150.4670 338.5502 15.51043222452521"


def _read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def _with_checksum(body: str) -> str:
    return body[:68] + str(tle_checksum(body))


def _positions_km(
    satrecs: list[Satrec], jd: NDArray[np.float64], fr: NDArray[np.float64]
) -> NDArray[np.float64]:
    errors, positions, _ = SatrecArray(satrecs).sgp4(jd, fr)
    assert not np.any(errors), "SGP4 reported an error while propagating test data"
    return np.asarray(positions, dtype=np.float64)


# ---------------------------------------------------------------------------- golden data


def test_stations_tle_json_csv_give_identical_element_sets() -> None:
    """The 27 stations objects parse to the same ElementSet from TLE, OMM JSON and OMM CSV."""
    from_tle = parse_tle(_read("stations.tle"), source="stations.tle")
    from_json = parse_omm_json(_read("stations.json"), source="stations.json")
    from_csv = parse_omm_csv(_read("stations.csv"), source="stations.csv")
    assert len(from_tle) == len(from_json) == len(from_csv) == 27
    assert from_tle == from_json == from_csv
    assert from_tle[0].name == ISS_NAME
    assert from_tle[0].catalog_id == "25544"
    assert from_tle[0].intl_designator == "1998-067A"


def test_stations_positions_agree_within_a_centimetre_across_formats() -> None:
    """TLE-, JSON- and CSV-built Satrecs agree within 1 cm for all 27 objects at many times."""
    formats = [
        parse_tle(_read("stations.tle")),
        parse_omm_json(_read("stations.json")),
        parse_omm_csv(_read("stations.csv")),
    ]
    start = datetime(2024, 5, 9, tzinfo=UTC)
    times = [start + timedelta(hours=h) for h in (-30.0, 0.0, 6.5, 24.0, 72.25)]
    jd = np.array([t.date().toordinal() + 1721424.5 for t in times])
    fr = np.array([(t.hour * 3600 + t.minute * 60 + t.second) / 86400.0 for t in times])
    positions = [_positions_km([e.to_satrec() for e in sets], jd, fr) for sets in formats]
    for other in positions[1:]:
        gap_km = np.linalg.norm(positions[0] - other, axis=-1)
        assert gap_km.max() < ONE_CENTIMETRE_KM


def test_satrec_matches_twoline2rv_for_every_real_satellite() -> None:
    """to_satrec() of 636 parsed LEO/MEO/GEO TLEs matches Satrec.twoline2rv within 1 cm."""
    text = _read("satellites-2026-08.3le")
    sets = parse_tle(text, source="satellites-2026-08.3le")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    assert len(sets) == len(lines) // 3 == 636
    reference = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)]
    ours = [element_set.to_satrec() for element_set in sets]
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.jdsatepoch == theirs.jdsatepoch
        assert abs(mine.jdsatepochF - theirs.jdsatepochF) < 1e-15
    base = datetime(2026, 8, 15, tzinfo=UTC)
    jd = np.full(4, base.date().toordinal() + 1721424.5)
    fr = np.array([-1.0, 0.0, 0.37, 3.0])
    gap_km = np.linalg.norm(_positions_km(ours, jd, fr) - _positions_km(reference, jd, fr), axis=-1)
    assert gap_km.max() < ONE_CENTIMETRE_KM


def test_tle_epoch_is_exact_to_the_microsecond() -> None:
    """The ISS epoch day 130.36689744 becomes 08:48:19.938816 UTC exactly (1e-8 day = 864 µs)."""
    iss = parse_tle_lines(ISS_LINE1, ISS_LINE2, ISS_NAME)
    assert iss.epoch == datetime(2024, 5, 9, 8, 48, 19, 938816, tzinfo=UTC)
    jd, fraction = iss.julian_epoch()
    reference = Satrec.twoline2rv(ISS_LINE1, ISS_LINE2)
    assert (jd, fraction) == (reference.jdsatepoch, reference.jdsatepochF)


def test_real_catalog_exports_back_to_the_same_lines() -> None:
    """Exporting the 636 parsed satellites reproduces every line (zero drag terms aside)."""
    text = _read("satellites-2026-08.3le")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    parsed = parse_tle(text)
    exported = format_tle(parsed).splitlines()
    assert len(exported) == len(lines)
    differing = 0
    for original, mine in zip(lines, exported, strict=True):
        if original != mine:
            # Only a zero ddot or B* may be spelled differently (00000-0, 00000 0 → 00000+0).
            assert original[:2] == "1 "
            assert (original[:44], original[61:68]) == (mine[:44], mine[61:68])
            for first, last in ((44, 52), (53, 61)):
                if original[first:last] != mine[first:last]:
                    assert original[first + 1 : first + 6] == "00000" == mine[first + 1 : first + 6]
            differing += 1
    assert parse_tle(format_tle(parsed)) == parsed
    assert differing < len(parsed) // 5


# ---------------------------------------------------------------------------- other flavours


SPACE_TRACK_JSON = json.dumps(
    [
        {
            "CCSDS_OMM_VERS": "2.0",
            "OBJECT_NAME": "ISS (ZARYA)",
            "OBJECT_ID": "1998-067A",
            "CENTER_NAME": "EARTH",
            "REF_FRAME": "TEME",
            "TIME_SYSTEM": "UTC",
            "MEAN_ELEMENT_THEORY": "SGP4",
            "EPOCH": "2024-05-09T08:48:19.938816Z",
            "MEAN_MOTION": "15.51043222",
            "ECCENTRICITY": "0.00034660",
            "INCLINATION": "51.6381",
            "RA_OF_ASC_NODE": "147.8590",
            "ARG_OF_PERICENTER": "150.4670",
            "MEAN_ANOMALY": "338.5502",
            "EPHEMERIS_TYPE": "0",
            "CLASSIFICATION_TYPE": "U",
            "NORAD_CAT_ID": "25544",
            "ELEMENT_SET_NO": "999",
            "REV_AT_EPOCH": "45252",
            "BSTAR": "0.00027777000000",
            "MEAN_MOTION_DOT": "0.00016024",
            "MEAN_MOTION_DDOT": "0.0000000000000",
            "TLE_LINE1": ISS_LINE1,
            "DECAYED": None,
        }
    ]
)

CELESTRAK_XML = """<?xml version="1.0" encoding="UTF-8"?>
<ndm xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<omm id="CCSDS_OMM_VERS" version="2.0">
<header><CREATION_DATE/><ORIGINATOR/></header>
<body><segment>
<metadata><OBJECT_NAME>ISS (ZARYA)</OBJECT_NAME><OBJECT_ID>1998-067A</OBJECT_ID>
<CENTER_NAME>EARTH</CENTER_NAME><REF_FRAME>TEME</REF_FRAME><TIME_SYSTEM>UTC</TIME_SYSTEM>
<MEAN_ELEMENT_THEORY>SGP4</MEAN_ELEMENT_THEORY></metadata>
<data><meanElements><EPOCH>2024-05-09T08:48:19.938816</EPOCH>
<MEAN_MOTION>15.51043222</MEAN_MOTION><ECCENTRICITY>.0003466</ECCENTRICITY>
<INCLINATION>51.6381</INCLINATION><RA_OF_ASC_NODE>147.8590</RA_OF_ASC_NODE>
<ARG_OF_PERICENTER>150.4670</ARG_OF_PERICENTER><MEAN_ANOMALY>338.5502</MEAN_ANOMALY>
</meanElements><tleParameters><EPHEMERIS_TYPE>0</EPHEMERIS_TYPE>
<CLASSIFICATION_TYPE>U</CLASSIFICATION_TYPE><NORAD_CAT_ID>25544</NORAD_CAT_ID>
<ELEMENT_SET_NO>999</ELEMENT_SET_NO><REV_AT_EPOCH>45252</REV_AT_EPOCH>
<BSTAR>.27777E-3</BSTAR><MEAN_MOTION_DOT>.16024E-3</MEAN_MOTION_DOT>
<MEAN_MOTION_DDOT>0</MEAN_MOTION_DDOT></tleParameters></data>
</segment></body></omm>
</ndm>
"""


def test_space_track_json_and_celestrak_xml_match_the_tle() -> None:
    """Space-Track JSON (strings, Z epoch) and CelesTrak OMM XML parse to the TLE's elements."""
    from_tle = parse_tle_lines(ISS_LINE1, ISS_LINE2, ISS_NAME)
    assert parse_omm_json(SPACE_TRACK_JSON) == [from_tle]
    assert parse_omm_xml(CELESTRAK_XML) == [from_tle]


def test_omm_epoch_without_fraction_and_day_of_year_forms() -> None:
    """OMM EPOCH may omit fractional seconds, carry Z, or use the CCSDS day-of-year form."""
    record = json.loads(SPACE_TRACK_JSON)[0]
    for text, expected in (
        ("2024-05-09T08:48:19", datetime(2024, 5, 9, 8, 48, 19, tzinfo=UTC)),
        ("2024-05-09T08:48:19Z", datetime(2024, 5, 9, 8, 48, 19, tzinfo=UTC)),
        ("2024-130T08:48:19.5", datetime(2024, 5, 9, 8, 48, 19, 500000, tzinfo=UTC)),
        ("2024-05-09T08:48:19.9388164", datetime(2024, 5, 9, 8, 48, 19, 938816, tzinfo=UTC)),
    ):
        record["EPOCH"] = text
        assert parse_omm_json(json.dumps(record))[0].epoch == expected


def test_detects_each_format_by_content() -> None:
    """parse_elements recognises 2LE, 3LE, OMM JSON, CSV and XML without being told."""
    iss = parse_tle_lines(ISS_LINE1, ISS_LINE2, ISS_NAME)
    two_line = f"{ISS_LINE1}\n{ISS_LINE2}\n"
    cases = {
        ElementFormat.TLE: two_line,
        ElementFormat.THREE_LE: f"0 {ISS_NAME}\n{two_line}",
        ElementFormat.OMM_JSON: SPACE_TRACK_JSON,
        ElementFormat.OMM_CSV: format_omm_csv([iss]),
        ElementFormat.OMM_XML: CELESTRAK_XML,
    }
    for fmt, text in cases.items():
        assert detect_format(text) is fmt
        parsed = parse_elements(text)
        expected_name = "" if fmt is ElementFormat.TLE else ISS_NAME
        assert parsed == [ElementSet(**{**iss.__dict__, "name": expected_name})]


def test_unparseable_documents_are_rejected_with_guidance() -> None:
    """Empty text, OMM KVN, malformed JSON/XML and XML entities are refused with a reason."""
    with pytest.raises(ElementError, match="empty text"):
        parse_elements("  \n ")
    with pytest.raises(ElementError, match="KVN"):
        parse_elements("CCSDS_OMM_VERS = 2.0\nOBJECT_NAME = ISS\n")
    with pytest.raises(ElementError, match="malformed at line 1"):
        parse_elements('[{"NORAD_CAT_ID": 1,}]')
    with pytest.raises(ElementError, match="XML is malformed"):
        parse_elements("<ndm><omm></ndm>")
    with pytest.raises(ElementError, match="DOCTYPE"):
        parse_elements('<!DOCTYPE x [<!ENTITY a "b">]><ndm/>')


# ---------------------------------------------------------------------------- catalog numbers


def test_alpha5_numbers_map_both_ways_like_sgp4() -> None:
    """Alpha-5 A0001 ↔ 100001 and Z9999 ↔ 339999 (skipping I and O), as sgp4 reads them."""
    assert alpha5_to_number("A0001") == 100001
    assert alpha5_to_number("J0000") == 180000
    assert alpha5_to_number("Z9999") == 339999
    assert number_to_alpha5(25544) == "25544"
    assert number_to_alpha5(5) == "00005"
    for number in (100000, 100001, 179999, 180000, 229999, 230000, 339999):
        field = number_to_alpha5(number)
        assert alpha5_to_number(field) == number
        line1, line2 = to_tle_lines(_sample(catalog_id=str(number)))
        assert Satrec.twoline2rv(line1, line2).satnum == number
    with pytest.raises(InvalidArgument, match="skips I and O"):
        alpha5_to_number("I0001")


def test_alpha5_tle_parses_to_decimal_id_and_keeps_name() -> None:
    """A 3LE with catalog A0001 gets catalog id '100001', its name, and satnum 100001."""
    line1, line2 = to_tle_lines(_sample(catalog_id="100001"))
    assert line1[2:7] == "A0001"
    (parsed,) = parse_tle(f"0 ORBITAL NODE 1\n{line1}\n{line2}\n")
    assert parsed.catalog_id == "100001"
    assert parsed.name == "ORBITAL NODE 1"
    assert parsed.to_satrec().satnum == 100001
    assert canonical_catalog_id("A0001") == canonical_catalog_id("100001") == "100001"
    assert canonical_catalog_id("00005") == "5"


def test_ids_beyond_tle_range_live_outside_the_satrec() -> None:
    """NORAD_CAT_ID 400123 parses, propagates with satnum 0, and refuses TLE export clearly."""
    record = json.loads(SPACE_TRACK_JSON)[0]
    record["NORAD_CAT_ID"] = 400123
    (big,) = parse_omm_json(json.dumps(record))
    assert big.catalog_id == "400123"
    satrec = big.to_satrec()
    assert satrec.satnum == 0
    error, position, _ = satrec.sgp4(satrec.jdsatepoch, satrec.jdsatepochF)
    assert error == 0
    assert 6500 < math.dist(position, (0, 0, 0)) < 7000
    with pytest.raises(InvalidArgument, match="339999"):
        to_tle_lines(big)
    assert parse_omm_json(format_omm_json([big])) == [big]


# ---------------------------------------------------------------------------- rejections


def test_checksum_error_says_expected_and_actual() -> None:
    """A wrong checksum is refused with the digit found and the sum computed, naming the line."""
    bad = ISS_LINE2[:68] + "7"
    text = f"{ISS_NAME}\n{ISS_LINE1}\n{bad}\n"
    with pytest.raises(ElementError) as caught:
        parse_tle(text, source="stations.tle")
    message = caught.value.message
    assert "line 2 of 'ISS (ZARYA)': checksum digit is 7 but the line sums to 1" in message
    assert caught.value.line_number == 3
    assert caught.value.record_index == 0
    assert caught.value.source == "stations.tle"


def test_sgp4_accepts_what_the_parser_rejects() -> None:
    """twoline2rv takes a bad checksum and a 60-column line; parse_tle refuses both."""
    wrong_checksum = ISS_LINE1[:68] + "0"
    short = ISS_LINE2[:60]
    Satrec.twoline2rv(wrong_checksum, ISS_LINE2)  # no exception: sgp4 does not check
    with pytest.raises(ElementError, match="checksum"):
        parse_tle_lines(wrong_checksum, ISS_LINE2)
    with pytest.raises(ElementError, match="expected 69 characters, got 60"):
        parse_tle_lines(ISS_LINE1, short)


@pytest.mark.parametrize(
    ("line1", "line2", "expected"),
    [
        (ISS_LINE1, _with_checksum(ISS_LINE2[:2] + "25545" + ISS_LINE2[7:]), "does not match"),
        (_with_checksum(ISS_LINE1[:10] + "X" + ISS_LINE1[11:]), ISS_LINE2, "designator"),
        (_with_checksum(ISS_LINE1[:23] + "x" + ISS_LINE1[24:]), ISS_LINE2, "epoch day"),
        (_with_checksum(ISS_LINE1[:20] + "400" + ISS_LINE1[23:]), ISS_LINE2, "1 … 366"),
        (_with_checksum(ISS_LINE1[:55] + "7.77" + ISS_LINE1[59:]), ISS_LINE2, "B\\*"),
        (ISS_LINE1, _with_checksum(ISS_LINE2[:8] + "191.6381" + ISS_LINE2[16:]), "inclination"),
        (ISS_LINE1, _with_checksum(ISS_LINE2[:52] + " 0.00000000" + ISS_LINE2[63:]), "> 0"),
        (ISS_LINE1, _with_checksum(ISS_LINE2[:33] + "x" + ISS_LINE2[34:]), "column 34"),
        (ISS_LINE1, _with_checksum(ISS_LINE2[:26] + "00o3466" + ISS_LINE2[33:]), "eccentricity"),
        (ISS_LINE1, ISS_LINE2[:30] + "é" + ISS_LINE2[31:], "U\\+00E9"),
        (ISS_LINE2, ISS_LINE1, "expected 1 in column 1"),
    ],
)
def test_malformed_lines_are_rejected_before_sgp4(line1: str, line2: str, expected: str) -> None:
    """Each layout, range or consistency violation raises ElementError naming the problem."""
    with pytest.raises(ElementError, match=expected):
        parse_tle_lines(line1, line2)


def test_name_line_without_lines_is_rejected() -> None:
    """A name line must be followed by lines 1 and 2; the error points at the line."""
    with pytest.raises(ElementError, match="expected line 1 of 'LONELY'") as caught:
        parse_tle(f"{ISS_NAME}\n{ISS_LINE1}\n{ISS_LINE2}\nLONELY\n")
    assert caught.value.line_number == 5
    assert caught.value.record_index == 1


def test_omm_missing_and_non_finite_fields_are_rejected() -> None:
    """OMM without required fields, with NaN, booleans, bad ranges or frames is refused."""
    good = json.loads(SPACE_TRACK_JSON)[0]
    cases: list[tuple[dict[str, object], str]] = [
        ({"MEAN_MOTION": None, "BSTAR": ""}, "MEAN_MOTION, BSTAR missing"),
        ({"ECCENTRICITY": "nan"}, "ECCENTRICITY must be a number"),
        ({"ECCENTRICITY": 1.2}, r"eccentricity must be in \[0, 1\)"),
        ({"MEAN_MOTION": -1}, "mean motion must be positive"),
        ({"INCLINATION": True}, "INCLINATION must be a number"),
        ({"REF_FRAME": "GCRF"}, "REF_FRAME must be TEME"),
        ({"EPOCH": "2024-13-09T00:00:00"}, "not a valid UTC instant"),
        ({"NORAD_CAT_ID": "bad id!"}, "expected a catalog id"),
        ({"EPHEMERIS_TYPE": 4}, "SGP4-XP"),
    ]
    for change, expected in cases:
        with pytest.raises(ElementError, match=expected) as caught:
            parse_omm_json(json.dumps([good, {**good, **change}]), source="feed.json")
        assert caught.value.record_index == 1
    with pytest.raises(ElementError, match="must be a finite number"):
        parse_omm_json(json.dumps([good]).replace('"0.00034660"', "NaN"))


def test_csv_row_with_wrong_width_reports_its_line() -> None:
    """A CSV row with a missing value is refused with its line number."""
    text = format_omm_csv([_sample()])
    header, row = text.splitlines()
    with pytest.raises(ElementError, match="line 2: expected 17") as caught:
        parse_omm_csv(f"{header}\n{row.rsplit(',', 1)[0]}\n")
    assert caught.value.line_number == 2


# ---------------------------------------------------------------------------- round trips


def _sample(**changes: object) -> ElementSet:
    base: dict[str, object] = {
        "catalog_id": "25544",
        "name": "SAMPLE",
        "epoch": datetime(2026, 8, 15, 1, 2, 3, 456789, tzinfo=UTC),
        "mean_motion_rev_per_day": 15.05,
        "eccentricity": 0.0001,
        "inclination_deg": 53.0,
        "raan_deg": 10.0,
        "arg_of_pericenter_deg": 20.0,
        "mean_anomaly_deg": 30.0,
        "bstar": 1.5e-4,
    }
    base.update(changes)
    return ElementSet(**base)  # type: ignore[arg-type]


_NAME_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ()-/")


@st.composite
def element_sets(draw: st.DrawFn) -> ElementSet:
    """Valid element sets within what a TLE can express."""
    epoch = draw(
        st.datetimes(min_value=datetime(1957, 1, 2), max_value=datetime(2056, 12, 30))
    ).replace(tzinfo=UTC)
    name = draw(st.text(_NAME_CHARS, min_size=1, max_size=24).filter(lambda s: s.strip()))
    if name.strip().startswith("0 "):
        name = "X" + name.strip()
    intl = draw(
        st.one_of(
            st.just(""),
            st.builds(
                lambda y, n, p: f"{y:04d}-{n:03d}{p}",
                st.integers(1957, 2056),
                st.integers(1, 999),
                st.text(st.sampled_from("ABCDEFGHJKZ"), min_size=1, max_size=3),
            ),
        )
    )
    small = st.one_of(
        st.just(0.0),
        st.floats(1e-12, 0.9).flatmap(lambda v: st.sampled_from([v, -v])),
    )
    return ElementSet(
        catalog_id=str(draw(st.integers(0, 339_999))),
        name=name,
        epoch=epoch,
        mean_motion_rev_per_day=draw(st.floats(0.9, 17.0)),
        eccentricity=draw(st.floats(0.0, 0.95)),
        inclination_deg=draw(st.floats(0.0, 180.0)),
        raan_deg=draw(st.floats(0.0, 360.0)),
        arg_of_pericenter_deg=draw(st.floats(0.0, 360.0)),
        mean_anomaly_deg=draw(st.floats(0.0, 360.0)),
        bstar=draw(small),
        mean_motion_dot=draw(st.floats(-0.9, 0.9)),
        mean_motion_ddot=draw(small),
        classification=draw(st.sampled_from("UCS")),
        intl_designator=intl,
        element_set_no=draw(st.integers(0, 9999)),
        rev_at_epoch=draw(st.integers(0, 99_999)),
        ephemeris_type=0,
    )


def _assert_tle_precision(original: ElementSet, parsed: ElementSet) -> None:
    """Equal within half a unit of the TLE's last digit, field by field."""
    assert parsed.catalog_id == original.catalog_id
    assert parsed.name == original.name
    assert abs(parsed.epoch - original.epoch) <= HALF_TLE_EPOCH_UNIT
    for field, half_unit in (
        ("inclination_deg", 5e-5),
        ("raan_deg", 5e-5),
        ("arg_of_pericenter_deg", 5e-5),
        ("mean_anomaly_deg", 5e-5),
        ("eccentricity", 5e-8),
        ("mean_motion_rev_per_day", 5e-9),
        ("mean_motion_dot", 5e-9),
    ):
        assert getattr(parsed, field) == pytest.approx(
            getattr(original, field), rel=1e-12, abs=half_unit * (1 + 1e-9)
        ), field
    for field in ("bstar", "mean_motion_ddot"):  # 5 significant digits, exponent -9 … +9
        assert getattr(parsed, field) == pytest.approx(
            getattr(original, field), rel=5.000001e-5, abs=5.000001e-15
        ), field
    for field in (
        "classification",
        "intl_designator",
        "element_set_no",
        "rev_at_epoch",
        "ephemeris_type",
    ):
        assert getattr(parsed, field) == getattr(original, field), field


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(element_sets())
def test_tle_round_trip_is_exact_to_the_format_precision(original: ElementSet) -> None:
    """Any valid element set → 3LE → parse gives back every field within the TLE's precision."""
    (parsed,) = parse_tle(format_tle([original]))
    _assert_tle_precision(original, parsed)
    # Writing the parsed set again gives the same text: the format is a fixed point.
    assert format_tle([parsed]) == format_tle([original])


@settings(max_examples=100, deadline=None)
@given(element_sets(), st.sampled_from(list(ElementFormat)[2:]))
def test_omm_round_trips_are_exact(original: ElementSet, fmt: ElementFormat) -> None:
    """Any valid element set → OMM JSON/CSV/XML → parse gives back an equal ElementSet."""
    text = format_elements([original, original], fmt)
    assert parse_elements(text) == [original, original]


def _checksum_value(char: str) -> int:
    return int(char) if char.isdigit() else 1 if char == "-" else 0


_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 2]),
    st.integers(0, 68),
    _PRINTABLE,
)
def test_flipping_a_checksummed_character_is_rejected(which: int, column: int, new: str) -> None:
    """Changing any character to one with a different checksum value is always rejected."""
    lines = [ISS_LINE1, ISS_LINE2]
    old = lines[which - 1][column]
    if _checksum_value(new) == _checksum_value(old) and column != 68:
        new = str((_checksum_value(old) + 1) % 10)
    if new == old:
        new = str((int(old) + 1) % 10) if old.isdigit() else "1"
    mutated = lines[which - 1][:column] + new + lines[which - 1][column + 1 :]
    lines[which - 1] = mutated
    with pytest.raises(ElementError):
        parse_tle(f"{ISS_NAME}\n{lines[0]}\n{lines[1]}\n")


_FIXED_COLUMNS = {1: (0, 1, 8, 17, 32, 43, 52, 61, 63), 2: (0, 1, 7, 16, 25, 33, 42, 51)}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_change_to_a_fixed_column_is_rejected(data: st.DataObject) -> None:
    """Line numbers and the blank separator columns accept nothing else, checksum or not."""
    which = data.draw(st.sampled_from([1, 2]))
    column = data.draw(st.sampled_from(_FIXED_COLUMNS[which]))
    lines = [ISS_LINE1, ISS_LINE2]
    old = lines[which - 1][column]
    new = data.draw(_PRINTABLE.filter(lambda c: c != old))
    mutated = lines[which - 1][:column] + new + lines[which - 1][column + 1 :]
    lines[which - 1] = _with_checksum(mutated)
    with pytest.raises(ElementError):
        parse_tle(f"{lines[0]}\n{lines[1]}\n")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2]), st.integers(0, 68), st.integers(1, 68))
def test_truncated_or_non_ascii_lines_are_rejected(which: int, column: int, keep: int) -> None:
    """Lines cut short (anywhere) or holding a non-ASCII character are rejected."""
    lines = [ISS_LINE1, ISS_LINE2]
    truncated = list(lines)
    truncated[which - 1] = lines[which - 1][:keep]
    with pytest.raises(ElementError):
        parse_tle(f"{truncated[0]}\n{truncated[1]}\n")
    non_ascii = list(lines)
    non_ascii[which - 1] = lines[which - 1][:column] + "\u00b0" + lines[which - 1][column + 1 :]
    with pytest.raises(ElementError, match="ASCII"):
        parse_tle(f"{non_ascii[0]}\n{non_ascii[1]}\n")


def test_element_set_rejects_invalid_values_directly() -> None:
    """Constructing an ElementSet validates ids, epoch awareness and element ranges."""
    with pytest.raises(ElementError, match="timezone-aware"):
        _sample(epoch=datetime(2026, 1, 1))
    with pytest.raises(ElementError, match="expected a catalog id"):
        _sample(catalog_id="has space")
    with pytest.raises(ElementError, match="finite"):
        _sample(bstar=math.inf)
    with pytest.raises(ElementError, match="1998-067A"):
        _sample(intl_designator="98067A")
    assert _sample(catalog_id="walker-0001").satnum == 0


def test_tle_export_refuses_what_the_format_cannot_hold() -> None:
    """Synthetic ids, epochs outside 1957-2056 and huge drag terms refuse TLE export."""
    with pytest.raises(InvalidArgument, match="not a catalog number"):
        to_tle_lines(_sample(catalog_id="walker-0001"))
    with pytest.raises(InvalidArgument, match="1957-2056"):
        to_tle_lines(_sample(epoch=datetime(2060, 1, 1, tzinfo=UTC)))
    with pytest.raises(InvalidArgument, match="too large"):
        to_tle_lines(_sample(bstar=3e9))
    with pytest.raises(InvalidArgument, match="not ASCII"):
        format_tle([_sample(name="MÜNCHEN-SAT")])
    assert format_omm_xml([_sample(name="MÜNCHEN-SAT")]).count("MÜNCHEN-SAT") == 1


def test_epoch_rounding_carries_into_the_next_year() -> None:
    """An epoch 0.1 ms before New Year rounds to day 001.00000000 of the next year."""
    late = _sample(epoch=datetime(2025, 12, 31, 23, 59, 59, 999900, tzinfo=UTC))
    line1, _ = to_tle_lines(late)
    assert line1[18:32] == "26001.00000000"
