"""The energy model of a nodes shard in simulated time: Sun, shadow, compute, telemetry.

:class:`ShardPower` holds one :class:`~groundplane.node.energy.EnergyFleet` for the shard's
members and their orbits (a :class:`~groundplane.orbit.geometry.SatelliteBatch`). Each
:meth:`ShardPower.tick` (the shard's load loop, once per ``load_interval_s``) is given the
simulated instant and each member's generated-token counter; it

1. propagates the members to that instant (one SGP4 call) and takes their sunlit fraction from
   the analytic Sun and the conical Earth shadow (``orbit/shadow.py``);
2. charges ``joules_per_token × tokens generated since the last tick`` as compute energy;
3. steps the fleet by the simulated seconds elapsed (:func:`~groundplane.node.energy.step`,
   exact bookkeeping);
4. every ``lookahead_refresh_s`` simulated seconds re-samples one orbit ahead
   (``lookahead_s`` at ``lookahead_step_s``) for the time to the next sunlight and eclipse.

:meth:`ShardPower.telemetry` is each member's ``NodeEnergy`` for its load report. The class
owns no clock: instants come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from groundplane.kernel.errors import InvalidArgument
from groundplane.node.energy import (
    SUNLIT_THRESHOLD,
    EnergyFleet,
    EnergyParams,
    FloatArray,
    eclipse_timing,
    params_for,
)
from groundplane.node.v1 import node_pb2
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import SatelliteBatch, offset_jd_fr, propagate, utc_jd_fr
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction

MAX_GAP_S = 6 * 3600.0
"""A longer gap between ticks (a paused process) is stepped as this much."""
SUBSTEP_S = 60.0
"""A tick longer than this (a fast simulated clock) is integrated in sub-steps of at most this,
each with the sunlit fraction at its middle, the tick's compute power spread evenly."""


@dataclass(frozen=True)
class PowerConfig:
    lookahead_s: float = 6600.0
    lookahead_step_s: float = 60.0
    lookahead_refresh_s: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.lookahead_step_s <= self.lookahead_s and self.lookahead_refresh_s > 0):
            raise InvalidArgument(
                "power look-ahead: expected 0 < lookahead_step_s ≤ lookahead_s and "
                f"lookahead_refresh_s > 0, got {self}"
            )


@dataclass(frozen=True)
class EnergySummary:
    """Totals over the shard's members since the start."""

    nodes: int
    battery_wh_drawn: float
    compute_battery_wh: float
    min_soc: float
    nodes_below_reserve: int
    served_in_eclipse: int
    thermal_throttle_s: float
    in_eclipse: int


