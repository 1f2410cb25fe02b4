"""Orbital element sets: one canonical form, validated ingest and exact export.

Formats read: TLE (two lines), 3LE (a name line before the two lines, optionally starting
``0 ``), Alpha-5 catalog numbers, and OMM as JSON, CSV and CCSDS XML in both the CelesTrak
flavour (numbers as numbers) and the Space-Track flavour (numbers as strings).

Everything is validated here, before anything reaches ``sgp4``: ``Satrec.twoline2rv`` accepts
wrong checksums, short lines and garbage in numeric columns, so a bad line would otherwise turn
into a wrong orbit instead of an error. Every rejection is an :class:`ElementError` (an
``InvalidArgument``) whose message says what was expected and what came.

Catalog ids
-----------
A catalog id is a string and the catalog's key; it is not limited to what ``Satrec.satnum``
can hold. The canonical form of a numeric id is its decimal number without leading zeros:
TLE ``00005`` is ``"5"``, OMM ``NORAD_CAT_ID`` 400123 is ``"400123"``, and the Alpha-5 number
``A0001`` is ``"100001"`` (``Z9999`` is ``"339999"``; Alpha-5 letters skip I and O). Any other
id (synthetic satellites, e.g. ``"walker-0001"``) is kept as given: 1 to 64 characters from
``A-Z a-z 0-9 . _ -``, starting with a letter or digit. :func:`canonical_catalog_id` applies
these rules, so a lookup by ``"A0001"`` finds ``"100001"``. The satellite's name is kept
separately, exactly as the source spelled it (trailing blanks removed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from sgp4.api import WGS72, Satrec

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number

# --------------------------------------------------------------------------------------------
# constants

#: Minutes per day over radians per revolution: rev/day ÷ XPDOTP = rad/min (as ``twoline2rv``).
XPDOTP = 1440.0 / (2.0 * math.pi)
_DEG2RAD = math.pi / 180.0
#: Julian date of 1949-12-31 00:00 UT, the origin of ``sgp4init``'s epoch argument.
_JD_1949_DEC_31 = 2433281.5
#: Julian date of the proleptic Gregorian ordinal 0 at midnight (``date.toordinal() + this``).
_JD_ORDINAL_OFFSET = 1721424.5
_US_PER_DAY = 86_400_000_000
#: One unit of the TLE epoch's 8th decimal of a day is exactly 864 µs.
_US_PER_TLE_EPOCH_UNIT = 864
#: Largest catalog number a TLE (Alpha-5) and ``Satrec.satnum`` can hold.
MAX_TLE_CATALOG_NUMBER = 339_999
TLE_LINE_LENGTH = 69

_ALPHA5_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # I and O are skipped (they look like 1 and 0)
MAX_CATALOG_ID_CHARS = 64
"""The longest catalog id, numeric ids included (a catalog number has at most 64 digits)."""
_CATALOG_NUMBER_LIMIT = 10**MAX_CATALOG_ID_CHARS
EARLIEST_EPOCH = datetime(1957, 1, 1, tzinfo=UTC)
"""No element set has an epoch before 1957 (Sputnik 1 flew in October 1957)."""
LATEST_EPOCH = datetime(2100, 1, 1, tzinfo=UTC)
"""Element sets are refused from this instant on (far past any forecast worth planning on)."""
_CATALOG_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_ALPHA5_RE = re.compile(r"[A-Z][0-9]{4}", re.ASCII)
_OBJECT_ID_RE = re.compile(r"(\d{4})-(\d{3})([A-Z]{1,3})", re.ASCII)
_TLE_INTL_RE = re.compile(r"(\d{2})(\d{3})([A-Z]{1,3}) *", re.ASCII)
_UNSIGNED_DECIMAL_RE = re.compile(r" *(\d+\.?\d*|\.\d+) *", re.ASCII)
_NDOT_RE = re.compile(r" *[+-]?0?\.\d+ *", re.ASCII)
_IMPLIED_RE = re.compile(r"([ +-])(\d{5})([ +-])(\d)", re.ASCII)
_EPOCH_DAY_RE = re.compile(r" *(\d{1,3})\.(\d{1,9}) *", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER_RE = re.compile(r"[+-]?\d+", re.ASCII)
_DIGITS_RE = re.compile(r" *\d+", re.ASCII)
_YEAR_RE = re.compile(r"\d\d", re.ASCII)
_OMM_EPOCH_RE = re.compile(
    r"(\d{4})-(?:(\d{2})-(\d{2})|(\d{3}))T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|\+00:?00)?",
    re.ASCII,
)

# Column layout (1-based columns that must hold a blank).
_LINE1_BLANKS = (2, 9, 18, 33, 44, 53, 62, 64)
_LINE2_BLANKS = (2, 8, 17, 26, 34, 43, 52)

#: OMM keys in the order CelesTrak writes them (JSON and CSV).
OMM_KEYS = (
    "OBJECT_NAME",
    "OBJECT_ID",
    "EPOCH",
    "MEAN_MOTION",
    "ECCENTRICITY",
    "INCLINATION",
    "RA_OF_ASC_NODE",
    "ARG_OF_PERICENTER",
    "MEAN_ANOMALY",
    "EPHEMERIS_TYPE",
    "CLASSIFICATION_TYPE",
    "NORAD_CAT_ID",
    "ELEMENT_SET_NO",
    "REV_AT_EPOCH",
    "BSTAR",
    "MEAN_MOTION_DOT",
    "MEAN_MOTION_DDOT",
)
OMM_REQUIRED_KEYS = (
    "NORAD_CAT_ID",
    "EPOCH",
    "MEAN_MOTION",
    "ECCENTRICITY",
    "INCLINATION",
    "RA_OF_ASC_NODE",
    "ARG_OF_PERICENTER",
    "MEAN_ANOMALY",
    "BSTAR",
)
_OMM_META_KEYS = ("OBJECT_NAME", "OBJECT_ID", "CENTER_NAME", "REF_FRAME", "TIME_SYSTEM")
_OMM_MEAN_KEYS = (
    "EPOCH",
    "MEAN_MOTION",
    "ECCENTRICITY",
    "INCLINATION",
    "RA_OF_ASC_NODE",
    "ARG_OF_PERICENTER",
    "MEAN_ANOMALY",
)
_OMM_TLE_KEYS = (
    "EPHEMERIS_TYPE",
    "CLASSIFICATION_TYPE",
    "NORAD_CAT_ID",
    "ELEMENT_SET_NO",
    "REV_AT_EPOCH",
    "BSTAR",
    "MEAN_MOTION_DOT",
    "MEAN_MOTION_DDOT",
)


class ElementError(InvalidArgument):
    """An element set was rejected; the message says what was expected and what came.

    ``record_index`` is the 0-based index of the element set in its input (``None`` when not
    known), ``line_number`` the 1-based line of the input text (TLE, CSV) where the problem is,
    ``source`` the name the caller gave the input (a file name, a URL, ``"<text>"``).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        record_index: int | None = None,
        line_number: int | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.record_index = record_index
        self.line_number = line_number


