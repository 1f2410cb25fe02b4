"""The space-link model: pure, no I/O, every time an explicit argument.

Times are seconds on one simulated time line (the emulator uses seconds since its start epoch).
A :class:`Link` is fed geometry samples (:meth:`Link.update`) and messages (:meth:`Link.send`):

* it is **up** while the geometry says so (the satellite above the station's mask, or two
  satellites in line of sight) and at least ``handover_outage_s`` has passed since it came up;
* a message sent while it is not up is dropped (``dropped_link_down``);
* otherwise it waits for the previous message of the same direction to finish transmitting
  (FIFO per direction), occupies the link for ``size_bytes × 8 / rate_bps`` seconds, then
  propagates for ``range_km / c`` (range at the start of transmission) plus
  ``processing_delay_s``: ``arrival_s = tx_end_s + range_km / c + processing_delay_s``;
* it is lost with probability ``loss_rate`` (seeded RNG), still occupying the transmitter;
* when the link goes down at ``t``, every message that would arrive after ``t`` is dropped
  (``dropped_in_flight``) and the transmit queues empty.

Inter-satellite links use :func:`isl_geometry`: range is the distance between the satellites, and
they see each other while the segment between them clears the Earth's radius plus 80 km.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import Enum

from groundplane.kernel.errors import InvalidArgument, NotFound

SPEED_OF_LIGHT_KM_S = 299_792.458
EARTH_RADIUS_KM = 6378.137
"""WGS84 equatorial radius; the line-of-sight test treats the Earth as this sphere."""
ISL_GRAZING_ALTITUDE_KM = 80.0
"""An inter-satellite ray must stay this far above the Earth's surface (atmosphere)."""

Vector3 = tuple[float, float, float]


class Direction(Enum):
    """Which way a message crosses a link; each direction has its own transmit queue."""

    UPLINK = "uplink"  # ground → satellite
    DOWNLINK = "downlink"  # satellite → ground
    FORWARD = "forward"  # inter-satellite: first id → second id (sorted)
    REVERSE = "reverse"  # inter-satellite: second id → first id


class Fate(Enum):
    """What became of a message."""

    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DROPPED_LOSS = "dropped_loss"
    DROPPED_LINK_DOWN = "dropped_link_down"
    DROPPED_IN_FLIGHT = "dropped_in_flight"
    DROPPED_EXPIRED = "dropped_expired"


@dataclass(frozen=True)
class LinkConfig:
    """How a link behaves; ``rate_bps = inf`` means no serialisation delay."""

    rate_bps: float = math.inf
    processing_delay_s: float = 0.0
    loss_rate: float = 0.0
    handover_outage_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate_bps > 0:
            raise InvalidArgument(f"rate_bps must be > 0 (inf for unlimited), got {self.rate_bps}")
        if not (math.isfinite(self.processing_delay_s) and self.processing_delay_s >= 0):
            raise InvalidArgument(
                f"processing_delay_s must be a finite number >= 0, got {self.processing_delay_s}"
            )
        if not 0.0 <= self.loss_rate <= 1.0:
            raise InvalidArgument(f"loss_rate must be within [0, 1], got {self.loss_rate}")
        if not (math.isfinite(self.handover_outage_s) and self.handover_outage_s >= 0):
            raise InvalidArgument(
                f"handover_outage_s must be a finite number >= 0, got {self.handover_outage_s}"
            )


@dataclass(frozen=True)
class LinkGeometry:
    """One geometry sample: is the far end in view, and how far is it."""

    up: bool
    range_km: float
    elevation_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.range_km) and self.range_km >= 0):
            raise InvalidArgument(f"range_km must be a finite number >= 0, got {self.range_km}")


def line_of_sight(
    a_km: Vector3,
    b_km: Vector3,
    clearance_km: float = EARTH_RADIUS_KM + ISL_GRAZING_ALTITUDE_KM,
) -> bool:
    """True when the segment a–b (Earth-centred positions) stays above ``clearance_km``."""
    ax, ay, az = a_km
    dx, dy, dz = b_km[0] - ax, b_km[1] - ay, b_km[2] - az
    length_sq = dx * dx + dy * dy + dz * dz
    # Parameter of the point of the segment closest to the Earth's centre, clamped to [0, 1].
    t = 0.0 if length_sq == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy + az * dz) / length_sq))
    closest = (ax + t * dx, ay + t * dy, az + t * dz)
    return math.hypot(*closest) > clearance_km


def isl_geometry(a_km: Vector3, b_km: Vector3) -> LinkGeometry:
    """Geometry of an inter-satellite link from the two Earth-centred positions."""
    return LinkGeometry(up=line_of_sight(a_km, b_km), range_km=math.dist(a_km, b_km))


@dataclass(frozen=True)
class Admission:
    """What :meth:`Link.send` decided for one message."""

    message_id: int
    fate: Fate
    """IN_FLIGHT (will arrive at ``arrival_s`` unless the link goes down) or a drop."""
    tx_start_s: float
    tx_end_s: float
    arrival_s: float


