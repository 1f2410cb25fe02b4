"""The injected clock: simulated time advances at its speed factor from its start epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from groundplane.kernel.clock import SimulatedClock, format_utc, parse_utc

START = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)


class ManualMonotonic:
    """A monotonic source the test steps by hand."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def test_simulated_clock_runs_at_speed_from_start() -> None:
    """Ten wall seconds at speed 60 are ten simulated minutes after the start epoch."""
    mono = ManualMonotonic()
    clock = SimulatedClock(START, speed=60.0, monotonic=mono)
    assert clock.now() == START
    mono.value += 10.0
    assert clock.now() == START + timedelta(minutes=10)
    assert clock.wall_seconds(600.0) == pytest.approx(10.0)


def test_simulated_clock_rejects_naive_start_and_bad_speed() -> None:
    """A naive start or a non-positive speed is refused with a message naming the problem."""
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2026, 8, 15), speed=1.0)
    with pytest.raises(ValueError, match="positive"):
        SimulatedClock(START, speed=0.0)


async def test_simulated_sleep_takes_wall_time_divided_by_speed() -> None:
    """Sleeping 2 simulated seconds at speed 100 takes about 20 ms of wall time."""
    import time

    clock = SimulatedClock(START, speed=100.0)
    began = time.monotonic()
    await clock.sleep(2.0)
    elapsed = time.monotonic() - began
    assert 0.015 <= elapsed < 0.5


def test_parse_and_format_utc_round_trip() -> None:
    """ISO-8601 with Z, offsets or no zone all parse to aware UTC; formatting uses Z."""
    assert parse_utc("2026-08-15T12:00:00Z") == START
    assert parse_utc("2026-08-15T14:00:00+02:00") == START
    assert parse_utc("2026-08-15T12:00:00") == START
    assert format_utc(START + timedelta(milliseconds=250)) == "2026-08-15T12:00:00.250Z"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_utc("yesterday")
