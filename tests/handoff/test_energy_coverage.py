"""Energy-aware handoff: successor and job-node choice respect the nodes' reported energy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from groundplane.handoff.coverage import Coverage, energy_fit
from groundplane.handoff.planner import HandoffSettings, PassWindow
from groundplane.kernel.clock import SimulatedClock
from groundplane.node.directory import NodeDirectory
from groundplane.node.v1 import node_pb2

from .fakes import node_online

T0 = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
MODEL = "synthetic"


class _Passes:
    def __init__(self, windows: Sequence[PassWindow]) -> None:
        self._windows = list(windows)

    def windows(self, start: datetime, stop: datetime) -> Sequence[PassWindow]:
        return [w for w in self._windows if w.los > start and w.aos < stop]


def _energy(
    *, battery_wh: float, sunlit: float, sunlight_in_s: float = 0.0, hot: bool = False
) -> node_pb2.NodeEnergy:
    return node_pb2.NodeEnergy(
        battery_wh=battery_wh,
        capacity_wh=2000.0,
        reserve_wh=600.0,
        bus_w=150.0,
        discharge_efficiency=0.95,
        sunlit_fraction=sunlit,
        sunlight_in_s=sunlight_in_s,
        throttled=hot,
        temperature_k=330.0 if hot else 300.0,
        temperature_limit_k=328.15,
    )


def _report(directory: NodeDirectory, sat: str, energy: node_pb2.NodeEnergy) -> None:
    node_online(directory, sat, (MODEL,))
    directory.observe_load(
        node_pb2.LoadReport(
            satellite_id=sat, epoch=1, slots=4, free_slots=4, served_models=[MODEL],
            accepting=True, energy=energy,
        )
    )  # fmt: skip


def _coverage(energy_aware: bool) -> tuple[Coverage, NodeDirectory]:
    directory = NodeDirectory()
    # The highest pass belongs to a node low on battery deep in an eclipse; then a throttled
    # one; then a charged node in eclipse; the lowest is sunlit.
    _report(directory, "sat-low", _energy(battery_wh=650.0, sunlit=0.0, sunlight_in_s=1800.0))
    _report(directory, "sat-hot", _energy(battery_wh=1900.0, sunlit=1.0, hot=True))
    _report(directory, "sat-dark", _energy(battery_wh=1900.0, sunlit=0.0, sunlight_in_s=900.0))
    _report(directory, "sat-sun", _energy(battery_wh=1200.0, sunlit=1.0))
    windows = [
        PassWindow(sat, "gs-a", T0 - timedelta(minutes=1), T0 + timedelta(minutes=m), el)
        for sat, m, el in (("sat-low", 12, 80), ("sat-hot", 11, 70), ("sat-dark", 10, 60),
                           ("sat-sun", 9, 30))
    ]  # fmt: skip
    settings = HandoffSettings(energy_aware=energy_aware)
    return Coverage(_Passes(windows), directory, SimulatedClock(T0), settings), directory


def test_successor_choice_skips_nodes_unfit_by_energy_and_jobs_can_ask_for_sunlight() -> None:
    """Energy-aware coverage never offers a node whose bus alone would take its battery below
    the reserve before sunlight, nor a throttled one: the best window (longest visibility) is
    then the charged node in eclipse, and with sunlit_only (job items deferred to the Sun) the
    sunlit one. Energy-blind coverage offers the unfit node first."""
    aware, _ = _coverage(energy_aware=True)
    best = aware.best_now(MODEL, 60.0)
    assert best is not None
    assert best.satellite_id == "sat-dark"
    sunny = aware.best_now(MODEL, 60.0, sunlit_only=True)
    assert sunny is not None
    assert sunny.satellite_id == "sat-sun"
    blind, _ = _coverage(energy_aware=False)
    first = blind.best_now(MODEL, 60.0)
    assert first is not None
    assert first.satellite_id == "sat-low"


def test_energy_fit_is_the_bus_until_sunlight_against_the_reserve() -> None:
    """650 Wh with 1800 s of eclipse at 150 W (≈79 Wh) breaches a 600 Wh reserve; 30 s does not;
    a sunlit node at the reserve is fit, below it or throttled is not."""
    assert not energy_fit(_energy(battery_wh=650.0, sunlit=0.0, sunlight_in_s=1800.0))
    assert energy_fit(_energy(battery_wh=650.0, sunlit=0.0, sunlight_in_s=30.0))
    assert energy_fit(_energy(battery_wh=600.0, sunlit=1.0))
    assert not energy_fit(_energy(battery_wh=599.0, sunlit=1.0))
    assert not energy_fit(_energy(battery_wh=1900.0, sunlit=1.0, hot=True))