class ElementFormat(Enum):
    """The formats :func:`parse_elements` recognises and :func:`format_elements` writes."""

    TLE = "tle"  # two-line, no names
    THREE_LE = "3le"  # name line + two lines
    OMM_JSON = "omm-json"
    OMM_CSV = "omm-csv"
    OMM_XML = "omm-xml"


# --------------------------------------------------------------------------------------------
# catalog ids


def alpha5_to_number(field: str) -> int:
    """The catalog number of a 5-character TLE field: ``"25544"`` → 25544, ``"A0001"`` → 100001."""
    text = field.strip()
    if text.isdigit() and text.isascii() and len(text) <= 5:  # before int(): huge digit strings
        return int(text)
    if _ALPHA5_RE.fullmatch(text):
        letter = text[0]
        if letter in "IO":
            raise InvalidArgument(
                f"Alpha-5 catalog number {field!r} starts with {letter!r}; Alpha-5 skips I and O "
                "(A=10 … H=17, J=18 … N=22, P=23 … Z=33)"
            )
        return (10 + _ALPHA5_LETTERS.index(letter)) * 10_000 + int(text[1:])
    raise InvalidArgument(
        f"expected a catalog number of up to 5 digits or Alpha-5 (a letter and 4 digits, "
        f"e.g. A0001), got {field!r}"
    )


