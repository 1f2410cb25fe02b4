"""Energy in routing: the battery budget filter and the sunlit-charged-cool score (pure).

Nodes that model power (``groundplane up --energy``) report a ``NodeEnergy`` with their load
(``groundplane.node.v1``); routing keeps it as :class:`PathEnergy` on each path. For a request
expected to take ``expected_s`` seconds (:data:`DEFAULT_REQUEST_S` when the request does not
say), :func:`energy_budget` predicts the lowest battery level before the request ends *and*
before the node's next sunlight:

* in eclipse (sunlit fraction < 0.5): the bus drains the battery until the Sun returns
  (``max(expected_s, sunlight_in_s)``), the compute in use and this request (``request_w``, the
  node's J/token × tokens/s) for ``expected_s``;
* sunlit: the array's shortfall, if any, for the sunlit part of the request; if the request runs
  into the next eclipse, the bus for that whole eclipse and the compute for the dark part.

Each drain is divided by the discharge efficiency. A path whose predicted minimum is below the
node's reserve is excluded (:data:`~groundplane.routing.policy.Exclusion.ENERGY_RESERVE`), as is
a node at or above its temperature limit. The prediction is deliberately pessimistic: running
requests are assumed to last as long as the new one, and charging before the eclipse is ignored.

:func:`energy_term` is the scorer's term in [0, 1]: ``0.6 × sunlit + 0.3 × charge above the
reserve + 0.1 × thermal headroom`` (headroom 1 at :data:`HEADROOM_REF_K` below the limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from groundplane.node.v1 import node_pb2

DEFAULT_REQUEST_S = 30.0
"""The request duration the energy budget assumes when the request gives none."""
SUNLIT_THRESHOLD = 0.5
HEADROOM_REF_K = 30.0


@dataclass(frozen=True, slots=True)
class PathEnergy:
    """A node's reported power and heat (see ``groundplane.node.v1.NodeEnergy``)."""

    battery_wh: float
    capacity_wh: float
    reserve_wh: float
    bus_w: float
    request_w: float
    solar_array_w: float
    discharge_efficiency: float
    temperature_k: float
    temperature_limit_k: float
    throttled: bool
    sunlit_fraction: float
    sunlight_in_s: float
    eclipse_in_s: float
    eclipse_duration_s: float
    compute_w: float
    measured_at_s: float = 0.0
    """Simulated Unix seconds of the measurement (0: unknown, never aged)."""

    @property
    def in_eclipse(self) -> bool:
        return self.sunlit_fraction < SUNLIT_THRESHOLD

    @property
    def soc(self) -> float:
        return self.battery_wh / self.capacity_wh if self.capacity_wh > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Budget:
    """The predicted lowest battery level over ``horizon_s`` and why."""

    min_battery_wh: float
    horizon_s: float
    drain_wh: float

    def breaches(self, energy: PathEnergy) -> bool:
        return self.min_battery_wh < energy.reserve_wh


def aged(energy: PathEnergy, now_s: float) -> PathEnergy:
    """``energy`` as it should be at ``now_s`` (simulated Unix seconds): the reported eclipse
    timing moved on by the report's age (a node that entered or left the shadow since counts as
    in it or out of it), and the battery drained by the bus for the dark part of that age.
    Reports are seconds of wall time old, which at a fast simulated clock is minutes of orbit."""
    age_s = now_s - energy.measured_at_s
    if energy.measured_at_s <= 0.0 or age_s <= 0.0:
        return energy
    if energy.in_eclipse:
        dark_s = min(age_s, energy.sunlight_in_s)
        if age_s >= energy.sunlight_in_s:
            sun, sunlight_in, eclipse_in = 1.0, 0.0, math.inf
        else:
            sun, sunlight_in, eclipse_in = 0.0, energy.sunlight_in_s - age_s, 0.0
    else:
        start, end = energy.eclipse_in_s, energy.eclipse_in_s + energy.eclipse_duration_s
        dark_s = max(0.0, min(age_s, end) - start) if math.isfinite(start) else 0.0
        if age_s < start:
            sun, sunlight_in, eclipse_in = energy.sunlit_fraction, 0.0, start - age_s
        elif age_s < end:
            sun, sunlight_in, eclipse_in = 0.0, end - age_s, 0.0
        else:
            sun, sunlight_in, eclipse_in = 1.0, 0.0, math.inf
    eta = energy.discharge_efficiency if energy.discharge_efficiency > 0 else 1.0
    battery = max(energy.battery_wh - energy.bus_w * dark_s / 3600.0 / eta, 0.0)
    return replace(
        energy,
        battery_wh=battery,
        sunlit_fraction=sun,
        sunlight_in_s=sunlight_in,
        eclipse_in_s=eclipse_in,
        measured_at_s=now_s,
    )


