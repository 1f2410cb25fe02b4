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

    A Timestamp outside the years 1–9999 is INVALID_ARGUMENT naming the field, not a crash.
    """
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{name} must be a UTC instant between years 1 and 9999, got "
            f"{stamp.seconds} s + {stamp.nanos} ns since 1970"
        ) from None


def required_timestamp(stamp: Timestamp, name: str) -> datetime:
    """Like :func:`from_timestamp`, but an unset field is INVALID_ARGUMENT naming ``name``."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        raise InvalidArgument(f"{name} is required: expected a UTC timestamp, got none")
    return from_timestamp(stamp, name)