def number_to_alpha5(number: int) -> str:
    """The 5-character TLE field for a catalog number: 25544 → ``"25544"``, 100001 → ``"A0001"``."""
    if not 0 <= number <= MAX_TLE_CATALOG_NUMBER:
        raise InvalidArgument(
            f"catalog number {number} cannot be written in a TLE: the format (with Alpha-5) holds "
            f"0 … {MAX_TLE_CATALOG_NUMBER}; export it as OMM (JSON, CSV or XML) instead"
        )
    if number < 100_000:
        return f"{number:05d}"
    return _ALPHA5_LETTERS[number // 10_000 - 10] + f"{number % 10_000:04d}"


def canonical_catalog_id(value: str | int) -> str:
    """The catalog's key for ``value`` (see the module docstring for the rules)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"expected a catalog id (string or integer), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"expected a non-negative catalog number, got {value}")
        if value >= _CATALOG_NUMBER_LIMIT:  # before str(): a huge int is slow or refused there
            raise InvalidArgument(
                f"expected a catalog number of at most {MAX_CATALOG_ID_CHARS} digits, got one "
                f"of about {int(value.bit_length() * math.log10(2)) + 1} digits"
            )
        return str(value)
    if not isinstance(value, str):
        raise InvalidArgument(f"expected a catalog id (string or integer), got {value!r}")
    text = value.strip()
    if len(text) > MAX_CATALOG_ID_CHARS:
        raise InvalidArgument(
            f"expected a catalog id of 1-{MAX_CATALOG_ID_CHARS} characters, got "
            f"{len(text)} characters starting {text[:32]!r}"
        )
    if text.isascii() and text.isdigit():
        return str(int(text))
    if _ALPHA5_RE.fullmatch(text):
        return str(alpha5_to_number(text))
    if not _CATALOG_ID_RE.fullmatch(text):
        raise InvalidArgument(
            "expected a catalog id: a catalog number (25544, 400123), an Alpha-5 number (A0001) or "
            "1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit "
            f"(e.g. walker-0001), got {value!r}"
        )
    return text


def catalog_number(catalog_id: str) -> int | None:
    """The integer catalog number of a numeric id, ``None`` for synthetic ids."""
    return int(catalog_id) if catalog_id.isascii() and catalog_id.isdigit() else None


# --------------------------------------------------------------------------------------------
# the canonical element set


@dataclass(frozen=True)
class ElementSet:
    """One SGP4 mean element set, independent of the format it came in.

    Units follow OMM: ``mean_motion_rev_per_day`` is the Kozai mean motion in revolutions per
    day; ``mean_motion_dot`` is half the first derivative in rev/day² and ``mean_motion_ddot``
    a sixth of the second derivative in rev/day³ (the TLE and OMM convention; SGP4 ignores
    both); ``bstar`` is the drag term in 1/earth radii. ``epoch`` is aware UTC with microsecond
    resolution. ``intl_designator`` is the OMM ``OBJECT_ID`` form (``1998-067A``) or ``""``.
    """

    catalog_id: str
    name: str
    epoch: datetime
    mean_motion_rev_per_day: float
    eccentricity: float
    inclination_deg: float
    raan_deg: float
    arg_of_pericenter_deg: float
    mean_anomaly_deg: float
    bstar: float = 0.0
    mean_motion_dot: float = 0.0
    mean_motion_ddot: float = 0.0
    classification: str = "U"
    intl_designator: str = ""
    element_set_no: int = 0
    rev_at_epoch: int = 0
    ephemeris_type: int = 0

    def __post_init__(self) -> None:  # noqa: PLR0912 - a validator with one branch per field it checks
        try:
            catalog_id = canonical_catalog_id(self.catalog_id)
        except InvalidArgument as bad:
            raise ElementError(bad.message) from None
        object.__setattr__(self, "catalog_id", catalog_id)
        label = f"element set of {catalog_id!r}"
        if not isinstance(self.name, str) or not self.name.isprintable():
            raise ElementError(f"{label}: name must be printable text, got {self.name!r}")
        object.__setattr__(self, "name", self.name.strip())
        if not isinstance(self.epoch, datetime) or self.epoch.tzinfo is None:
            raise ElementError(
                f"{label}: epoch must be a timezone-aware UTC datetime, got {self.epoch!r}"
            )
        object.__setattr__(self, "epoch", self.epoch.astimezone(UTC))
        if not EARLIEST_EPOCH <= self.epoch < LATEST_EPOCH:
            raise ElementError(
                f"{label}: epoch must be from {EARLIEST_EPOCH.year} (the first satellite) to "
                f"before {LATEST_EPOCH.year}, got {self.epoch.isoformat()}"
            )
        for field_name in (
            "mean_motion_rev_per_day",
            "eccentricity",
            "inclination_deg",
            "raan_deg",
            "arg_of_pericenter_deg",
            "mean_anomaly_deg",
            "bstar",
            "mean_motion_dot",
            "mean_motion_ddot",
        ):
            number = finite_number(
                f"{label}: {field_name}", getattr(self, field_name), error=ElementError
            )
            object.__setattr__(self, field_name, number)
        if not self.mean_motion_rev_per_day > 0.0:
            raise ElementError(
                f"{label}: mean motion must be positive (rev/day), got "
                f"{self.mean_motion_rev_per_day}"
            )
        if not 0.0 <= self.eccentricity < 1.0:
            raise ElementError(
                f"{label}: eccentricity must be in [0, 1) for an orbit SGP4 can propagate, got "
                f"{self.eccentricity}"
            )
        if not 0.0 <= self.inclination_deg <= 180.0:
            raise ElementError(
                f"{label}: inclination_deg must be in [0, 180], got {self.inclination_deg}"
            )
        for field_name in ("raan_deg", "arg_of_pericenter_deg", "mean_anomaly_deg"):
            angle = getattr(self, field_name)
            if not 0.0 <= angle <= 360.0:
                raise ElementError(f"{label}: {field_name} must be in [0, 360], got {angle}")
        if not (
            isinstance(self.classification, str)
            and len(self.classification) == 1
            and "A" <= self.classification <= "Z"
        ):
            raise ElementError(
                f"{label}: classification must be one capital letter (U, C or S), got "
                f"{self.classification!r}"
            )
        if self.intl_designator and not _OBJECT_ID_RE.fullmatch(self.intl_designator):
            raise ElementError(
                f"{label}: intl_designator must look like 1998-067A (year-launch-piece) or be "
                f"empty, got {self.intl_designator!r}"
            )
        for field_name in ("element_set_no", "rev_at_epoch", "ephemeris_type"):
            count = getattr(self, field_name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ElementError(
                    f"{label}: {field_name} must be a non-negative integer, got {count!r}"
                )
        if self.ephemeris_type == 4:
            raise ElementError(
                f"{label}: ephemeris type 4 marks SGP4-XP elements, which SGP4 cannot propagate; "
                "expected type 0 (SGP4/SDP4)"
            )

    @property
    def satnum(self) -> int:
        """The number to put in ``Satrec.satnum``: the catalog number when ≤ 339999, else 0."""
        number = catalog_number(self.catalog_id)
        return number if number is not None and number <= MAX_TLE_CATALOG_NUMBER else 0

    def julian_epoch(self) -> tuple[float, float]:
        """The epoch as ``(jd, fraction)``: Julian date of 0h UTC and the exact day fraction.

        Two parts keep microsecond precision (one float Julian date near 2.46e6 resolves only
        ~40 µs, which is ~30 cm of along-track position in low orbit).
        """
        epoch = self.epoch
        midnight_jd = epoch.date().toordinal() + _JD_ORDINAL_OFFSET
        us_of_day = (
            epoch.hour * 3600 + epoch.minute * 60 + epoch.second
        ) * 1_000_000 + epoch.microsecond
        return midnight_jd, us_of_day / _US_PER_DAY

    def to_satrec(self) -> Satrec:
        """An ``sgp4.api.Satrec`` initialised from these elements (WGS72, improved mode ``'i'``).

        Units are converted exactly as ``Satrec.twoline2rv`` does, and the epoch is stored in
        two parts, so a Satrec built from a parsed TLE matches ``twoline2rv`` of the same lines.
        ``satnum`` is :attr:`satnum`; the catalog id itself lives outside the Satrec.
        """
        jd, fraction = self.julian_epoch()
        satrec = Satrec()
        satrec.sgp4init(
            WGS72,
            "i",
            self.satnum,
            (jd - _JD_1949_DEC_31) + fraction,
            self.bstar,
            self.mean_motion_dot / (XPDOTP * 1440.0),
            self.mean_motion_ddot / (XPDOTP * 1440.0 * 1440.0),
            self.eccentricity,
            self.arg_of_pericenter_deg * _DEG2RAD,
            self.inclination_deg * _DEG2RAD,
            self.mean_anomaly_deg * _DEG2RAD,
            self.mean_motion_rev_per_day / XPDOTP,
            self.raan_deg * _DEG2RAD,
        )
        satrec.jdsatepoch = jd
        satrec.jdsatepochF = fraction
        satrec.classification = self.classification
        satrec.elnum = self.element_set_no
        satrec.revnum = self.rev_at_epoch
        satrec.ephtype = self.ephemeris_type
        if satrec.error != 0:
            raise ElementError(
                f"element set of {self.catalog_id!r}: SGP4 rejected the elements at epoch "
                f"(error code {satrec.error}); expected an orbit above the Earth's surface with "
                "eccentricity in [0, 1)"
            )
        return satrec


# --------------------------------------------------------------------------------------------
# TLE parsing


#: Byte → checksum value ('0'…'9' their digit, '-' one, every other byte zero).
_CHECKSUM_TABLE = bytes((b - 48) if 48 <= b <= 57 else 1 if b == 45 else 0 for b in range(256))


def _checksum(line: str) -> int:
    """Sum of the digits of the first 68 columns, with '-' counting 1, modulo 10."""
    head = line[:68]
    if head.isascii():  # the usual case, in C: one table lookup per byte
        return sum(head.encode("ascii").translate(_CHECKSUM_TABLE)) % 10
    total = 0
    for char in line[:68]:
        if "0" <= char <= "9":
            total += ord(char) - 48
        elif char == "-":
            total += 1
    return total % 10


def tle_checksum(line: str) -> int:
    """The checksum digit a TLE line (at least its first 68 columns) must end with."""
    return _checksum(line)


def _implied(field: str) -> float:
    """A TLE implied-decimal field such as `` 27777-3`` (0.27777e-3)."""
    match = _IMPLIED_RE.fullmatch(field)
    if match is None:
        raise ValueError(field)
    sign, mantissa, exp_sign, exponent = match.groups()
    text = f"{'-' if sign == '-' else ''}0.{mantissa}e{'-' if exp_sign == '-' else ''}{exponent}"
    return float(text)


@dataclass
class _TleContext:
    source: str
    record_index: int
    label: str

    def error(self, line_number: int, which: int, problem: str) -> ElementError:
        prefix = f"{self.source} line {line_number}: " if self.source else ""
        return ElementError(
            f"{prefix}line {which} of {self.label}: {problem}",
            source=self.source,
            record_index=self.record_index,
            line_number=line_number,
        )


def _check_common(line: str, which: int, line_number: int, ctx: _TleContext) -> None:
    # Printable ASCII is exactly ' '…'~' (str.isprintable, in C); the loop finds the culprit.
    for column, char in enumerate(() if line.isascii() and line.isprintable() else line, start=1):
        if not " " <= char <= "~":
            raise ctx.error(
                line_number,
                which,
                f"column {column} holds {char!r} (U+{ord(char):04X}); TLE lines are printable "
                "ASCII only",
            )
    if len(line) != TLE_LINE_LENGTH:
        raise ctx.error(
            line_number,
            which,
            f"expected {TLE_LINE_LENGTH} characters, got {len(line)}"
            + (" (truncated?)" if len(line) < TLE_LINE_LENGTH else ""),
        )
    if line[0] != str(which):
        raise ctx.error(line_number, which, f"expected {which!s} in column 1, got {line[0]!r}")
    if not line[68].isdigit():
        raise ctx.error(
            line_number, which, f"expected a checksum digit in column 69, got {line[68]!r}"
        )
    expected = _checksum(line)
    if int(line[68]) != expected:
        raise ctx.error(
            line_number,
            which,
            f"checksum digit is {line[68]} but the line sums to {expected} (digits, '-' counts 1, "
            "modulo 10)",
        )
    blanks = _LINE1_BLANKS if which == 1 else _LINE2_BLANKS
    for column in blanks:
        if line[column - 1] != " ":
            raise ctx.error(
                line_number,
                which,
                f"expected a blank in column {column} (fixed TLE layout), got {line[column - 1]!r}",
            )


def _field(  # noqa: PLR0913 - a fixed-column field: its line, columns, and what the error shows
    line: str,
    which: int,
    line_number: int,
    ctx: _TleContext,
    *,
    first: int,
    last: int,
    name: str,
    pattern: re.Pattern[str],
    example: str,
) -> str:
    text = line[first - 1 : last]
    if pattern.fullmatch(text) is None:
        raise ctx.error(
            line_number,
            which,
            f"columns {first}-{last} ({name}) must look like {example!r}, got {text!r}",
        )
    return text


def _catalog_number(line1: str, line2: str, n1: int, ctx: _TleContext) -> int:
    """Columns 3-7 of both lines (Alpha-5 allowed), which must name the same satellite."""
    n2 = n1 + 1
    try:
        number1 = alpha5_to_number(line1[2:7])
    except InvalidArgument as bad:
        raise ctx.error(n1, 1, f"columns 3-7: {bad.message}") from None
    try:
        number2 = alpha5_to_number(line2[2:7])
    except InvalidArgument as bad:
        raise ctx.error(n2, 2, f"columns 3-7: {bad.message}") from None
    if number1 != number2:
        raise ctx.error(
            n2,
            2,
            f"catalog number {line2[2:7]!r} does not match line 1's {line1[2:7]!r}; both lines "
            "must describe the same satellite",
        )
    return number1


def _classification(line1: str, n1: int, ctx: _TleContext) -> str:
    """Column 8 of line 1 (a blank reads as U, unclassified)."""
    classification = line1[7]
    if classification == " ":
        classification = "U"
    if not "A" <= classification <= "Z":
        raise ctx.error(
            n1, 1, f"column 8 (classification) must be U, C or S, got {classification!r}"
        )
    return classification


def _intl_designator(line1: str, n1: int, ctx: _TleContext) -> str:
    """Columns 10-17 of line 1 as ``YYYY-NNNP`` (blank: ``""``)."""
    intl_field = line1[9:17]
    if not intl_field.strip():
        return ""
    match = _TLE_INTL_RE.fullmatch(intl_field)
    if match is None:
        raise ctx.error(
            n1,
            1,
            f"columns 10-17 (international designator) must look like '98067A  ' or be "
            f"blank, got {intl_field!r}",
        )
    yy, launch, piece = match.groups()
    year = int(yy) + (1900 if int(yy) >= 57 else 2000)
    return f"{year:04d}-{launch}{piece}"


def _epoch(line1: str, n1: int, ctx: _TleContext) -> datetime:
    """Columns 19-32 of line 1 (two-digit year, day of year with fraction), to the microsecond."""
    year_text = _field(
        line1, 1, n1, ctx, first=19, last=20, name="epoch year", pattern=_YEAR_RE, example="24"
    )
    day_text = _field(
        line1,
        1,
        n1,
        ctx,
        first=21,
        last=32,
        name="epoch day of year",
        pattern=_EPOCH_DAY_RE,
        example="130.36689744",
    )
    year = int(year_text) + (1900 if int(year_text) >= 57 else 2000)
    day_match = _EPOCH_DAY_RE.fullmatch(day_text)
    assert day_match is not None
    day_of_year = int(day_match.group(1))
    days_in_year = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    if not 1 <= day_of_year <= days_in_year:
        raise ctx.error(
            n1,
            1,
            f"columns 21-32: epoch day of year must be 1 … {days_in_year} in {year}, got "
            f"{day_of_year}",
        )
    digits = day_match.group(2)
    numerator = int(digits) * _US_PER_DAY
    denominator = 10 ** len(digits)
    us_of_day = (2 * numerator + denominator) // (2 * denominator)
    return datetime(year, 1, 1, tzinfo=UTC) + timedelta(
        days=day_of_year - 1, microseconds=us_of_day
    )


def _parse_tle_pair(  # noqa: PLR0913 - the two lines and name, plus where they came from for errors
    line1: str,
    line2: str,
    name: str,
    *,
    source: str,
    record_index: int,
    line_number: int,
) -> ElementSet:
    label_id = line1[2:7].strip() if len(line1) >= 7 else ""
    label = repr(name) if name else f"catalog {label_id!r}" if label_id else "the element set"
    ctx = _TleContext(source, record_index, label)
    n1, n2 = line_number, line_number + 1
    _check_common(line1, 1, n1, ctx)
    _check_common(line2, 2, n2, ctx)

    def field1(first: int, last: int, name: str, pattern: re.Pattern[str], example: str) -> str:
        return _field(
            line1, 1, n1, ctx, first=first, last=last, name=name, pattern=pattern, example=example
        )

    def field2(first: int, last: int, name: str, pattern: re.Pattern[str], example: str) -> str:
        return _field(
            line2, 2, n2, ctx, first=first, last=last, name=name, pattern=pattern, example=example
        )

    number1 = _catalog_number(line1, line2, n1, ctx)
    classification = _classification(line1, n1, ctx)
    intl = _intl_designator(line1, n1, ctx)
    epoch = _epoch(line1, n1, ctx)

    ndot = float(field1(34, 43, "mean motion dot / 2", _NDOT_RE, " .00016024"))
    implied_example = " 27777-3"
    nddot = _implied(field1(45, 52, "mean motion ddot / 6", _IMPLIED_RE, implied_example))
    bstar = _implied(field1(54, 61, "B*", _IMPLIED_RE, implied_example))
    ephemeris_field = line1[62]
    if ephemeris_field not in " 0123456789":
        raise ctx.error(
            n1, 1, f"column 63 (ephemeris type) must be a digit, got {ephemeris_field!r}"
        )
    ephemeris_type = 0 if ephemeris_field == " " else int(ephemeris_field)
    elset_field = line1[64:68]
    if elset_field.strip() and _DIGITS_RE.fullmatch(elset_field) is None:
        raise ctx.error(
            n1, 1, f"columns 65-68 (element set number) must be digits, got {elset_field!r}"
        )
    element_set_no = int(elset_field) if elset_field.strip() else 0

    angle = _UNSIGNED_DECIMAL_RE
    inclination = float(field2(9, 16, "inclination", angle, " 51.6381"))
    raan = float(field2(18, 25, "right ascension of node", angle, "147.8590"))
    ecc_text = field2(27, 33, "eccentricity, implied leading '0.'", _DIGITS_RE, "0003466")
    eccentricity = float("0." + ecc_text.replace(" ", "0"))
    argp = float(field2(35, 42, "argument of perigee", angle, "150.4670"))
    mean_anomaly = float(field2(44, 51, "mean anomaly", angle, "338.5502"))
    mean_motion = float(field2(53, 63, "mean motion", angle, "15.51043222"))
    rev_text = line2[63:68]
    if rev_text.strip() and _DIGITS_RE.fullmatch(rev_text) is None:
        raise ctx.error(
            n2, 2, f"columns 64-68 (revolution number at epoch) must be digits, got {rev_text!r}"
        )
    rev = int(rev_text) if rev_text.strip() else 0

    checks: list[tuple[int, int, str, bool, str]] = [
        (n2, 2, "columns 9-16: inclination", 0.0 <= inclination <= 180.0, "[0, 180] degrees"),
        (n2, 2, "columns 18-25: right ascension of node", 0.0 <= raan <= 360.0, "[0, 360]"),
        (n2, 2, "columns 35-42: argument of perigee", 0.0 <= argp <= 360.0, "[0, 360]"),
        (n2, 2, "columns 44-51: mean anomaly", 0.0 <= mean_anomaly <= 360.0, "[0, 360]"),
        (n2, 2, "columns 53-63: mean motion", mean_motion > 0.0, "> 0 rev/day"),
    ]
    values = (inclination, raan, argp, mean_anomaly, mean_motion)
    for (where_line, which, what, ok, expected), value in zip(checks, values, strict=True):
        if not ok:
            raise ctx.error(where_line, which, f"{what} must be {expected}, got {value}")

    try:
        return ElementSet(
            catalog_id=str(number1),
            name=name,
            epoch=epoch,
            mean_motion_rev_per_day=mean_motion,
            eccentricity=eccentricity,
            inclination_deg=inclination,
            raan_deg=raan,
            arg_of_pericenter_deg=argp,
            mean_anomaly_deg=mean_anomaly,
            bstar=bstar,
            mean_motion_dot=ndot,
            mean_motion_ddot=nddot,
            classification=classification,
            intl_designator=intl,
            element_set_no=element_set_no,
            rev_at_epoch=rev,
            ephemeris_type=ephemeris_type,
        )
    except ElementError as bad:
        raise ctx.error(n1, 1, bad.message) from None


def _looks_like_line(line: str, which: int) -> bool:
    return len(line) >= 2 and line[0] == str(which) and line[1] == " "


def parse_tle(text: str, source: str = "<text>") -> list[ElementSet]:
    """Element sets from TLE text: two-line records, three-line records, or a mix.

    A line is a TLE line 1 when it starts ``1 `` and either is at least 60 characters long or
    the next line starts ``2 ``; any other line is a name line and must be followed by lines 1
    and 2. A name line's leading ``0 `` (the 3LE convention) is dropped. Blank lines between
    records and trailing blanks or CR are ignored.
    Raises :class:`ElementError` for the first record that fails validation.
    """
    lines = [line.rstrip(" \t\r\n") for line in text.split("\n")]
    for line_index, line in enumerate(lines):
        for column, char in enumerate(line, start=1):
            if not " " <= char <= "~":
                raise ElementError(
                    f"{source} line {line_index + 1} column {column} holds {char!r} "
                    f"(U+{ord(char):04X}); TLE text is printable ASCII only",
                    source=source,
                    line_number=line_index + 1,
                )
    records: list[ElementSet] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        record_index = len(records)
        name = ""
        start = index
        looks_like_line1 = _looks_like_line(line, 1) and (
            len(line) >= 60 or (index + 1 < len(lines) and _looks_like_line(lines[index + 1], 2))
        )
        if not looks_like_line1:
            name = line.strip()
            if name.startswith("0 "):
                name = name[2:].strip()
            start = index + 1
            for offset, which in ((0, 1), (1, 2)):
                position = start + offset
                got = lines[position] if position < len(lines) else None
                if got is None or not _looks_like_line(got, which):
                    shown = (
                        "the end of the text"
                        if got is None or not any(rest.strip() for rest in lines[position:])
                        else "a blank line"
                        if not got.strip()
                        else repr(got[:20])
                    )
                    raise ElementError(
                        f"{source} line {position + 1}: expected line {which} of {name!r} "
                        f"(starting '{which} ') after the name line on line {index + 1}, got "
                        f"{shown}",
                        source=source,
                        record_index=record_index,
                        line_number=position + 1,
                    )
        if start + 1 >= len(lines):
            raise ElementError(
                f"{source} line {start + 1}: line 1 of "
                f"{repr(name) if name else 'the element set'} ends the text; expected its "
                "line 2 (starting '2 ') after it",
                source=source,
                record_index=record_index,
                line_number=start + 1,
            )
        records.append(
            _parse_tle_pair(
                lines[start],
                lines[start + 1],
                name,
                source=source,
                record_index=record_index,
                line_number=start + 1,
            )
        )
        index = start + 2
    return records


def parse_tle_lines(line1: str, line2: str, name: str = "") -> ElementSet:
    """One element set from its two TLE lines (and optional name)."""
    return _parse_tle_pair(
        line1.rstrip(" \r\n"),
        line2.rstrip(" \r\n"),
        name.strip(),
        source="",
        record_index=0,
        line_number=1,
    )


# --------------------------------------------------------------------------------------------
# OMM parsing


def _parse_omm_epoch(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ElementError(
            f"{where}: EPOCH must be text such as 2024-05-09T08:48:19.938816, got {value!r}"
        )
    match = _OMM_EPOCH_RE.fullmatch(value.strip())
    if match is None:
        raise ElementError(
            f"{where}: EPOCH must look like 2024-05-09T08:48:19.938816 (fraction and Z "
            f"optional; 2024-130T… day-of-year also accepted), got {value!r}"
        )
    year, month, day, doy, hour, minute, second, fraction, _zone = match.groups()
    try:
        if doy is not None:
            base = datetime(int(year), 1, 1, tzinfo=UTC) + timedelta(days=int(doy) - 1)
            if base.year != int(year) or int(doy) < 1:
                raise ValueError(f"day of year {doy}")
        else:
            base = datetime(int(year), int(month), int(day), tzinfo=UTC)
        if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
            raise ValueError(f"time {hour}:{minute}:{second}")
    except ValueError as bad:
        raise ElementError(f"{where}: EPOCH {value!r} is not a valid UTC instant ({bad})") from None
    us = 0
    if fraction:
        numerator = int(fraction) * 1_000_000
        denominator = 10 ** len(fraction)
        us = (2 * numerator + denominator) // (2 * denominator)
    return base + timedelta(
        hours=int(hour), minutes=int(minute), seconds=int(second), microseconds=us
    )


def _omm_number(fields: Mapping[str, object], key: str, where: str, default: float | None) -> float:
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise ElementError(f"{where}: required field {key} is missing")
        return default
    if isinstance(value, bool):
        raise ElementError(f"{where}: {key} must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise ElementError(f"{where}: {key} must be a number such as 15.51043222, got {value!r}")
    return finite_number(f"{where}: {key}", number, error=ElementError)


def _omm_integer(fields: Mapping[str, object], key: str, where: str, default: int) -> int:
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ElementError(f"{where}: {key} must be a whole number, got {value!r}")
    if number < 0:
        raise ElementError(f"{where}: {key} must not be negative, got {number}")
    return number


def parse_omm_fields(fields: Mapping[str, object], where: str = "OMM record") -> ElementSet:
    """One element set from OMM keyword/value pairs (any flavour; keys are case-insensitive).

    Required: ``NORAD_CAT_ID``, ``EPOCH``, the six mean elements and ``BSTAR``. Optional
    (with defaults): ``OBJECT_NAME`` (""), ``OBJECT_ID`` (""), ``CLASSIFICATION_TYPE`` (U),
    ``EPHEMERIS_TYPE``, ``ELEMENT_SET_NO``, ``REV_AT_EPOCH``, ``MEAN_MOTION_DOT``,
    ``MEAN_MOTION_DDOT`` (0). When present, ``CENTER_NAME`` must be EARTH, ``REF_FRAME`` TEME,
    ``TIME_SYSTEM`` UTC and ``MEAN_ELEMENT_THEORY`` SGP4.
    """
    upper = {str(key).strip().upper(): value for key, value in fields.items()}
    missing = [key for key in OMM_REQUIRED_KEYS if upper.get(key) in (None, "")]
    if missing:
        raise ElementError(
            f"{where}: required OMM field(s) {', '.join(missing)} missing; expected at least "
            f"{', '.join(OMM_REQUIRED_KEYS)}"
        )
    for key, wanted in (
        ("CENTER_NAME", ("EARTH",)),
        ("REF_FRAME", ("TEME",)),
        ("TIME_SYSTEM", ("UTC",)),
        ("MEAN_ELEMENT_THEORY", ("SGP4", "SGP/SGP4")),
    ):
        value = upper.get(key)
        if value not in (None, "") and str(value).strip().upper() not in wanted:
            raise ElementError(
                f"{where}: {key} must be {' or '.join(wanted)} for SGP4 mean elements, got "
                f"{value!r}"
            )
    raw_id = upper["NORAD_CAT_ID"]
    if isinstance(raw_id, float) and raw_id.is_integer():
        raw_id = int(raw_id)
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        raise ElementError(f"{where}: NORAD_CAT_ID must be a catalog number, got {raw_id!r}")
    try:
        catalog_id = canonical_catalog_id(raw_id)
    except InvalidArgument as bad:
        raise ElementError(f"{where}: NORAD_CAT_ID: {bad.message}") from None
    name_value = upper.get("OBJECT_NAME")
    name = "" if name_value is None else str(name_value).strip()
    where = f"{where} ({name or catalog_id})"
    object_id_value = upper.get("OBJECT_ID")
    object_id = "" if object_id_value is None else str(object_id_value).strip().upper()
    if object_id in ("UNKNOWN", "TBA", "TBD"):
        object_id = ""
    if object_id and not _OBJECT_ID_RE.fullmatch(object_id):
        raise ElementError(
            f"{where}: OBJECT_ID must look like 1998-067A (year-launch-piece) or be empty, got "
            f"{object_id_value!r}"
        )
    classification_value = upper.get("CLASSIFICATION_TYPE")
    classification = (
        "U" if classification_value in (None, "") else str(classification_value).strip()
    )
    epoch = _parse_omm_epoch(upper["EPOCH"], where)
    values = {key: _omm_number(upper, key, where, None) for key in OMM_REQUIRED_KEYS[2:]}
    try:
        return ElementSet(
            catalog_id=catalog_id,
            name=name,
            epoch=epoch,
            mean_motion_rev_per_day=values["MEAN_MOTION"],
            eccentricity=values["ECCENTRICITY"],
            inclination_deg=values["INCLINATION"],
            raan_deg=values["RA_OF_ASC_NODE"],
            arg_of_pericenter_deg=values["ARG_OF_PERICENTER"],
            mean_anomaly_deg=values["MEAN_ANOMALY"],
            bstar=values["BSTAR"],
            mean_motion_dot=_omm_number(upper, "MEAN_MOTION_DOT", where, 0.0),
            mean_motion_ddot=_omm_number(upper, "MEAN_MOTION_DDOT", where, 0.0),
            classification=classification,
            intl_designator=object_id,
            element_set_no=_omm_integer(upper, "ELEMENT_SET_NO", where, 0),
            rev_at_epoch=_omm_integer(upper, "REV_AT_EPOCH", where, 0),
            ephemeris_type=_omm_integer(upper, "EPHEMERIS_TYPE", where, 0),
        )
    except ElementError as bad:
        raise ElementError(f"{where}: {bad.message}") from None


def _with_position(error: ElementError, source: str, index: int, line: int | None) -> ElementError:
    error.source = source
    error.record_index = index
    error.line_number = line
    return error


def parse_omm_json(text: str, source: str = "<text>") -> list[ElementSet]:
    """Element sets from OMM JSON: an array of objects (or one object), numbers or strings."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as bad:
        raise ElementError(
            f"{source}: expected OMM JSON (an array of objects), but the JSON is malformed at "
            f"line {bad.lineno} column {bad.colno}: {bad.msg}",
            source=source,
            line_number=bad.lineno,
        ) from None
    except RecursionError:
        raise ElementError(
            f"{source}: expected OMM JSON (an array of objects), but it nests too deeply",
            source=source,
        ) from None
    except ValueError as bad:  # a number of more digits than int() converts (4,300)
        raise ElementError(
            f"{source}: expected OMM JSON (an array of objects), but a value is not usable: "
            f"{str(bad)[:200]}",
            source=source,
        ) from None
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ElementError(
            f"{source}: expected a JSON array of OMM objects, got a {type(data).__name__}",
            source=source,
        )
    records: list[ElementSet] = []
    for index, item in enumerate(items):
        where = f"{source} record {index + 1}"
        if not isinstance(item, dict):
            raise ElementError(
                f"{where}: expected a JSON object of OMM fields, got {type(item).__name__}",
                source=source,
                record_index=index,
            )
        try:
            records.append(parse_omm_fields(item, where))
        except ElementError as bad:
            raise _with_position(bad, source, index, None) from None
    return records


def parse_omm_csv(text: str, source: str = "<text>") -> list[ElementSet]:
    """Element sets from OMM CSV with a header row (CelesTrak or Space-Track columns)."""
    # newline="": the csv module splits records itself (a lone CR is a line break, not an error).
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header: list[str] | None = None
    records: list[ElementSet] = []
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as bad:  # e.g. a quoted field longer than csv.field_size_limit()
            raise ElementError(
                f"{source} line {rows.line_num}: expected OMM CSV, got text the csv reader "
                f"rejects ({bad})",
                source=source,
                line_number=rows.line_num,
            ) from None
        line_number = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().upper() for cell in row]
            missing = [key for key in OMM_REQUIRED_KEYS if key not in header]
            if missing:
                raise ElementError(
                    f"{source} line {line_number}: the CSV header lacks required OMM column(s) "
                    f"{', '.join(missing)}; expected a header such as {','.join(OMM_KEYS)}",
                    source=source,
                    line_number=line_number,
                )
            continue
        index = len(records)
        where = f"{source} line {line_number}"
        if len(row) != len(header):
            raise ElementError(
                f"{where}: expected {len(header)} comma-separated values like the header, got "
                f"{len(row)}",
                source=source,
                record_index=index,
                line_number=line_number,
            )
        try:
            records.append(parse_omm_fields(dict(zip(header, row, strict=True)), where))
        except ElementError as bad:
            raise _with_position(bad, source, index, line_number) from None
    return records


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_omm_xml(text: str, source: str = "<text>") -> list[ElementSet]:
    """Element sets from CCSDS OMM XML (``<ndm><omm>…`` as CelesTrak serves, or one ``<omm>``).

    Document type declarations are refused (no entity expansion from untrusted input).
    """
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise ElementError(
            f"{source}: OMM XML must not contain a DOCTYPE or ENTITY declaration", source=source
        )
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - deferred: xml costs ~20 ms of every CLI start

    try:
        root = ET.fromstring(text.lstrip("\ufeff"))
    except ET.ParseError as bad:
        line = bad.position[0] if bad.position else None
        raise ElementError(
            f"{source}: expected OMM XML (<ndm><omm>…</omm></ndm>), but the XML is "
            f"malformed: {bad}",
            source=source,
            line_number=line,
        ) from None
    omms = (
        [root]
        if _local(root.tag) == "omm"
        else [element for element in root.iter() if _local(element.tag) == "omm"]
    )
    records: list[ElementSet] = []
    for index, omm in enumerate(omms):
        fields: dict[str, object] = {}
        for element in omm.iter():
            tag = _local(element.tag)
            if (
                tag in _OMM_META_KEYS
                or tag in _OMM_MEAN_KEYS
                or tag in _OMM_TLE_KEYS
                or tag in ("MEAN_ELEMENT_THEORY",)
            ):
                fields[tag] = (element.text or "").strip()
        try:
            records.append(parse_omm_fields(fields, f"{source} <omm> {index + 1}"))
        except ElementError as bad:
            raise _with_position(bad, source, index, None) from None
    return records


