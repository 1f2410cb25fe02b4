"""Energy telemetry end to end: a shard's energy model → load reports → directory and /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from groundplane.kernel.metrics_http import MetricsServer
from groundplane.mqtt.broker import PrivateBroker
from groundplane.node.power import ShardPower, energy_metrics, shard_power
from groundplane.node.v1 import node_pb2
from groundplane.orbit.constellations import WalkerSpec, walker_delta
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction

from ..scrape import samples
from .conftest import EPOCH, FAST_MODEL, STATION
from .test_shard import MEMBERS, WAIT_S, running_shard, shard_broker

__all__ = ["shard_broker"]  # the fixture, imported for this module's tests


class _Energy(Collector):
    def __init__(self, power: ShardPower) -> None:
        self._power = power

    def collect(self) -> Iterator[Metric]:
        yield from energy_metrics("s0", self._power)


def _power() -> ShardPower:
    # Three satellites of one plane, a third of an orbit apart: one of them is in the shadow.
    sets = walker_delta(WalkerSpec(3, 1, 0, 550.0, 53.0), EPOCH - timedelta(hours=1))
    elements = {sat: replace(e, catalog_id=sat) for sat, e in zip(MEMBERS, sets, strict=True)}
    return shard_power(elements, MEMBERS, dict.fromkeys(MEMBERS, FAST_MODEL.name))


async def test_nodes_report_energy_to_the_directory_and_metrics(
    shard_broker: PrivateBroker,
) -> None:
    """With an energy model, every member's load report carries NodeEnergy: the directory holds
    it (state of charge within [0, 1], reserve and capacity from the constellation defaults,
    the sunlit fraction the orbit and the conical shadow give at the report's instant); a
    request's tokens show up as compute energy; and /metrics, scraped over HTTP and parsed by
    prometheus_client, has the same per-node state of charge and the number of nodes in eclipse.
    """
    power = _power()
    async with running_shard(shard_broker, power=power) as run:
        sat = "sat-a"
        outcome = await run.requester.infer(
            sat,
            STATION,
            node_pb2.InferRequest(model=FAST_MODEL.name, prompt="power me", max_tokens=8),
            request_id="req-energy",
            deadline=run.clock.now() + timedelta(seconds=30),
        )
        tokens = outcome.result.output_tokens
        views = {}
        for member in MEMBERS:
            views[member] = await run.directory.wait_for(
                member, lambda v: v.load is not None and v.load.HasField("energy"), WAIT_S
            )
        # The shard's model charges the request's tokens (J/token of the model's preset) at
        # its next tick.
        jpt = power.fleet.params[0].joules_per_token_for(FAST_MODEL.name)
        charged = await run.directory.wait_for(
            sat,
            lambda v: v.load is not None and v.load.energy.compute_wh > 0.0,
            WAIT_S,
        )
        assert charged.load is not None
        assert charged.load.energy.compute_wh * 3600.0 == pytest.approx(tokens * jpt)
        assert power.compute_wh[1] == 0.0
        lit = []
        for member, view in views.items():
            assert view.load is not None
            energy = view.load.energy
            assert 0.0 <= energy.soc <= 1.0
            assert energy.capacity_wh == 2000.0
            assert energy.reserve_wh == 600.0
            at = view.load.updated_at.ToDatetime().replace(tzinfo=EPOCH.tzinfo)
            batch = SatelliteBatch([member], [e.to_satrec() for e in [_element(member)]])
            jd, fr = utc_jd_fr(at)
            expected = sunlit_fraction(
                propagate(batch, jd, fr).r_teme_km, sun_position_teme_km(jd, fr)
            )
            assert abs(energy.sunlit_fraction - float(expected[0, 0])) < 0.05
            lit.append(energy.sunlit_fraction)
        assert min(lit) < 0.5 < max(lit)  # the phasing puts one node in the shadow
        registry = CollectorRegistry()
        registry.register(_Energy(power))
        async with MetricsServer(registry, host="127.0.0.1", port=0) as metrics:
            scraped = await samples(metrics.url)
        for member in MEMBERS:
            soc = scraped[
                (
                    "groundplane_node_battery_soc",
                    frozenset({("shard_id", "s0"), ("satellite_id", member)}),
                )
            ]
            load = views[member].load
            assert load is not None
            assert np.isclose(soc, load.energy.soc, atol=1e-3)
        in_eclipse = scraped[("groundplane_nodes_in_eclipse", frozenset({("shard_id", "s0")}))]
        assert in_eclipse == sum(1 for v in lit if v < 0.5)


def _element(member: str) -> ElementSet:
    sets = walker_delta(WalkerSpec(3, 1, 0, 550.0, 53.0), EPOCH - timedelta(hours=1))
    return replace(sets[MEMBERS.index(member)], catalog_id=member)


def test_a_long_tick_is_integrated_like_many_short_ones() -> None:
    """A fast simulated clock makes the shard's ticks hours apart: one 3-hour tick gives the same
    stored energy and battery draw (within 1 %) as 180 one-minute ticks over the same orbits."""
    one, many = _power(), _power()
    zeros = [0, 0, 0]
    one.tick(EPOCH, zeros, zeros)
    many.tick(EPOCH, zeros, zeros)
    for minute in range(1, 181):
        many.tick(EPOCH + timedelta(minutes=minute), zeros, zeros)
    one.tick(EPOCH + timedelta(hours=3), zeros, zeros)
    assert np.allclose(one.fleet.state.battery_wh, many.fleet.state.battery_wh, rtol=0.01)
    assert np.allclose(one.fleet.battery_drawn_wh, many.fleet.battery_drawn_wh, rtol=0.01)
    assert float(many.fleet.battery_drawn_wh.sum()) > 0.0
