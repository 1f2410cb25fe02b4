"""Instants on the wire: ``google.protobuf.Timestamp`` ↔ aware UTC ``datetime``.

Every contract carries time as a protobuf Timestamp; every service works with aware UTC
datetimes. These are the only conversions, so naive datetimes and unset fields are handled the
same way everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.kernel.errors import InvalidArgument


def to_timestamp(value: datetime) -> Timestamp:
    """The Timestamp of an aware datetime (a naive one is read as UTC)."""
    stamp = Timestamp()
    stamp.FromDatetime(value if value.tzinfo is None else value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp, name: str = "timestamp") -> datetime:
    """The aware UTC datetime of a Timestamp (microsecond resolution).

    A Timestamp outside the years 1–9999 (or with nanos outside one second) is INVALID_ARGUMENT
    naming the field, not a crash.
    """
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"expected {name} to be a valid UTC timestamp (seconds from 0001-01-01T00:00:00Z "
            "to 9999-12-31T23:59:59Z, nanos 0 to 999,999,999), got "
            f"seconds={stamp.seconds} nanos={stamp.nanos}"
        ) from None


def required_timestamp(stamp: Timestamp, name: str) -> datetime:
    """Like :func:`from_timestamp`, but an unset field is INVALID_ARGUMENT naming ``name``."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        raise InvalidArgument(f"{name} is required: expected a UTC timestamp, got none")
    return from_timestamp(stamp, name)