# --------------------------------------------------------------------------------------------
# format detection


def detect_format(text: str) -> ElementFormat:
    """Which format ``text`` is in, judged by its content.

    ``[`` or ``{`` → OMM JSON; ``<`` → OMM XML; a first line with OMM column names → OMM CSV;
    otherwise TLE (3LE when the first record has a name line).
    """
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise ElementError(
            "expected TLE/3LE lines or OMM JSON, CSV or XML, got empty text", line_number=1
        )
    first_line = stripped.split("\n", 1)[0].strip()
    if stripped[0] in "[{":
        return ElementFormat.OMM_JSON
    if stripped[0] == "<":
        return ElementFormat.OMM_XML
    if "CCSDS_OMM_VERS" in first_line.upper():
        raise ElementError(
            "OMM in KVN (key = value) text is not supported; send the same elements as OMM XML, "
            "JSON or CSV, or as TLE",
            line_number=1,
        )
    header = {cell.strip().strip('"').upper() for cell in first_line.split(",")}
    if "NORAD_CAT_ID" in header or "MEAN_MOTION" in header:
        return ElementFormat.OMM_CSV
    if _looks_like_line(first_line, 1):
        return ElementFormat.TLE
    return ElementFormat.THREE_LE


def parse_elements(text: str, source: str = "<text>") -> list[ElementSet]:
    """Element sets from text in any supported format (see :func:`detect_format`)."""
    try:
        kind = detect_format(text)
    except ElementError as bad:
        raise _with_position(bad, source, 0, bad.line_number) from None
    if kind is ElementFormat.OMM_JSON:
        return parse_omm_json(text, source)
    if kind is ElementFormat.OMM_XML:
        return parse_omm_xml(text, source)
    if kind is ElementFormat.OMM_CSV:
        return parse_omm_csv(text, source)
    return parse_tle(text, source)


