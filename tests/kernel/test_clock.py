"""The injected clock: simulated time advances at its speed factor from its start epoch."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from groundplane.kernel.clock import ClockSpec, SimulatedClock, format_utc, parse_utc

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


def test_clock_spec_text_round_trips_and_defines_time_by_wall_clock() -> None:
    """A spec's text parses back to the same spec; its time is start + (wall − anchor)·speed."""
    spec = ClockSpec(START, 60.0, 1_796_227_200.125)
    assert ClockSpec.parse(str(spec)) == spec
    assert spec.at_wall(1_796_227_200.125) == START
    assert spec.at_wall(1_796_227_210.125) == START + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("start=2026-08-15T12:00:00Z,speed=60", "lacks anchor"),
        ("start=2026-08-15T12:00:00Z,speed=60,anchor=1,speed=2", "each once"),
        ("start=2026-08-15T12:00:00Z,speed=fast,anchor=1", "must be numbers"),
        ("start=2026-08-15T12:00:00Z,speed=0,anchor=1", "positive"),
        ("start=yesterday,speed=1,anchor=1", "ISO-8601"),
        ("2026-08-15T12:00:00Z@60", "expected a clock spec"),
    ],
)
def test_clock_spec_rejects_malformed_text(text: str, message: str) -> None:
    """Every malformed spec is refused with a message saying what was expected."""
    with pytest.raises(ValueError, match=message):
        ClockSpec.parse(text)


def test_clock_from_spec_stands_where_the_wall_clock_says_and_runs_at_speed() -> None:
    """A process joining a spec starts at the instant of its wall time, then runs at speed."""
    mono = ManualMonotonic()
    spec = ClockSpec(START, 60.0, 1_000.0)
    clock = spec.clock(wall=lambda: 1_010.0, monotonic=mono)
    assert clock.now() == START + timedelta(minutes=10)
    mono.value += 1.0
    assert clock.now() == START + timedelta(minutes=11)


_PROBE = """
import sys, time
from groundplane.kernel.clock import ClockSpec
spec = ClockSpec.parse(sys.argv[1])
clock = spec.clock()
offsets = []
for _ in range(200):
    before = time.time()
    now = clock.now()
    after = time.time()
    # How far this process's clock stands from the shared definition, in simulated seconds.
    offsets.append(((now - spec.at_wall((before + after) / 2)).total_seconds(), after - before))
offset = min(offsets, key=lambda pair: pair[1])[0]
print(offset)
"""


def test_two_processes_given_one_spec_agree_within_ten_milliseconds() -> None:
    """Two processes handed the same spec at different moments read one simulated time (±10 ms).

    Each process measures its clock against the spec's definition with the narrowest of many
    wall-clock brackets, so the comparison does not depend on how busy the machine is.
    """
    spec = ClockSpec.starting_now(START, 60.0)
    offsets = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, str(spec)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        offsets.append(float(result.stdout))
    assert abs(offsets[0] - offsets[1]) < 0.010, offsets
