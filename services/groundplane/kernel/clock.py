"""Injected time.

Domain code never reads the system clock. Components receive a :class:`Clock` and ask it for the
current simulated UTC instant (``now``) and for monotonic seconds for timeouts (``monotonic``).
A :class:`SimulatedClock` runs from a start epoch at a speed factor (simulated seconds per wall
second) and is shared by every service of one system so their notions of "now" agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where a component reads time from."""

    def now(self) -> datetime:
        """The current instant (UTC, timezone-aware) in this clock's time line."""
        ...

    def monotonic(self) -> float:
        """Wall-clock monotonic seconds, for timeouts and rate limits."""
        ...

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second (1.0 for real time)."""
        ...

    async def sleep(self, simulated_s: float) -> None:
        """Sleep for a span of this clock's time."""
        ...


class RealClock:
    """The system's UTC clock."""

    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, simulated_s: float) -> None:
        import asyncio  # noqa: PLC0415 - loaded already when awaited; `passes` never loads it

        await asyncio.sleep(max(0.0, simulated_s))


class SimulatedClock:
    """Simulated UTC that starts at ``start`` and advances ``speed`` times faster than the wall.

    ``monotonic`` is injectable so tests can step time by hand.
    """

    def __init__(
        self,
        start: datetime,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        origin_monotonic: float | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError(
                f"start must be timezone-aware UTC (e.g. 2026-08-15T00:00:00Z), got naive {start}"
            )
        if not speed > 0:
            raise ValueError(
                f"speed must be a positive factor of simulated per wall seconds, got {speed}"
            )
        self._start = start.astimezone(UTC)
        self._speed = float(speed)
        self._monotonic = monotonic
        # The monotonic reading at which simulated time stood at ``start`` (default: now).
        self._origin = monotonic() if origin_monotonic is None else origin_monotonic

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def start(self) -> datetime:
        return self._start

    def now(self) -> datetime:
        elapsed_wall_s = self._monotonic() - self._origin
        return self._start + timedelta(seconds=elapsed_wall_s * self._speed)

    def monotonic(self) -> float:
        return self._monotonic()

    def spec(self, wall: Callable[[], float] = time.time) -> ClockSpec:
        """This time line as a :class:`ClockSpec` other processes can join (anchored now)."""
        return ClockSpec(self.now(), self._speed, wall())

    def wall_seconds(self, simulated_s: float) -> float:
        """How many wall-clock seconds a span of simulated time takes."""
        return simulated_s / self._speed

    async def sleep(self, simulated_s: float) -> None:
        import asyncio  # noqa: PLC0415 - loaded already when awaited; `passes` never loads it

        await asyncio.sleep(max(0.0, simulated_s / self._speed))


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 instant into an aware UTC datetime.

    Accepts a trailing ``Z`` and naive values (read as UTC, the convention of every element
    format groundplane ingests).
    """
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 UTC time such as 2026-08-15T12:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Format an instant as ISO-8601 UTC with a ``Z`` and millisecond precision."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class ClockSpec:
    """One simulated time line that separate processes share.

    Simulated time is ``start + (wall − anchor) × speed``, where *wall* is Unix time (UTC
    seconds) and *anchor* the Unix time at which the simulation stood at *start*. Every process
    given the same spec computes the same simulated instant from its own wall clock, so two
    processes on one machine (or on machines whose clocks NTP keeps together) agree to within
    their wall clocks' disagreement. Within a process the clock then advances on the monotonic
    clock, so a wall-clock step does not make simulated time jump.

    Text form (a flag or the ``GROUNDPLANE_CLOCK`` variable)::

        start=2026-08-16T00:00:00Z,speed=60,anchor=1796227200.125
    """

    start: datetime
    speed: float
    anchor_unix_s: float

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError(
                f"clock start must be timezone-aware UTC (e.g. 2026-08-15T00:00:00Z), "
                f"got naive {self.start}"
            )
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(
                f"clock speed must be a positive factor of simulated per wall seconds, "
                f"got {self.speed}"
            )
        if not math.isfinite(self.anchor_unix_s):
            raise ValueError(f"clock anchor must be finite Unix seconds, got {self.anchor_unix_s}")

    @classmethod
    def starting_now(
        cls, start: datetime, speed: float, wall: Callable[[], float] = time.time
    ) -> ClockSpec:
        """A spec whose simulation stands at *start* at this wall instant."""
        return cls(start.astimezone(UTC), float(speed), wall())

    @classmethod
    def parse(cls, text: str) -> ClockSpec:
        """Read the text form; every field is required and named."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            if not sep or key not in {"start", "speed", "anchor"} or key in fields:
                raise ValueError(
                    "expected a clock spec 'start=ISO8601,speed=FACTOR,anchor=UNIX_SECONDS' "
                    f"(each once), got {text!r}"
                )
            fields[key] = value.strip()
        missing = {"start", "speed", "anchor"} - fields.keys()
        if missing:
            raise ValueError(f"clock spec {text!r} lacks {', '.join(sorted(missing))}")
        try:
            speed = float(fields["speed"])
            anchor = float(fields["anchor"])
        except ValueError:
            raise ValueError(f"clock spec speed and anchor must be numbers, got {text!r}") from None
        return cls(parse_utc(fields["start"]), speed, anchor)

    def __str__(self) -> str:
        start = self.start.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return f"start={start},speed={self.speed!r},anchor={self.anchor_unix_s!r}"

    def at_wall(self, wall_unix_s: float) -> datetime:
        """The simulated instant at a wall (Unix) time: the definition all processes share."""
        return self.start + timedelta(seconds=(wall_unix_s - self.anchor_unix_s) * self.speed)

    def clock(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SimulatedClock:
        """This process's clock on the shared time line.

        The wall clock is read between two monotonic readings, a few times, and the narrowest
        bracket is kept: a process preempted between the readings would otherwise start its
        time line late by the length of the preemption (times the speed).
        """
        best: tuple[float, float, float] | None = None  # (bracket width, wall, mid monotonic)
        for _ in range(_CLOCK_SAMPLES):
            before = monotonic()
            wall_now = wall()
            after = monotonic()
            if best is None or after - before < best[0]:
                best = (after - before, wall_now, (before + after) / 2)
        assert best is not None
        _, wall_now, mono_at_wall = best
        return SimulatedClock(
            self.at_wall(wall_now), self.speed, monotonic=monotonic, origin_monotonic=mono_at_wall
        )


#: Wall/monotonic reading pairs taken when a process joins a shared time line.
_CLOCK_SAMPLES = 5