# --------------------------------------------------------------------------------------------
# export


def _format_implied(value: float, what: str, catalog_id: str) -> str:
    """``value`` as a TLE implied-decimal field: sign, 5 mantissa digits, signed exponent."""
    sign = "-" if value < 0 else " "
    magnitude = abs(value)
    if magnitude == 0.0:
        return " 00000+0"
    mantissa_text, exponent_text = f"{magnitude:.4e}".split("e")
    digits = mantissa_text.replace(".", "")
    exponent = int(exponent_text) + 1
    if exponent > 9:
        raise InvalidArgument(
            f"element set of {catalog_id!r}: {what} = {value} is too large for a TLE (at most "
            "0.99999e+9); export it as OMM instead"
        )
    if exponent < -9:
        scaled = round(magnitude * 1e14)
        if scaled == 0:
            return " 00000+0"
        digits, exponent = f"{scaled:05d}", -9
    return f"{sign}{digits}{'-' if exponent < 0 else '+'}{abs(exponent)}"


def _format_ndot(value: float, catalog_id: str) -> str:
    text = f"{abs(value):.8f}"
    if not text.startswith("0."):
        raise InvalidArgument(
            f"element set of {catalog_id!r}: mean_motion_dot = {value} does not fit a TLE "
            "(|value| < 1 rev/day² with 8 decimals); export it as OMM instead"
        )
    negative = value < 0 and text != "0.00000000"
    return ("-" if negative else " ") + text[1:]


