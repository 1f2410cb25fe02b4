"""Power and heat of orbital compute nodes: solar array, battery, bus, compute and radiator.

Pure, vectorised over nodes (numpy arrays of shape ``(N,)``; scalars broadcast), and a function
of explicit inputs only: :func:`step` advances the state of every node by ``dt_s`` seconds given
each node's sunlit fraction (0 umbra … 1 full Sun) and compute power, and returns the step's
energy ledger. :class:`EnergyFleet` is the small mutable holder a nodes shard keeps.

Power
    The array gives ``solar_array_w × sunlit_fraction``. The demand is ``bus_w`` plus the compute
    power (``joules_per_token`` × tokens generated in the step / ``dt_s``). A surplus charges the
    battery through ``charge_efficiency``; a full battery *curtails* the rest (the array is
    pointed off or shunted). A deficit is drawn from the battery through
    ``discharge_efficiency``; an empty battery leaves a *shortfall* (demand not served). Each
    step is exact bookkeeping, so over any run::

        generated = served + Δstored + conversion losses + curtailed
        demand    = served + shortfall

    and the state of charge stays in [0, capacity] by construction (clamping is the curtailment
    and the shortfall, both counted).

Heat (one lumped node)
    ``C dT/dt = absorptivity × S × absorbing_area × sunlit_fraction + electrical dissipation
    − emissivity × σ × radiator_area × T⁴`` with S the solar constant; all electrical power
    served and all conversion losses end as heat. Integrated with explicit sub-steps of at most
    :data:`THERMAL_SUBSTEP_S` (the time constant ``C / (4 ε σ A T³)`` is hours for the defaults).
    At or above ``temperature_limit_k`` the node is *throttled* (routing leaves it alone).

Default figures (:class:`EnergyParams`), from public sources:

* solar constant 1361 W/m² (Kopp & Lean 2011, *GRL* 38, L01706);
* array: 6 m² of triple-junction GaAs cells at 30 % efficiency (Spectrolab XTJ Prime datasheet,
  30.7 % BOL) with 80 % packing: 6 × 1361 × 0.30 × 0.8 ≈ 1.96 kW, the order of a 250–300 kg
  Starlink-class smallsat's array (several kW on the v1.5 bus, public SpaceX filings);
* battery: 2 kWh of Li-ion (≈13 kg at ~150 Wh/kg pack level, space cells such as Saft VES16
  are ~155 Wh/kg), charge and discharge efficiency 0.95 each (≈90 % round trip); a reserve floor
  of 30 % (LEO batteries are kept to 20–40 % depth of discharge for ~5,500 cycles a year);
* bus (avionics, ADCS, radios) 150 W;
* compute 3 J per generated token (LLaMA-65B-class inference on A100/V100 measured ~3–4 J/token,
  Samsi et al., "From Words to Watts", IEEE HPEC 2023);
* heat capacity 2.7×10⁵ J/K (300 kg of mostly aluminium at ~900 J/(kg·K)); radiator 4 m² with
  emissivity 0.85 and a white-paint/OSR absorptivity of 0.2 on 2 m² facing the Sun (typical
  white paint ε≈0.85–0.9, α≈0.2; Gilmore, *Spacecraft Thermal Control Handbook*, 2002);
  throttling at 328 K (55 °C, a common electronics operating limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

SOLAR_CONSTANT_W_M2 = 1361.0
STEFAN_BOLTZMANN_W_M2_K4 = 5.670374419e-8
THERMAL_SUBSTEP_S = 10.0
SUNLIT_THRESHOLD = 0.5
"""A node counts as *in eclipse* while its sunlit fraction is below this."""
DEFAULT_MODEL_KEY = "*"


@dataclass(frozen=True, slots=True)
class EnergyParams:
    """One node's power and thermal parameters (see the module docstring for the sources)."""

    solar_array_w: float = 1960.0
    battery_capacity_wh: float = 2000.0
    initial_soc: float = 0.8
    reserve_soc: float = 0.3
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    bus_w: float = 150.0
    joules_per_token: tuple[tuple[str, float], ...] = ((DEFAULT_MODEL_KEY, 3.0),)
    """Compute energy per generated token, per model; ``"*"`` is every other model."""
    tokens_per_s: float = 30.0
    """Decode rate of one request (a 70B-class model on one GPU: ~20–40 tokens/s); with
    ``joules_per_token`` the power of one generating request that routing budgets with."""
    heat_capacity_j_per_k: float = 2.7e5
    radiator_area_m2: float = 4.0
    emissivity: float = 0.85
    absorptivity: float = 0.2
    absorbing_area_m2: float = 2.0
    initial_temperature_k: float = 293.15
    temperature_limit_k: float = 328.15

    def __post_init__(self) -> None:
        for name in (
            "solar_array_w",
            "bus_w",
            "heat_capacity_j_per_k",
            "radiator_area_m2",
            "absorbing_area_m2",
            "initial_temperature_k",
            "temperature_limit_k",
        ):
            if finite_number(f"energy.{name}", getattr(self, name)) < 0.0:
                raise InvalidArgument(f"energy.{name} must be ≥ 0, got {getattr(self, name)}")
        if finite_number("energy.battery_capacity_wh", self.battery_capacity_wh) <= 0.0:
            raise InvalidArgument(
                f"energy.battery_capacity_wh must be > 0 Wh, got {self.battery_capacity_wh}"
            )
        if finite_number("energy.heat_capacity_j_per_k", self.heat_capacity_j_per_k) <= 0.0:
            raise InvalidArgument("energy.heat_capacity_j_per_k must be > 0 J/K")
        for name in ("initial_soc", "reserve_soc", "emissivity", "absorptivity"):
            value = finite_number(f"energy.{name}", getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"energy.{name} must be a fraction in [0, 1], got {value}")
        for name in ("charge_efficiency", "discharge_efficiency"):
            value = finite_number(f"energy.{name}", getattr(self, name))
            if not 0.0 < value <= 1.0:
                raise InvalidArgument(f"energy.{name} must be in (0, 1], got {value}")
        for model, joules in self.joules_per_token:
            if finite_number(f"energy.joules_per_token[{model!r}]", joules) < 0.0:
                raise InvalidArgument(f"energy.joules_per_token[{model!r}] must be ≥ 0 J")

    @property
    def reserve_wh(self) -> float:
        return self.reserve_soc * self.battery_capacity_wh

    def joules_per_token_for(self, model: str) -> float:
        """J per generated token of ``model`` (the ``"*"`` entry, else 0, when not listed)."""
        table = dict(self.joules_per_token)
        return table.get(model, table.get(DEFAULT_MODEL_KEY, 0.0))


