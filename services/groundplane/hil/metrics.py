"""Station control's Prometheus metrics, in a registry of its own (``prometheus_client``).

============================================  =========  ========================================
metric                                        type       labels
============================================  =========  ========================================
groundplane_hil_tracking_active               gauge      (1 while a pass is prepositioned or
                                                         tracked, else 0)
groundplane_hil_passes_total                  counter    result (``finished``, ``failed``):
                                                         passes that ended
groundplane_hil_device_connected              gauge      device (``rotator``, ``radio``)
groundplane_hil_commands_total                counter    device, command (the Hamlib long name:
                                                         ``set_pos``, ``get_pos``, ``set_freq``…)
groundplane_hil_command_errors_total          counter    device, kind (``reply``: an ``RPRT``
                                                         error; ``connection``: a lost link)
groundplane_hil_pointing_error_degrees        histogram  angle between where the satellite is
                                                         predicted and where the rotator reports
                                                         pointing, while tracking
============================================  =========  ========================================

Device labels take two values and command labels the few Hamlib commands the clients send: a
bounded set. Counts are read from the Hamlib clients at each scrape; the pointing error is
observed on every status the tracker publishes with a new rotator report.
:class:`~groundplane.kernel.metrics_http.MetricsServer` serves :attr:`HilMetrics.registry`
(``groundplane serve hil --metrics-port``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from groundplane.hil.hamlib import HamlibClient
from groundplane.hil.tracker import StatusHub, TrackerStatus

__all__ = ["POINTING_ERROR_BUCKETS_DEG", "HilMetrics", "pointing_error_deg"]

POINTING_ERROR_BUCKETS_DEG = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 45.0, 90.0, 180.0)
"""Degrees: a good track sits under the rotator's step (~1°); a stall or a flip is tens."""
ACTIVE_PHASES = frozenset({"prepositioning", "tracking"})


def pointing_error_deg(
    azimuth_deg: float, elevation_deg: float, other_azimuth_deg: float, other_elevation_deg: float
) -> float:
    """The angle in degrees between two look directions (great-circle distance on the sky)."""
    el1, el2 = math.radians(elevation_deg), math.radians(other_elevation_deg)
    d_az = math.radians(azimuth_deg - other_azimuth_deg)
    # Haversine: well conditioned for the small angles a good track has.
    h = math.sin((el2 - el1) / 2) ** 2 + math.cos(el1) * math.cos(el2) * math.sin(d_az / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(min(1.0, max(0.0, h)))))


class _Devices(Collector):
    """Connection state and command counts of the Hamlib clients, read at each scrape."""

    def __init__(
        self, clients: dict[str, HamlibClient], status: Callable[[], TrackerStatus]
    ) -> None:
        self._clients = clients
        self._status = status

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        active = GaugeMetricFamily(
            "groundplane_hil_tracking_active",
            "1 while a pass is being prepositioned for or tracked, else 0.",
        )
        active.add_metric([], 1.0 if self._status().phase in ACTIVE_PHASES else 0.0)
        connected = GaugeMetricFamily(
            "groundplane_hil_device_connected",
            "1 while the station holds a connection to the device's Hamlib daemon.",
            labels=["device"],
        )
        commands = CounterMetricFamily(
            "groundplane_hil_commands",
            "Commands sent to the device's Hamlib daemon, by command.",
            labels=["device", "command"],
        )
        errors = CounterMetricFamily(
            "groundplane_hil_command_errors",
            "Failed Hamlib commands: an RPRT error reply, or the connection lost.",
            labels=["device", "kind"],
        )
        for device, client in self._clients.items():
            connected.add_metric([device], 1.0 if client.connected else 0.0)
            for command, count in sorted(client.commands.items()):
                commands.add_metric([device, command], float(count))
            errors.add_metric([device, "reply"], float(client.reply_errors))
            errors.add_metric([device, "connection"], float(client.connection_failures))
        return [active, connected, commands, errors]


class HilMetrics:
    """Every metric of one station, registered in :attr:`registry`; :meth:`watch` follows the
    tracker's status hub."""

    def __init__(
        self,
        *,
        rotator: HamlibClient,
        radio: HamlibClient | None,
        status: Callable[[], TrackerStatus],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        clients = {"rotator": rotator} | ({"radio": radio} if radio is not None else {})
        self.registry.register(_Devices(clients, status))
        self.pointing_error = Histogram(
            "groundplane_hil_pointing_error_degrees",
            "Angle between the predicted and the reported rotator direction while tracking.",
            buckets=POINTING_ERROR_BUCKETS_DEG,
            registry=self.registry,
        )
        self.passes = Counter(
            "groundplane_hil_passes",
            "Passes that ended, by result.",
            ["result"],
            registry=self.registry,
        )
        for result in ("finished", "failed"):
            self.passes.labels(result)
        self._reported_at: datetime | None = None
        self._phase = "idle"

    def observe(self, status: TrackerStatus) -> None:
        """Account one published status (the hub's callback)."""
        if self._phase in ACTIVE_PHASES and status.phase not in ACTIVE_PHASES:
            self.passes.labels("failed" if status.phase == "failed" else "finished").inc()
        self._phase = status.phase
        if status.phase != "tracking" or status.reported_at in (None, self._reported_at):
            return
        self._reported_at = status.reported_at
        p_az, p_el = status.predicted_azimuth_deg, status.predicted_elevation_deg
        r_az, r_el = status.reported_azimuth_deg, status.reported_elevation_deg
        if p_az is None or p_el is None or r_az is None or r_el is None:
            return
        self.pointing_error.observe(pointing_error_deg(p_az, p_el, r_az, r_el))

    def watch(self, hub: StatusHub) -> Callable[[], None]:
        """Observe every status ``hub`` publishes; returns the unsubscribe."""
        return hub.subscribe(self.observe)