def energy_budget(energy: PathEnergy, expected_s: float, extra_in_flight: int = 0) -> Budget:
    """The battery's predicted minimum if this request is placed on the node (see the module
    docstring); ``extra_in_flight`` counts requests the router sent since the report."""
    duration_s = expected_s if expected_s > 0.0 else DEFAULT_REQUEST_S
    eta = energy.discharge_efficiency if energy.discharge_efficiency > 0 else 1.0
    compute_w = energy.compute_w + (extra_in_flight + 1) * energy.request_w
    if energy.in_eclipse:
        horizon_s = max(duration_s, energy.sunlight_in_s)
        drain_wh = (energy.bus_w * horizon_s + compute_w * duration_s) / 3600.0 / eta
    else:
        sunlit_s = min(duration_s, energy.eclipse_in_s)
        net_w = energy.solar_array_w * energy.sunlit_fraction - energy.bus_w - compute_w
        drain_wh = max(-net_w, 0.0) * sunlit_s / 3600.0 / eta
        horizon_s = duration_s
        if energy.eclipse_in_s < duration_s:
            dark_s = duration_s - energy.eclipse_in_s
            eclipse_s = max(dark_s, energy.eclipse_duration_s)
            drain_wh += (energy.bus_w * eclipse_s + compute_w * dark_s) / 3600.0 / eta
            horizon_s = energy.eclipse_in_s + eclipse_s
    return Budget(energy.battery_wh - drain_wh, horizon_s, drain_wh)


def reserve_detail(satellite_id: str, energy: PathEnergy, budget: Budget) -> str:
    """Why a node was excluded for its reserve, with the figures."""
    where = (
        f"in eclipse, sunlight in {energy.sunlight_in_s:.0f} s"
        if energy.in_eclipse
        else (
            f"eclipse in {energy.eclipse_in_s:.0f} s"
            if math.isfinite(energy.eclipse_in_s)
            else "sunlit"
        )
    )
    return (
        f"node {satellite_id} battery {energy.battery_wh:.0f} Wh would fall to "
        f"{budget.min_battery_wh:.0f} Wh < reserve {energy.reserve_wh:.0f} Wh within "
        f"{budget.horizon_s:.0f} s ({where})"
    )


def hot_detail(satellite_id: str, energy: PathEnergy) -> str:
    return (
        f"node {satellite_id} at {energy.temperature_k:.1f} K ≥ limit "
        f"{energy.temperature_limit_k:.1f} K (throttled)"
    )


def too_hot(energy: PathEnergy) -> bool:
    return energy.throttled or energy.temperature_k >= energy.temperature_limit_k


def energy_term(energy: PathEnergy | None) -> float:
    """Sunlit, charged, cool in [0, 1]; 1 for a node that models no energy (nothing to spare)."""
    if energy is None:
        return 1.0
    span = energy.capacity_wh - energy.reserve_wh
    charge = (energy.battery_wh - energy.reserve_wh) / span if span > 0 else 0.0
    headroom = (energy.temperature_limit_k - energy.temperature_k) / HEADROOM_REF_K
    sun = energy.sunlit_fraction
    return (
        0.6 * (0.0 if sun < 0.0 else 1.0 if sun > 1.0 else sun)
        + 0.3 * (0.0 if charge < 0.0 else 1.0 if charge > 1.0 else charge)
        + 0.1 * (0.0 if headroom < 0.0 else 1.0 if headroom > 1.0 else headroom)
    )


def path_energy(message: node_pb2.NodeEnergy, measured_at_s: float = 0.0) -> PathEnergy:
    """Routing's view of a node's reported ``NodeEnergy`` (measured at ``measured_at_s``,
    simulated Unix seconds: the load report's ``updated_at``)."""
    return PathEnergy(
        battery_wh=message.battery_wh,
        capacity_wh=message.capacity_wh,
        reserve_wh=message.reserve_wh,
        bus_w=message.bus_w,
        request_w=message.request_w,
        solar_array_w=message.solar_array_w,
        discharge_efficiency=message.discharge_efficiency,
        temperature_k=message.temperature_k,
        temperature_limit_k=message.temperature_limit_k,
        throttled=message.throttled,
        sunlit_fraction=message.sunlit_fraction,
        sunlight_in_s=message.sunlight_in_s,
        eclipse_in_s=message.eclipse_in_s,
        eclipse_duration_s=message.eclipse_duration_s,
        compute_w=max(message.power_out_w - message.bus_w, 0.0),
        measured_at_s=measured_at_s,
    )
