"""Which passes can serve a model now: the pass source joined with the nodes' liveness."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from groundplane.handoff.planner import (
    HandoffSettings,
    PassSource,
    PassWindow,
    next_aos,
    rank_windows,
)
from groundplane.kernel.clock import Clock
from groundplane.node.client import NodeDirectory


class EnergyReport(Protocol):
    """The fields of a node's reported energy (``groundplane.node.v1.NodeEnergy``) used here."""

    @property
    def throttled(self) -> bool: ...
    @property
    def battery_wh(self) -> float: ...
    @property
    def reserve_wh(self) -> float: ...
    @property
    def bus_w(self) -> float: ...
    @property
    def discharge_efficiency(self) -> float: ...
    @property
    def sunlight_in_s(self) -> float: ...


def energy_fit(energy: EnergyReport) -> bool:
    """A node may take over work: not throttled, and its bus alone keeps the battery at or
    above the reserve until the next sunlight (work moved there adds compute on top, so a node
    already that close is left alone)."""
    if energy.throttled or energy.battery_wh < energy.reserve_wh:
        return False
    eta = energy.discharge_efficiency if energy.discharge_efficiency > 0 else 1.0
    bus_wh = energy.bus_w * energy.sunlight_in_s / 3600.0 / eta
    return energy.battery_wh - bus_wh >= energy.reserve_wh


class Coverage:
    """Pass windows from a :class:`PassSource`, filtered by what the :class:`NodeDirectory`
    says each satellite's node accepts and serves."""

    def __init__(
        self,
        passes: PassSource,
        directory: NodeDirectory,
        clock: Clock,
        settings: HandoffSettings,
    ) -> None:
        self._passes = passes
        self._directory = directory
        self._clock = clock
        self._settings = settings

    def windows(self, now: datetime) -> Sequence[PassWindow]:
        """Windows from ``now`` to the planning horizon."""
        return self._passes.windows(now, now + timedelta(seconds=self._settings.horizon_s))

    def window_of(self, satellite_id: str, station_id: str) -> PassWindow | None:
        """The (satellite, station) window covering now, if any."""
        now = self._clock.now()
        for window in self._passes.windows(now, now + timedelta(microseconds=1)):
            if (
                window.satellite_id == satellite_id
                and window.station_id == station_id
                and window.covers(now)
            ):
                return window
        return None

    def eligible(
        self, model: str, among: Collection[str] | None = None, *, sunlit_only: bool = False
    ) -> Callable[[str], bool]:
        """Whether a satellite's node accepts work and serves ``model`` (and, given ``among``,
        is one of those satellites). With ``energy_aware`` settings also fit by its energy
        (:func:`energy_fit`), and with ``sunlit_only`` in the Sun."""
        energy_aware = self._settings.energy_aware

        def check(satellite_id: str) -> bool:
            if among is not None and satellite_id not in among:
                return False
            view = self._directory.get(satellite_id)
            if view is None or not view.accepting or not view.serves(model):
                return False
            if not energy_aware or view.load is None or not view.load.HasField("energy"):
                return True
            energy = view.load.energy
            return energy_fit(energy) and (not sunlit_only or energy.sunlit_fraction >= 0.5)

        return check

    def lost(self, satellite_id: str) -> bool:
        """The directory saw the satellite's node die (its Will): what it was running is gone."""
        view = self._directory.get(satellite_id)
        return view is not None and view.died

    def best_now(
        self,
        model: str,
        min_remaining_s: float,
        exclude: str | None = None,
        among: Collection[str] | None = None,
        *,
        sunlit_only: bool = False,
    ) -> PassWindow | None:
        """The best window in view now for ``model`` lasting ``min_remaining_s`` more (of the
        satellites ``among``, when given; of sunlit nodes with ``sunlit_only``)."""
        now = self._clock.now()
        ranked = rank_windows(
            self.windows(now),
            now,
            self._settings.policy,
            rate_bps=self._settings.ground_rate_bps,
            min_remaining_s=min_remaining_s,
            exclude_satellite=exclude,
            eligible=self.eligible(model, among, sunlit_only=sunlit_only),
        )
        return ranked[0] if ranked else None

    def next_aos(
        self, model: str, now: datetime, among: Collection[str] | None = None
    ) -> PassWindow | None:
        """The next window to rise for ``model`` within the horizon (of ``among``, if given)."""
        return next_aos(self.windows(now), now, eligible=self.eligible(model, among))

    def serving(self, satellite_id: str, window: PassWindow | None, now: datetime) -> bool:
        """The satellite's node is alive and ``window`` covers ``now``."""
        view = self._directory.get(satellite_id)
        return window is not None and window.covers(now) and view is not None and view.alive