def _epoch_field(epoch: datetime, catalog_id: str) -> str:
    midnight = datetime(epoch.year, epoch.month, epoch.day, tzinfo=UTC)
    us_of_day = (epoch - midnight) // timedelta(microseconds=1)
    units = (2 * us_of_day + _US_PER_TLE_EPOCH_UNIT) // (2 * _US_PER_TLE_EPOCH_UNIT)
    rounded = midnight + timedelta(microseconds=units * _US_PER_TLE_EPOCH_UNIT)
    if not 1957 <= rounded.year <= 2056:
        raise InvalidArgument(
            f"element set of {catalog_id!r}: epoch year {rounded.year} cannot be written in a "
            "TLE (two-digit years cover 1957-2056); export it as OMM instead"
        )
    new_midnight = datetime(rounded.year, rounded.month, rounded.day, tzinfo=UTC)
    units = ((rounded - new_midnight) // timedelta(microseconds=1)) // _US_PER_TLE_EPOCH_UNIT
    day_of_year = rounded.timetuple().tm_yday
    return f"{rounded.year % 100:02d}{day_of_year:03d}.{units:08d}"


def _with_checksum(body: str) -> str:
    assert len(body) == 68, body
    return body + str(_checksum(body))


def to_tle_lines(elements: ElementSet) -> tuple[str, str]:
    """The two TLE lines of ``elements`` (Alpha-5 for catalog numbers 100000 … 339999).

    Values are rounded to the format's precision (angles 1e-4°, eccentricity 1e-7, mean motion
    1e-8 rev/day, epoch 1e-8 day, B* and ddot to 5 significant digits); the revolution number
    is written modulo 100000 and the element set number modulo 10000, as the columns wrap.
    Raises :class:`InvalidArgument` for what a TLE cannot express (ids beyond 339999 or
    synthetic ids, epochs outside 1957-2056, out-of-range drag terms).
    """
    cid = elements.catalog_id
    number = catalog_number(cid)
    if number is None:
        raise InvalidArgument(
            f"catalog id {cid!r} is not a catalog number, so it cannot be written in a TLE; "
            "export it as OMM (JSON, CSV or XML), which keeps any id"
        )
    satnum = number_to_alpha5(number)
    intl = ""
    if elements.intl_designator:
        match = _OBJECT_ID_RE.fullmatch(elements.intl_designator)
        assert match is not None
        year, launch, piece = match.groups()
        if not 1957 <= int(year) <= 2056:
            raise InvalidArgument(
                f"element set of {cid!r}: launch year {year} cannot be written in a TLE "
                "(two-digit years cover 1957-2056)"
            )
        intl = f"{int(year) % 100:02d}{launch}{piece}"
    ecc_units = round(elements.eccentricity * 1e7)
    if ecc_units >= 10_000_000:
        raise InvalidArgument(
            f"element set of {cid!r}: eccentricity {elements.eccentricity} rounds to 1.0 in the "
            "TLE's 7 digits; export it as OMM instead"
        )
    mean_motion = f"{elements.mean_motion_rev_per_day:11.8f}"
    if len(mean_motion) != 11:
        raise InvalidArgument(
            f"element set of {cid!r}: mean motion {elements.mean_motion_rev_per_day} rev/day "
            "does not fit the TLE's 11 columns (below 100 rev/day)"
        )
    line1 = (
        f"1 {satnum}{elements.classification} {intl:<8s} {_epoch_field(elements.epoch, cid)} "
        f"{_format_ndot(elements.mean_motion_dot, cid)} "
        f"{_format_implied(elements.mean_motion_ddot, 'mean_motion_ddot', cid)} "
        f"{_format_implied(elements.bstar, 'bstar', cid)} "
        f"{elements.ephemeris_type % 10:d} {elements.element_set_no % 10_000:4d}"
    )
    line2 = (
        f"2 {satnum} {elements.inclination_deg:8.4f} {elements.raan_deg:8.4f} {ecc_units:07d} "
        f"{elements.arg_of_pericenter_deg:8.4f} {elements.mean_anomaly_deg:8.4f} "
        f"{mean_motion}{elements.rev_at_epoch % 100_000:5d}"
    )
    return _with_checksum(line1), _with_checksum(line2)


def format_tle(element_sets: Iterable[ElementSet], *, names: bool = True) -> str:
    """TLE text: 3LE (a name line before each pair) when ``names``, else 2LE.

    An element set without a name gets no name line (the parser reads such mixes).
    """
    out: list[str] = []
    for elements in element_sets:
        if names and elements.name:
            if not elements.name.isascii():
                raise InvalidArgument(
                    f"element set of {elements.catalog_id!r}: name {elements.name!r} is not "
                    "ASCII, which TLE text must be; export as OMM or without names"
                )
            out.append(elements.name)
        out.extend(to_tle_lines(elements))
    return "".join(line + "\n" for line in out)


def _format_epoch(epoch: datetime) -> str:
    return epoch.strftime("%Y-%m-%dT%H:%M:%S.%f")


def to_omm_fields(elements: ElementSet) -> dict[str, str | int | float]:
    """The OMM keyword/value pairs of ``elements`` in CelesTrak's order (exact, no rounding)."""
    number = catalog_number(elements.catalog_id)
    return {
        "OBJECT_NAME": elements.name,
        "OBJECT_ID": elements.intl_designator,
        "EPOCH": _format_epoch(elements.epoch),
        "MEAN_MOTION": elements.mean_motion_rev_per_day,
        "ECCENTRICITY": elements.eccentricity,
        "INCLINATION": elements.inclination_deg,
        "RA_OF_ASC_NODE": elements.raan_deg,
        "ARG_OF_PERICENTER": elements.arg_of_pericenter_deg,
        "MEAN_ANOMALY": elements.mean_anomaly_deg,
        "EPHEMERIS_TYPE": elements.ephemeris_type,
        "CLASSIFICATION_TYPE": elements.classification,
        "NORAD_CAT_ID": number if number is not None else elements.catalog_id,
        "ELEMENT_SET_NO": elements.element_set_no,
        "REV_AT_EPOCH": elements.rev_at_epoch,
        "BSTAR": elements.bstar,
        "MEAN_MOTION_DOT": elements.mean_motion_dot,
        "MEAN_MOTION_DDOT": elements.mean_motion_ddot,
    }


def format_omm_json(element_sets: Iterable[ElementSet]) -> str:
    """OMM JSON (an array of objects, numbers as numbers, as CelesTrak serves)."""
    return json.dumps([to_omm_fields(e) for e in element_sets], ensure_ascii=False)


def _text(value: str | int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def format_omm_csv(element_sets: Iterable[ElementSet]) -> str:
    """OMM CSV with CelesTrak's header; floats are written in full (shortest exact form)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(OMM_KEYS)
    for elements in element_sets:
        fields = to_omm_fields(elements)
        writer.writerow([_text(fields[key]) for key in OMM_KEYS])
    return buffer.getvalue()


def format_omm_xml(element_sets: Iterable[ElementSet]) -> str:
    """CCSDS OMM XML (NDM 2.0 layout as CelesTrak serves it)."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - deferred: xml costs ~20 ms of every CLI start

    root = ET.Element("ndm")
    for elements in element_sets:
        fields = to_omm_fields(elements)
        omm = ET.SubElement(root, "omm", {"id": "CCSDS_OMM_VERS", "version": "2.0"})
        ET.SubElement(omm, "header")
        segment = ET.SubElement(ET.SubElement(omm, "body"), "segment")
        metadata = ET.SubElement(segment, "metadata")
        meta_values = {
            "OBJECT_NAME": fields["OBJECT_NAME"],
            "OBJECT_ID": fields["OBJECT_ID"],
            "CENTER_NAME": "EARTH",
            "REF_FRAME": "TEME",
            "TIME_SYSTEM": "UTC",
            "MEAN_ELEMENT_THEORY": "SGP4",
        }
        for key, value in meta_values.items():
            ET.SubElement(metadata, key).text = _text(value)
        data = ET.SubElement(segment, "data")
        mean = ET.SubElement(data, "meanElements")
        for key in _OMM_MEAN_KEYS:
            ET.SubElement(mean, key).text = _text(fields[key])
        tle = ET.SubElement(data, "tleParameters")
        for key in _OMM_TLE_KEYS:
            ET.SubElement(tle, key).text = _text(fields[key])
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def format_elements(element_sets: Sequence[ElementSet], fmt: ElementFormat) -> str:
    """``element_sets`` written in ``fmt``."""
    if fmt is ElementFormat.TLE:
        return format_tle(element_sets, names=False)
    if fmt is ElementFormat.THREE_LE:
        return format_tle(element_sets, names=True)
    if fmt is ElementFormat.OMM_JSON:
        return format_omm_json(element_sets)
    if fmt is ElementFormat.OMM_CSV:
        return format_omm_csv(element_sets)
    return format_omm_xml(element_sets)
