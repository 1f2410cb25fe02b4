"""The crashes the fuzz campaign found, each pinned at the function that had it: the input
now gets the documented error (InvalidArgument, a precise status) instead of an exception the
caller sees as INTERNAL or a 500."""

from __future__ import annotations

import csv

import pytest

from groundplane.gateway.http import parse_body
from groundplane.kernel.errors import InvalidArgument
from groundplane.node.sessions import SessionState, Turn, decode_session, encode_session
from groundplane.orbit.elements import ElementError, parse_omm_csv

from .targets import CRASHES_DIR

CSV_HEADER = (
    "OBJECT_NAME,OBJECT_ID,EPOCH,MEAN_MOTION,ECCENTRICITY,INCLINATION,RA_OF_ASC_NODE,"
    "ARG_OF_PERICENTER,MEAN_ANOMALY,EPHEMERIS_TYPE,CLASSIFICATION_TYPE,NORAD_CAT_ID,"
    "ELEMENT_SET_NO,REV_AT_EPOCH,BSTAR,MEAN_MOTION_DOT,MEAN_MOTION_DDOT"
)
ISS_ROW = (
    "ISS (ZARYA),1998-067A,2026-08-14T12:00:00.000000,15.5,0.0005,51.64,10.0,20.0,30.0,0,U,"
    "25544,999,1000,0.0001,0.00001,0"
)


def test_omm_csv_lone_carriage_return_is_an_element_error() -> None:
    """The campaign's reproducer (a CR alone inside a CSV line) is an ElementError, where the
    csv module's ``_csv.Error`` escaped before."""
    text = (CRASHES_DIR / "elements_omm_csv-crash-lone-carriage-return").read_bytes()
    with pytest.raises(ElementError):
        parse_omm_csv(text.decode("utf-8", errors="replace"))


def test_omm_csv_lone_carriage_return_ends_a_record() -> None:
    """CR line endings are line endings: the csv module splits the records (newline="")."""
    (parsed,) = parse_omm_csv(f"{CSV_HEADER}\r{ISS_ROW}\r")
    assert parsed.catalog_id == "25544"


def test_omm_csv_field_over_the_csv_limit_names_the_line() -> None:
    """A quoted field longer than ``csv.field_size_limit()`` is an ElementError naming its line
    (it was ``_csv.Error: field larger than field limit``)."""
    huge = '"' + "x" * (csv.field_size_limit() + 1) + '"'
    with pytest.raises(ElementError, match="line 2: expected OMM CSV") as caught:
        parse_omm_csv(f"{CSV_HEADER}\n{huge}\n")
    assert caught.value.line_number == 2


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("nested brackets", b"[" * 100_000),
        ("5,000-digit integer", b'{"format":1,"epoch":' + b"9" * 5000 + b"}"),
    ],
)
def test_session_snapshot_beyond_the_json_decoder_is_invalid_argument(
    name: str, data: bytes
) -> None:
    """A snapshot the JSON decoder cannot take (RecursionError, the int-string digit limit's
    ValueError) is InvalidArgument: a node refuses the import, handoff the export."""
    with pytest.raises(InvalidArgument, match="expected a session snapshot"):
        decode_session(data)


def test_session_snapshot_still_round_trips() -> None:
    """The widened error handling leaves valid snapshots alone."""
    state = SessionState("s-1", "synth-7b", 3, (Turn("hi", "hello"),))
    assert decode_session(encode_session(state)) == state


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"model":"m","n":' + b"9" * 5000 + b"}", b"\xff\xfe{", b"{"],
)
def test_http_body_beyond_the_json_decoder_is_invalid_argument(raw: bytes) -> None:
    """A body Starlette's ``request.json()`` would have turned into a 500 (RecursionError,
    ValueError from a 5,000-digit number) is InvalidArgument, answered 400."""
    with pytest.raises(InvalidArgument, match="the request body is not JSON"):
        parse_body(raw)


def test_http_body_parses_json() -> None:
    """A JSON body decodes to its document."""
    assert parse_body(b'{"model": "synth-7b", "n": 1}') == {"model": "synth-7b", "n": 1}