class ShardPower:
    """Energy of a shard's members (see the module docstring)."""

    def __init__(
        self,
        batch: SatelliteBatch,
        params: Sequence[EnergyParams],
        models: Mapping[str, str],
        config: PowerConfig | None = None,
    ) -> None:
        self._batch = batch
        self.ids = tuple(batch.ids)
        self.fleet = EnergyFleet(self.ids, list(params))
        self._config = config or PowerConfig()
        self._jpt = np.array(
            [
                p.joules_per_token_for(models.get(sat, ""))
                for sat, p in zip(self.ids, params, strict=True)
            ]
        )
        self._tokens_per_s = np.array([p.tokens_per_s for p in params])
        self._tokens = np.zeros(len(self.ids))
        self._executed = np.zeros(len(self.ids))
        self._last: datetime | None = None
        self._lookahead_at: datetime | None = None
        self._sun_back_s = np.zeros(len(self.ids))
        self._dark_at_s = np.full(len(self.ids), np.inf)
        self._dark_for_s = np.zeros(len(self.ids))
        self.compute_battery_wh = np.zeros(len(self.ids))
        self.compute_wh = np.zeros(len(self.ids))
        """Compute energy charged per node since the start (tokens × J/token)."""

    def _sunlit_at(self, at: datetime, offsets_s: FloatArray) -> FloatArray:
        """Sunlit fraction ``(N, T)`` at ``at`` + ``offsets_s`` (one SGP4 call)."""
        jd0, fr0 = utc_jd_fr(at)
        jd, fr = offset_jd_fr(float(jd0[0]), float(fr0[0]), offsets_s)
        states = propagate(self._batch, jd, fr)
        lit = np.asarray(
            sunlit_fraction(states.r_teme_km, sun_position_teme_km(jd, fr)), dtype=np.float64
        )
        return np.nan_to_num(lit, nan=1.0)

    def _refresh_lookahead(self, at: datetime) -> None:
        c = self._config
        offsets = np.arange(0.0, c.lookahead_s + c.lookahead_step_s / 2, c.lookahead_step_s)
        lit = self._sunlit_at(at, offsets)
        self._sun_back_s, self._dark_at_s, self._dark_for_s = eclipse_timing(offsets, lit)
        self._lookahead_at = at

    def tick(
        self, at: datetime, tokens_total: Sequence[int], executed_total: Sequence[int]
    ) -> None:
        """Advance to simulated instant ``at`` given each member's counters (in ``ids`` order)."""
        tokens = np.asarray(tokens_total, dtype=np.float64)
        executed = np.asarray(executed_total, dtype=np.float64)
        if self._last is None:
            # The counters' baseline stays 0 (engines count from their start), so work done
            # before this first tick is charged at the next one.
            self.fleet.sunlit_fraction = self._sunlit_at(at, np.zeros(1))[:, 0]
            self._last = at
            self._refresh_lookahead(at)
            return
        dt_s = min(max((at - self._last).total_seconds(), 0.0), MAX_GAP_S)
        new_tokens = np.maximum(tokens - self._tokens, 0.0)
        new_executed = np.maximum(executed - self._executed, 0.0)
        self._tokens, self._executed, self._last = tokens, executed, at
        if dt_s <= 0.0:
            return
        compute_w = new_tokens * self._jpt / dt_s
        self.compute_wh = self.compute_wh + new_tokens * self._jpt / 3600.0
        steps = max(1, int(np.ceil(dt_s / SUBSTEP_S)))
        sub_s = dt_s / steps
        # The sub-steps end at ``at``: their middles lie (steps - k - 0.5) x sub_s before it.
        middles = -(np.arange(steps, 0, -1, dtype=np.float64) - 0.5) * sub_s
        sunlit_by_step = self._sunlit_at(at, middles)
        # Executions of the tick count as in eclipse by the tick's dark share.
        dark_share = np.mean(sunlit_by_step < SUNLIT_THRESHOLD, axis=1)
        for k in range(steps):
            sunlit = sunlit_by_step[:, k]
            bus_deficit_wh = np.maximum(
                self.fleet.fleet.bus_w - self.fleet.fleet.solar_array_w * sunlit, 0.0
            ) * (sub_s / 3600.0)
            ledger = self.fleet.advance(sub_s, sunlit, compute_w)
            deficit_wh = np.maximum(ledger.demand_wh - ledger.generated_wh, 0.0)
            positive = deficit_wh > 0
            share = np.where(
                positive, (deficit_wh - bus_deficit_wh) / np.where(positive, deficit_wh, 1.0), 0.0
            )
            self.compute_battery_wh = self.compute_battery_wh + ledger.battery_drawn_wh * share
        self.fleet.sunlit_fraction = self._sunlit_at(at, np.zeros(1))[:, 0]
        self.fleet.served_in_eclipse = self.fleet.served_in_eclipse + new_executed * dark_share
        assert self._lookahead_at is not None
        if (at - self._lookahead_at).total_seconds() >= self._config.lookahead_refresh_s:
            self._refresh_lookahead(at)

    def telemetry(self, at: datetime) -> list[node_pb2.NodeEnergy]:
        """Each member's ``NodeEnergy`` (in ``ids`` order) at ``at`` (the last tick's instant)."""
        fleet = self.fleet
        p = fleet.fleet
        aged = (at - self._lookahead_at).total_seconds() if self._lookahead_at else 0.0
        sun_back = np.maximum(self._sun_back_s - aged, 0.0)
        dark_at = np.maximum(self._dark_at_s - aged, 0.0)
        in_eclipse = fleet.in_eclipse()
        sunlight_in = np.where(in_eclipse, np.maximum(sun_back, 1.0), 0.0)
        eclipse_in = np.where(in_eclipse, 0.0, dark_at)
        throttled = fleet.throttled()
        soc = fleet.soc()
        request_w = self._jpt * self._tokens_per_s
        out: list[node_pb2.NodeEnergy] = []
        for i in range(len(self.ids)):
            out.append(
                node_pb2.NodeEnergy(
                    battery_wh=float(fleet.state.battery_wh[i]),
                    capacity_wh=float(p.capacity_wh[i]),
                    reserve_wh=float(p.reserve_wh[i]),
                    soc=float(soc[i]),
                    power_in_w=float(fleet.power_in_w[i]),
                    power_out_w=float(fleet.power_out_w[i]),
                    bus_w=float(p.bus_w[i]),
                    request_w=float(request_w[i]),
                    solar_array_w=float(p.solar_array_w[i]),
                    discharge_efficiency=float(p.discharge_efficiency[i]),
                    temperature_k=float(fleet.state.temperature_k[i]),
                    temperature_limit_k=float(p.temperature_limit_k[i]),
                    throttled=bool(throttled[i]),
                    sunlit_fraction=float(fleet.sunlit_fraction[i]),
                    sunlight_in_s=float(sunlight_in[i]),
                    eclipse_in_s=float(eclipse_in[i]),
                    eclipse_duration_s=float(self._dark_for_s[i]),
                    battery_drawn_wh=float(fleet.battery_drawn_wh[i]),
                    min_soc=float(fleet.min_soc[i]),
                    below_reserve_s=float(fleet.below_reserve_s[i]),
                    throttled_s=float(fleet.throttled_s[i]),
                    served_in_eclipse=round(float(fleet.served_in_eclipse[i])),
                    compute_battery_wh=float(self.compute_battery_wh[i]),
                    compute_wh=float(self.compute_wh[i]),
                )
            )
        return out

    def summary(self) -> EnergySummary:
        fleet = self.fleet
        return EnergySummary(
            nodes=len(self.ids),
            battery_wh_drawn=float(fleet.battery_drawn_wh.sum()),
            compute_battery_wh=float(self.compute_battery_wh.sum()),
            min_soc=float(fleet.min_soc.min()) if len(self.ids) else 1.0,
            nodes_below_reserve=int(np.count_nonzero(fleet.below_reserve_s > 0)),
            served_in_eclipse=round(float(fleet.served_in_eclipse.sum())),
            thermal_throttle_s=float(fleet.throttled_s.sum()),
            in_eclipse=int(np.count_nonzero(fleet.in_eclipse())),
        )


