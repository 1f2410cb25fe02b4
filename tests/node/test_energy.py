"""The power and heat model: exact bookkeeping, bounded charge, eclipse timing, throttling."""

from __future__ import annotations

import numpy as np
import pytest

from groundplane.kernel.errors import InvalidArgument
from groundplane.node.energy import (
    EnergyFleet,
    EnergyParams,
    eclipse_timing,
    params_for,
)

ORBIT_S = 95.6 * 60.0
DAY_S = 86_400.0


def _sunlit(t_s: np.ndarray, phase_s: np.ndarray) -> np.ndarray:
    """A LEO-like profile: 35 % of each orbit dark, 10 s penumbra ramps at both edges."""
    x = np.mod(t_s + phase_s, ORBIT_S)
    dark_start, dark_end = 0.65 * ORBIT_S, ORBIT_S
    ramp = 10.0
    into = np.clip((x - dark_start) / ramp, 0.0, 1.0)
    out = np.clip((dark_end - x) / ramp, 0.0, 1.0)
    return np.where(x < dark_start, 1.0, 1.0 - np.minimum(into, out))


def test_one_simulated_day_balances_within_a_thousandth_and_soc_stays_bounded() -> None:
    """Over 24 h of orbits with eclipses and bursty compute, for nodes that run full, run empty
    and in between: generated = served + Δstored + losses + curtailed within 0.1 % (per node and
    fleet-wide), demand = served + shortfall, the SoC never leaves [0, 1], and the extremes
    really are exercised (some node curtails at 100 %, some hits 0 % with a shortfall)."""
    params = [
        EnergyParams(),  # balanced
        EnergyParams(bus_w=50.0, initial_soc=0.99),  # surplus: full battery, curtailment
        EnergyParams(solar_array_w=200.0, bus_w=400.0, initial_soc=0.2),  # runs empty
    ]
    fleet = EnergyFleet(("walker-0001", "walker-0002", "walker-0003"), params)
    rng = np.random.default_rng(16)
    phase = np.array([0.0, 1200.0, 2400.0])
    dt_s = 10.0
    start_wh = fleet.state.battery_wh.copy()
    generated = np.zeros(3)
    served = np.zeros(3)
    loss = np.zeros(3)
    curtailed = np.zeros(3)
    shortfall = np.zeros(3)
    demand = np.zeros(3)
    soc_low, soc_high = 1.0, 0.0
    for k in range(int(DAY_S / dt_s)):
        t = np.full(3, k * dt_s)
        compute_w = rng.choice([0.0, 300.0, 900.0], size=3, p=[0.5, 0.3, 0.2])
        ledger = fleet.advance(dt_s, _sunlit(t, phase), compute_w)
        generated += ledger.generated_wh
        served += ledger.served_wh
        loss += ledger.loss_wh
        curtailed += ledger.curtailed_wh
        shortfall += ledger.shortfall_wh
        demand += ledger.demand_wh
        soc = fleet.soc()
        soc_low, soc_high = min(soc_low, float(soc.min())), max(soc_high, float(soc.max()))
    stored_change = fleet.state.battery_wh - start_wh
    balance = served + stored_change + loss + curtailed
    assert np.all(np.abs(generated - balance) <= 1e-3 * generated)
    assert np.allclose(demand, served + shortfall, rtol=1e-9)
    totals = fleet.totals
    assert (
        abs(
            totals["generated"]
            - (totals["served"] + totals["stored_delta"] + totals["loss"] + totals["curtailed"])
        )
        <= 1e-3 * totals["generated"]
    )
    assert soc_low >= 0.0
    assert soc_high <= 1.0
    assert soc_high == pytest.approx(1.0)
    assert curtailed[1] > 0.0
    assert soc_low == pytest.approx(0.0, abs=1e-9)
    assert shortfall[2] > 0.0
    assert fleet.min_soc[2] == pytest.approx(0.0, abs=1e-9)
    assert fleet.below_reserve_s[2] > 0.0
    assert fleet.below_reserve_s[1] == 0.0
    assert fleet.battery_drawn_wh[0] > 0.0


def test_step_size_does_not_change_the_energy_result_much() -> None:
    """The same orbit integrated at 1 s and at 30 s steps ends within 1 % in stored energy and
    within 0.5 K in temperature: the integration converges rather than depending on the tick."""

    def run(dt_s: float) -> tuple[float, float]:
        fleet = EnergyFleet(("n",), [EnergyParams()])
        for k in range(int(2 * ORBIT_S / dt_s)):
            t = np.array([k * dt_s + dt_s / 2])
            fleet.advance(dt_s, _sunlit(t, np.zeros(1)), np.array([600.0]))
        return float(fleet.state.battery_wh[0]), float(fleet.state.temperature_k[0])

    fine, coarse = run(1.0), run(30.0)
    assert coarse[0] == pytest.approx(fine[0], rel=0.01)
    assert coarse[1] == pytest.approx(fine[1], abs=0.5)


def test_a_hot_node_reaches_its_limit_and_is_throttled() -> None:
    """Sustained heavy compute in full Sun heats the lumped node past its temperature limit
    (radiative loss ε σ A T⁴ cannot keep up), and the throttled time is counted."""
    fleet = EnergyFleet(("n",), [EnergyParams(radiator_area_m2=1.0, heat_capacity_j_per_k=5e4)])
    for _ in range(720):
        fleet.advance(10.0, np.ones(1), np.array([1500.0]))
    assert bool(fleet.throttled()[0])
    assert fleet.throttled_s[0] > 0.0
    cool = EnergyFleet(("n",), [EnergyParams()])
    for _ in range(720):
        cool.advance(10.0, np.ones(1), np.zeros(1))
    assert not bool(cool.throttled()[0])
    assert cool.throttled_s[0] == 0.0


def test_eclipse_timing_from_a_look_ahead() -> None:
    """Sunlit now → time to the first dark sample and its length; dark now → time to sunlight;
    never dark → no eclipse (inf)."""
    offsets = np.arange(0.0, 600.0, 60.0)
    lit = np.ones((3, offsets.size))
    lit[0, 3:6] = 0.0  # eclipse from 180 s to 360 s
    lit[1, :4] = 0.0  # dark now, sunlit at 240 s
    sunlight_in, eclipse_in, duration = eclipse_timing(offsets, lit)
    assert list(sunlight_in) == [0.0, 240.0, 0.0]
    assert list(eclipse_in[:2]) == [180.0, 0.0]
    assert np.isinf(eclipse_in[2])
    assert list(duration) == [180.0, 240.0, 0.0]


def test_parameters_are_checked_and_chosen_per_constellation() -> None:
    """Nonsense parameters fail naming the field; the id prefix picks the constellation's preset."""
    with pytest.raises(InvalidArgument, match="reserve_soc"):
        EnergyParams(reserve_soc=1.5)
    with pytest.raises(InvalidArgument, match="battery_capacity_wh"):
        EnergyParams(battery_capacity_wh=0.0)
    assert params_for("walker-0001").joules_per_token_for("synthetic") == 10.0
    assert params_for("ISS").joules_per_token_for("synthetic") == 3.0
