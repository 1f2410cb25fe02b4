"""The pure link model: delay, serialisation, loss, outages and inter-satellite line of sight."""

from __future__ import annotations

import math

import pytest

from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.links.model import (
    EARTH_RADIUS_KM,
    SPEED_OF_LIGHT_KM_S,
    Direction,
    Fate,
    Link,
    LinkConfig,
    LinkGeometry,
    isl_geometry,
    line_of_sight,
)

ONE_NANOSECOND = 1e-9
UP_1000_KM = LinkGeometry(up=True, range_km=1000.0, elevation_deg=40.0)
DOWN = LinkGeometry(up=False, range_km=3000.0, elevation_deg=-5.0)


@pytest.mark.parametrize("range_km", [400.0, 1000.0, 2500.0, 35_786.0])
def test_arrival_is_range_over_c_plus_processing(range_km: float) -> None:
    """A zero-length message arrives range/c + processing after it was sent (no rate limit)."""
    link = Link("gs/sat", LinkConfig(processing_delay_s=0.015))
    link.update(10.0, LinkGeometry(up=True, range_km=range_km))
    admission = link.send(12.5, Direction.UPLINK, 0)
    assert admission.fate is Fate.IN_FLIGHT
    expected_s = 12.5 + range_km / SPEED_OF_LIGHT_KM_S + 0.015
    assert admission.arrival_s == pytest.approx(expected_s, abs=ONE_NANOSECOND)
    assert link.complete(admission.message_id) is Fate.DELIVERED
    assert link.counters.delivered_messages == 1


def test_serialisation_is_fifo_per_direction_at_the_rate() -> None:
    """Back-to-back messages queue: each starts when the previous one of its direction ended."""
    rate_bps = 1_000_000.0
    link = Link("gs/sat", LinkConfig(rate_bps=rate_bps))
    link.update(0.0, UP_1000_KM)
    sizes = [12_500, 25_000, 500]  # 0.1 s, 0.2 s, 0.004 s at 1 Mbit/s
    admissions = [link.send(1.0, Direction.UPLINK, size) for size in sizes]
    other_way = link.send(1.0, Direction.DOWNLINK, 12_500)
    propagation_s = 1000.0 / SPEED_OF_LIGHT_KM_S
    end_s = 1.0
    for size, admission in zip(sizes, admissions, strict=True):
        assert admission.tx_start_s == pytest.approx(end_s, abs=ONE_NANOSECOND)
        end_s += size * 8 / rate_bps
        assert admission.tx_end_s == pytest.approx(end_s, abs=ONE_NANOSECOND)
        assert admission.arrival_s == pytest.approx(end_s + propagation_s, abs=ONE_NANOSECOND)
    # The downlink has its own queue: it does not wait for the uplink.
    assert other_way.tx_start_s == pytest.approx(1.0, abs=ONE_NANOSECOND)
    # A message sent after the queue drained starts at once.
    late = link.send(5.0, Direction.UPLINK, 0)
    assert late.tx_start_s == 5.0


def test_link_below_threshold_delivers_nothing() -> None:
    """While the geometry says down, every message is dropped and counted as link-down."""
    link = Link("gs/sat", LinkConfig())
    link.update(0.0, DOWN)
    fates = [link.send(float(t), Direction.UPLINK, 100).fate for t in range(5)]
    assert fates == [Fate.DROPPED_LINK_DOWN] * 5
    assert link.counters.dropped_link_down == 5
    assert link.counters.delivered_messages == 0
    assert link.in_flight == 0


def test_link_setting_mid_flight_drops_and_counts() -> None:
    """A message still travelling when the link goes down is dropped; one already arrived is not."""
    link = Link("gs/sat", LinkConfig(processing_delay_s=1.0))
    link.update(0.0, UP_1000_KM)
    early = link.send(0.0, Direction.UPLINK, 10)  # arrives at ~1.003 s
    late = link.send(0.9, Direction.DOWNLINK, 10)  # arrives at ~1.903 s
    dropped = link.update(1.5, DOWN)
    assert dropped == [late.message_id]
    assert link.counters.dropped_in_flight == 1
    assert link.complete(early.message_id) is Fate.DELIVERED
    assert link.complete(late.message_id) is Fate.DROPPED_IN_FLIGHT
    assert link.counters.delivered_messages == 1
    with pytest.raises(NotFound):
        link.complete(late.message_id)