CONSTELLATION_PARAMS: dict[str, EnergyParams] = {
    "default": EnergyParams(),
    # A compute-heavy LEO shell: the same bus with a bigger model (≈10 J/token for 70B-class).
    "walker": EnergyParams(joules_per_token=((DEFAULT_MODEL_KEY, 10.0),)),
    "sso": EnergyParams(),
}
"""Defaults per constellation kind (the catalog id prefix: ``walker-0001`` → ``walker``)."""


def params_for(satellite_id: str, table: dict[str, EnergyParams] | None = None) -> EnergyParams:
    """The parameters of a satellite: by its id prefix (``walker-0001``), else ``default``."""
    presets = CONSTELLATION_PARAMS if table is None else table
    prefix = satellite_id.rsplit("-", 1)[0] if "-" in satellite_id else satellite_id
    return presets.get(prefix, presets["default"])


@dataclass(frozen=True, slots=True)
class FleetParams:
    """:class:`EnergyParams` of N nodes as arrays (what :func:`step` broadcasts over)."""

    solar_array_w: FloatArray
    capacity_wh: FloatArray
    reserve_wh: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    bus_w: FloatArray
    heat_capacity_j_per_k: FloatArray
    radiator_area_m2: FloatArray
    emissivity: FloatArray
    absorbed_full_sun_w: FloatArray
    temperature_limit_k: FloatArray

    @classmethod
    def of(cls, params: list[EnergyParams]) -> FleetParams:
        def col(name: str) -> FloatArray:
            return np.array([getattr(p, name) for p in params], dtype=np.float64)

        return cls(
            solar_array_w=col("solar_array_w"),
            capacity_wh=col("battery_capacity_wh"),
            reserve_wh=np.array([p.reserve_wh for p in params], dtype=np.float64),
            charge_efficiency=col("charge_efficiency"),
            discharge_efficiency=col("discharge_efficiency"),
            bus_w=col("bus_w"),
            heat_capacity_j_per_k=col("heat_capacity_j_per_k"),
            radiator_area_m2=col("radiator_area_m2"),
            emissivity=col("emissivity"),
            absorbed_full_sun_w=np.array(
                [p.absorptivity * SOLAR_CONSTANT_W_M2 * p.absorbing_area_m2 for p in params],
                dtype=np.float64,
            ),
            temperature_limit_k=col("temperature_limit_k"),
        )


@dataclass(frozen=True, slots=True)
class EnergyState:
    """Stored energy and temperature of N nodes."""

    battery_wh: FloatArray
    temperature_k: FloatArray