def energy_key(message: node_pb2.NodeEnergy) -> tuple[object, ...]:
    """A coarse digest of a node's energy: whole percent of charge, eclipse, throttling."""
    return (round(message.soc * 100), message.sunlit_fraction < 0.5, message.throttled)


def shard_power(
    elements: Mapping[str, ElementSet],
    members: Sequence[str],
    models: Mapping[str, str],
    config: PowerConfig | None = None,
) -> ShardPower:
    """The energy model of ``members`` from their orbital elements (by catalog id), with each
    satellite's constellation defaults (:func:`~groundplane.node.energy.params_for`)."""
    missing = [sat for sat in members if sat not in elements]
    if missing:
        raise InvalidArgument(
            f"the energy model needs the orbit of every node; no elements for "
            f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
        )
    batch = SatelliteBatch(list(members), [elements[sat].to_satrec() for sat in members])
    return ShardPower(batch, [params_for(sat) for sat in members], models, config)


def energy_metrics(shard_id: str, power: ShardPower) -> Iterator[Metric]:
    """Prometheus families of a shard's energy: per node (``satellite_id``) and shard totals."""
    fleet = power.fleet
    per_node: list[tuple[str, str, FloatArray]] = [
        ("groundplane_node_battery_soc", "battery state of charge (0 to 1)", fleet.soc()),
        ("groundplane_node_battery_wh", "energy stored in the battery", fleet.state.battery_wh),
        ("groundplane_node_power_in_w", "solar array output", fleet.power_in_w),
        ("groundplane_node_power_out_w", "electrical demand, bus + compute", fleet.power_out_w),
        ("groundplane_node_temperature_k", "lumped node temperature", fleet.state.temperature_k),
        ("groundplane_node_sunlit_fraction", "0 umbra … 1 full Sun", fleet.sunlit_fraction),
        (
            "groundplane_node_throttled",
            "1 at or above the temperature limit",
            fleet.throttled().astype(np.float64),
        ),
    ]
    for name, doc, values in per_node:
        family = GaugeMetricFamily(name, doc, labels=["shard_id", "satellite_id"])
        for sat, value in zip(power.ids, values, strict=True):
            family.add_metric([shard_id, sat], float(value))
        yield family
    summary = power.summary()
    drawn = CounterMetricFamily(
        "groundplane_nodes_battery_drawn_wh", "energy taken out of batteries", labels=["shard_id"]
    )
    drawn.add_metric([shard_id], summary.battery_wh_drawn)
    yield drawn
    eclipse = GaugeMetricFamily(
        "groundplane_nodes_in_eclipse", "nodes in the Earth's shadow now", labels=["shard_id"]
    )
    eclipse.add_metric([shard_id], summary.in_eclipse)
    yield eclipse
    below = GaugeMetricFamily(
        "groundplane_nodes_below_reserve",
        "nodes whose battery went below its reserve since the start",
        labels=["shard_id"],
    )
    below.add_metric([shard_id], summary.nodes_below_reserve)
    yield below