def test_handover_outage_after_the_link_comes_up() -> None:
    """After AOS the link stays unusable for the configured outage, then carries traffic."""
    link = Link("gs/sat", LinkConfig(handover_outage_s=2.0))
    link.update(0.0, DOWN)
    link.update(10.0, UP_1000_KM)
    assert link.send(11.0, Direction.UPLINK, 1).fate is Fate.DROPPED_LINK_DOWN
    assert not link.is_up(11.999)
    assert link.is_up(12.0)
    assert link.send(12.0, Direction.UPLINK, 1).fate is Fate.IN_FLIGHT


@pytest.mark.parametrize("loss_rate", [0.05, 0.3])
def test_loss_fraction_matches_configured_rate(loss_rate: float) -> None:
    """The lost fraction stays within 5 binomial standard deviations of the configured rate."""
    trials = 20_000
    link = Link("gs/sat", LinkConfig(loss_rate=loss_rate), seed=7)
    link.update(0.0, UP_1000_KM)
    lost = sum(link.send(0.0, Direction.UPLINK, 1).fate is Fate.DROPPED_LOSS for _ in range(trials))
    sigma = math.sqrt(trials * loss_rate * (1 - loss_rate))
    assert abs(lost - trials * loss_rate) < 5 * sigma
    assert link.counters.dropped_loss == lost


def test_same_seed_same_losses() -> None:
    """Loss decisions are reproducible from the seed."""

    def pattern(seed: int) -> list[Fate]:
        link = Link("gs/sat", LinkConfig(loss_rate=0.5), seed=seed)
        link.update(0.0, UP_1000_KM)
        return [link.send(0.0, Direction.UPLINK, 1).fate for _ in range(64)]

    assert pattern(3) == pattern(3)
    assert pattern(3) != pattern(4)


def test_isl_line_of_sight_clears_earth_plus_80_km() -> None:
    """Two satellites see each other only if the segment stays 80 km above the surface."""
    radius_km = EARTH_RADIUS_KM + 550.0
    # Half-angle at which the chord midpoint sits exactly at the grazing radius.
    grazing_km = EARTH_RADIUS_KM + 80.0
    half_angle = math.acos(grazing_km / radius_km)

    def pair(half: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return (
            (radius_km * math.cos(half), radius_km * math.sin(half), 0.0),
            (radius_km * math.cos(half), -radius_km * math.sin(half), 0.0),
        )

    assert line_of_sight(*pair(half_angle - 1e-4))
    assert not line_of_sight(*pair(half_angle + 1e-4))
    # Opposite sides of the Earth never see each other; the same position always does.
    a, _ = pair(0.3)
    assert not line_of_sight(a, (-a[0], -a[1], -a[2]))
    assert line_of_sight(a, a)
    geometry = isl_geometry(*pair(0.1))
    assert geometry.up
    assert geometry.range_km == pytest.approx(2 * radius_km * math.sin(0.1), rel=1e-12)


def test_bad_configuration_teaches() -> None:
    """Invalid settings raise InvalidArgument naming the field and the value received."""
    with pytest.raises(InvalidArgument, match=r"loss_rate must be within \[0, 1\], got 1.5"):
        LinkConfig(loss_rate=1.5)
    with pytest.raises(InvalidArgument, match="rate_bps must be > 0"):
        LinkConfig(rate_bps=0)
    link = Link("gs/sat", LinkConfig())
    link.update(5.0, UP_1000_KM)
    with pytest.raises(InvalidArgument, match="time order"):
        link.update(4.0, UP_1000_KM)
