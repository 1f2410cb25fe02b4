"""Injected time.

Domain code never reads the system clock. Components receive a :class:`Clock` and ask it for the
current simulated UTC instant (``now``) and for monotonic seconds for timeouts (``monotonic``).
A :class:`SimulatedClock` runs from a start epoch at a speed factor (simulated seconds per wall
second) and is shared by every service of one system so their notions of "now" agree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
        self._origin = monotonic()

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

    def wall_seconds(self, simulated_s: float) -> float:
        """How many wall-clock seconds a span of simulated time takes."""
        return simulated_s / self._speed

    async def sleep(self, simulated_s: float) -> None:
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