@dataclass
class Counters:
    """Traffic of one link, both directions summed."""

    sent_messages: int = 0
    sent_bytes: int = 0
    delivered_messages: int = 0
    delivered_bytes: int = 0
    dropped_loss: int = 0
    dropped_link_down: int = 0
    dropped_in_flight: int = 0
    dropped_expired: int = 0

    @property
    def dropped(self) -> int:
        return (
            self.dropped_loss
            + self.dropped_link_down
            + self.dropped_in_flight
            + (self.dropped_expired)
        )


@dataclass
class _InFlight:
    size_bytes: int
    arrival_s: float
    dropped: bool = False


@dataclass
class Link:
    """One space link's state machine (see the module docstring)."""

    link_id: str
    config: LinkConfig
    seed: int = 0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._geometry: LinkGeometry | None = None
        self._updated_s = -math.inf
        self._usable_from_s = math.inf
        self._tx_free_s: dict[Direction, float] = {}
        self._in_flight: dict[int, _InFlight] = {}
        self._next_id = 0

    # -- geometry --------------------------------------------------------------------------------

    @property
    def geometry(self) -> LinkGeometry | None:
        return self._geometry

    def update(self, at_s: float, geometry: LinkGeometry) -> list[int]:
        """Take a geometry sample at ``at_s``; return the ids of messages dropped in flight."""
        if at_s < self._updated_s:
            raise InvalidArgument(
                f"geometry samples must come in time order: got {at_s} s after {self._updated_s} s"
            )
        was_up = self._geometry is not None and self._geometry.up
        first = self._geometry is None
        self._geometry = geometry
        self._updated_s = at_s
        dropped: list[int] = []
        if geometry.up and not was_up:
            # A link already up when the model first hears of it has been acquired before.
            self._usable_from_s = at_s if first else at_s + self.config.handover_outage_s
        elif not geometry.up and was_up:
            self._usable_from_s = math.inf
            self._tx_free_s.clear()
            for message_id, flight in self._in_flight.items():
                if not flight.dropped and flight.arrival_s > at_s:
                    flight.dropped = True
                    self.counters.dropped_in_flight += 1
                    dropped.append(message_id)
        return dropped

    def is_up(self, at_s: float) -> bool:
        """Whether a message sent at ``at_s`` can cross (in view and past any outage)."""
        return self._geometry is not None and self._geometry.up and at_s >= self._usable_from_s

    def delay_s(self) -> float:
        """One-way delay of a zero-length message now: range / c + processing."""
        range_km = self._geometry.range_km if self._geometry is not None else 0.0
        return range_km / SPEED_OF_LIGHT_KM_S + self.config.processing_delay_s

    def serialisation_s(self, size_bytes: int) -> float:
        return 0.0 if math.isinf(self.config.rate_bps) else size_bytes * 8 / self.config.rate_bps

    # -- messages --------------------------------------------------------------------------------

    def send(self, at_s: float, direction: Direction, size_bytes: int) -> Admission:
        """Hand a message of ``size_bytes`` to the link at ``at_s``."""
        if size_bytes < 0:
            raise InvalidArgument(f"size_bytes must be >= 0, got {size_bytes}")
        if at_s < self._updated_s:
            raise InvalidArgument(
                f"a message sent at {at_s} s is older than the latest geometry "
                f"({self._updated_s} s)"
            )
        message_id = self._next_id
        self._next_id += 1
        self.counters.sent_messages += 1
        self.counters.sent_bytes += size_bytes
        if not self.is_up(at_s):
            self.counters.dropped_link_down += 1
            return Admission(message_id, Fate.DROPPED_LINK_DOWN, at_s, at_s, math.inf)
        tx_start_s = max(at_s, self._tx_free_s.get(direction, at_s))
        tx_end_s = tx_start_s + self.serialisation_s(size_bytes)
        self._tx_free_s[direction] = tx_end_s
        arrival_s = tx_end_s + self.delay_s()
        if self.config.loss_rate > 0 and self._rng.random() < self.config.loss_rate:
            self.counters.dropped_loss += 1
            return Admission(message_id, Fate.DROPPED_LOSS, tx_start_s, tx_end_s, arrival_s)
        self._in_flight[message_id] = _InFlight(size_bytes, arrival_s)
        return Admission(message_id, Fate.IN_FLIGHT, tx_start_s, tx_end_s, arrival_s)

    def complete(self, message_id: int, *, expired: bool = False) -> Fate:
        """The arrival instant of ``message_id`` has come: DELIVERED, or why it was dropped.

        ``expired`` marks a message whose MQTT expiry ran out on the way.
        """
        flight = self._in_flight.pop(message_id, None)
        if flight is None:
            raise NotFound(f"message {message_id} is not in flight on link {self.link_id!r}")
        if flight.dropped:
            return Fate.DROPPED_IN_FLIGHT
        if expired:
            self.counters.dropped_expired += 1
            return Fate.DROPPED_EXPIRED
        self.counters.delivered_messages += 1
        self.counters.delivered_bytes += flight.size_bytes
        return Fate.DELIVERED

    @property
    def in_flight(self) -> int:
        """Messages sent and neither delivered nor dropped yet."""
        return sum(1 for flight in self._in_flight.values() if not flight.dropped)