@dataclass(frozen=True, slots=True)
class StepLedger:
    """Energy of one step per node, in Wh (all ≥ 0 except ``stored_delta_wh``)."""

    generated_wh: FloatArray
    demand_wh: FloatArray
    served_wh: FloatArray
    stored_delta_wh: FloatArray
    loss_wh: FloatArray
    curtailed_wh: FloatArray
    shortfall_wh: FloatArray
    battery_drawn_wh: FloatArray
    """Energy taken out of the battery store (before the discharge losses)."""
    power_in_w: FloatArray
    power_out_w: FloatArray


def step(
    params: FleetParams,
    state: EnergyState,
    dt_s: float,
    sunlit_fraction: FloatArray,
    compute_w: FloatArray,
) -> tuple[EnergyState, StepLedger]:
    """Advance every node by ``dt_s`` s with constant sunlit fraction and compute power.

    Pure: returns the new state and the step's ledger (see the module docstring for the
    bookkeeping identities, which hold per node and per step up to float rounding).
    """
    if not (dt_s >= 0.0 and np.isfinite(dt_s)):
        raise InvalidArgument(f"dt_s must be a finite number of seconds ≥ 0, got {dt_s}")
    sun = np.clip(np.asarray(sunlit_fraction, dtype=np.float64), 0.0, 1.0)
    compute = np.maximum(np.asarray(compute_w, dtype=np.float64), 0.0)
    hours = dt_s / 3600.0
    power_in = params.solar_array_w * sun
    power_out = params.bus_w + compute
    generated = power_in * hours
    demand = power_out * hours
    battery = state.battery_wh
    surplus = np.maximum(generated - demand, 0.0)
    deficit = np.maximum(demand - generated, 0.0)
    room = np.maximum(params.capacity_wh - battery, 0.0)
    charge_in = np.minimum(surplus, room / params.charge_efficiency)
    curtailed = surplus - charge_in
    need = deficit / params.discharge_efficiency
    drawn = np.minimum(need, battery)
    delivered = drawn * params.discharge_efficiency
    shortfall = deficit - delivered
    stored_delta = charge_in * params.charge_efficiency - drawn
    loss = charge_in * (1.0 - params.charge_efficiency) + drawn * (
        1.0 - params.discharge_efficiency
    )
    served = demand - shortfall
    new_battery = np.clip(battery + stored_delta, 0.0, params.capacity_wh)
    heat_w = (served * 3600.0 / dt_s if dt_s > 0 else power_out) + (
        loss * 3600.0 / dt_s if dt_s > 0 else 0.0
    )
    temperature = _thermal(params, state.temperature_k, dt_s, sun, heat_w)
    ledger = StepLedger(
        generated_wh=generated,
        demand_wh=demand,
        served_wh=served,
        stored_delta_wh=stored_delta,
        loss_wh=loss,
        curtailed_wh=curtailed,
        shortfall_wh=shortfall,
        battery_drawn_wh=drawn,
        power_in_w=power_in,
        power_out_w=power_out,
    )
    return EnergyState(battery_wh=new_battery, temperature_k=temperature), ledger


def _thermal(
    params: FleetParams,
    temperature_k: FloatArray,
    dt_s: float,
    sun: FloatArray,
    electrical_heat_w: FloatArray,
) -> FloatArray:
    heat_in = params.absorbed_full_sun_w * sun + electrical_heat_w
    radiating = params.emissivity * STEFAN_BOLTZMANN_W_M2_K4 * params.radiator_area_m2
    t = np.asarray(temperature_k, dtype=np.float64)
    left = dt_s
    while left > 0.0:
        h = min(left, THERMAL_SUBSTEP_S)
        t = t + h * (heat_in - radiating * t**4) / params.heat_capacity_j_per_k
        left -= h
    return np.maximum(t, 0.0)


@dataclass
class EnergyFleet:
    """The energy state of a shard's nodes and their running totals (mutable holder)."""

    satellite_ids: tuple[str, ...]
    params: list[EnergyParams]
    fleet: FleetParams = field(init=False)
    state: EnergyState = field(init=False)
    sunlit_fraction: FloatArray = field(init=False)
    power_in_w: FloatArray = field(init=False)
    power_out_w: FloatArray = field(init=False)
    battery_drawn_wh: FloatArray = field(init=False)
    min_soc: FloatArray = field(init=False)
    below_reserve_s: FloatArray = field(init=False)
    throttled_s: FloatArray = field(init=False)
    served_in_eclipse: FloatArray = field(init=False)
    sunlight_in_s: FloatArray = field(init=False)
    eclipse_in_s: FloatArray = field(init=False)
    eclipse_duration_s: FloatArray = field(init=False)
    totals: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.params) != len(self.satellite_ids):
            raise InvalidArgument("energy fleet: one EnergyParams per satellite expected")
        n = len(self.satellite_ids)
        self.fleet = FleetParams.of(self.params)
        self.state = EnergyState(
            battery_wh=np.array(
                [p.initial_soc * p.battery_capacity_wh for p in self.params], dtype=np.float64
            ),
            temperature_k=np.array([p.initial_temperature_k for p in self.params]),
        )
        self.sunlit_fraction = np.ones(n)
        self.power_in_w = np.zeros(n)
        self.power_out_w = np.zeros(n)
        self.battery_drawn_wh = np.zeros(n)
        self.min_soc = self.soc()
        self.below_reserve_s = np.zeros(n)
        self.throttled_s = np.zeros(n)
        self.served_in_eclipse = np.zeros(n)
        self.sunlight_in_s = np.zeros(n)
        self.eclipse_in_s = np.full(n, np.inf)
        self.eclipse_duration_s = np.zeros(n)
        self.totals = dict.fromkeys(
            ("generated", "demand", "served", "stored_delta", "loss", "curtailed", "shortfall"),
            0.0,
        )

    def soc(self) -> FloatArray:
        return self.state.battery_wh / self.fleet.capacity_wh

    def throttled(self) -> BoolArray:
        return self.state.temperature_k >= self.fleet.temperature_limit_k

    def advance(
        self, dt_s: float, sunlit_fraction: FloatArray, compute_w: FloatArray
    ) -> StepLedger:
        """Step every node by ``dt_s`` and add the step to the running totals."""
        self.sunlit_fraction = np.clip(np.asarray(sunlit_fraction, dtype=np.float64), 0.0, 1.0)
        self.state, ledger = step(self.fleet, self.state, dt_s, self.sunlit_fraction, compute_w)
        self.power_in_w = ledger.power_in_w
        self.power_out_w = ledger.power_out_w
        self.battery_drawn_wh = self.battery_drawn_wh + ledger.battery_drawn_wh
        soc = self.soc()
        self.min_soc = np.minimum(self.min_soc, soc)
        below = self.state.battery_wh < self.fleet.reserve_wh - 1e-9
        self.below_reserve_s = self.below_reserve_s + np.where(below, dt_s, 0.0)
        self.throttled_s = self.throttled_s + np.where(self.throttled(), dt_s, 0.0)
        for key in self.totals:
            self.totals[key] += float(np.sum(getattr(ledger, f"{key}_wh")))
        return ledger

    def in_eclipse(self) -> BoolArray:
        return self.sunlit_fraction < SUNLIT_THRESHOLD


def eclipse_timing(
    offsets_s: FloatArray, sunlit: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """When each node next sees the Sun and next enters eclipse, from a sampled look-ahead.

    ``sunlit`` is ``(N, T)`` sunlit fractions at ``offsets_s`` (``(T,)``, ascending, the first
    0 = now). Returns per node, in seconds from now: ``sunlight_in_s`` (0 when sunlit now, the
    look-ahead's end when it stays dark throughout), ``eclipse_in_s`` (0 when in eclipse now,
    ``inf`` when no eclipse within the look-ahead) and ``eclipse_duration_s`` (of the current or
    next eclipse, clipped to the look-ahead). Resolution is the sampling step.
    """
    offsets = np.asarray(offsets_s, dtype=np.float64)
    lit = np.asarray(sunlit, dtype=np.float64) >= SUNLIT_THRESHOLD
    if lit.ndim != 2 or lit.shape[1] != offsets.shape[0] or offsets.shape[0] == 0:
        raise InvalidArgument(
            f"eclipse_timing: expected sunlit (N, T) with T = {offsets.shape[0]} offsets, "
            f"got {lit.shape}"
        )
    end = float(offsets[-1])
    dark = ~lit
    any_dark = dark.any(axis=1)
    first_dark = np.argmax(dark, axis=1)
    eclipse_in = np.where(any_dark, offsets[first_dark], np.inf)
    # The first lit sample after the first dark one.
    t_index = np.arange(offsets.shape[0])
    after = lit & (t_index[None, :] > first_dark[:, None])
    any_after = after.any(axis=1)
    first_lit_after = np.argmax(after, axis=1)
    sun_back = np.where(any_after, offsets[first_lit_after], end)
    sunlight_in = np.where(lit[:, 0], 0.0, sun_back)
    duration = np.where(any_dark, sun_back - np.where(any_dark, eclipse_in, 0.0), 0.0)
    return sunlight_in, eclipse_in, duration
