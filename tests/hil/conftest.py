"""Fixtures for the hardware-in-the-loop tests: real Hamlib dummy daemons and a real ISS pass.

``rotctld -m 1`` / ``rigctld -m 1`` (Hamlib's dummy rotator and radio) are started on free
loopback ports and killed at teardown. The tests skip, saying why, when the binaries are missing
(``apt-get install libhamlib-utils``).

Pointing comes from Skyfield (test-only reference) for the ISS elements in the shared 2026-08
catalog, tabulated every 0.5 s and interpolated, so the tracker's callable is cheap and exact to
well under the tolerances used.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from groundplane.hil.rotator import PassSample
from groundplane.hil.tracker import TrackedPass
from groundplane.tracking.sites import Site

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CATALOG = DATA / "satellites-2026-08.3le"
TABLE_STEP_S = 0.5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HamlibDaemon:
    """One ``rotctld``/``rigctld`` process on a loopback port; can be killed and restarted."""

    def __init__(self, binary: str, port: int, config: str | None) -> None:
        self.binary = binary
        self.port = port
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_s: float = 5.0) -> None:
        args = [self.binary, "-m", "1", "-T", "127.0.0.1", "-t", str(self.port)]
        if self.config:
            args += ["-C", self.config]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with {self.process.returncode} on port {self.port}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.02)
                continue
            # Something answered; make sure it is ours (a daemon that lost the port race to
            # another process exits instead of listening).
            time.sleep(0.05)
            if self.process.poll() is None:
                return

        raise RuntimeError(f"{self.binary} did not listen on port {self.port} within {wait_s} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


DaemonFactory = Callable[..., HamlibDaemon]


@pytest.fixture
def hamlib_daemon() -> Iterator[DaemonFactory]:
    """Start ``rotctld``/``rigctld -m 1`` on free loopback ports; all are killed at teardown."""
    started: list[HamlibDaemon] = []

    def start(binary: str, config: str | None = None) -> HamlibDaemon:
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not installed (apt-get install libhamlib-utils)")
        last_error: Exception | None = None
        for _ in range(5):  # another process may grab the free port between probe and bind
            daemon = HamlibDaemon(binary, free_port(), config)
            started.append(daemon)
            try:
                daemon.start()
                return daemon
            except RuntimeError as exc:
                last_error = exc
                daemon.kill()
        raise RuntimeError(f"could not start {binary}: {last_error}")

    yield start
    for daemon in started:
        daemon.kill()


# -- a real ISS pass -------------------------------------------------------------------------


@dataclass(frozen=True)
class PassFixture:
    """A tabulated pass: site, AOS/LOS, and az/el/range-rate every TABLE_STEP_S seconds."""

    site: Site
    satellite_id: str
    aos: datetime
    los: datetime
    start: datetime
    times_s: np.ndarray  # seconds after ``start``
    azimuth_unwrapped_deg: np.ndarray
    elevation_deg: np.ndarray
    range_rate_km_s: np.ndarray

    def pointing(self, at: datetime) -> tuple[float, float, float]:
        t = (at - self.start).total_seconds()
        az = float(np.interp(t, self.times_s, self.azimuth_unwrapped_deg)) % 360.0
        el = float(np.interp(t, self.times_s, self.elevation_deg))
        rr = float(np.interp(t, self.times_s, self.range_rate_km_s))
        return az, el, rr

    def tracked(self, step_s: float = 1.0, satellite_id: str | None = None) -> TrackedPass:
        total_s = (self.los - self.aos).total_seconds()
        count = math.ceil(total_s / step_s) + 1
        samples = []
        for index in range(count):
            at = self.aos + timedelta(seconds=min(total_s, index * step_s))
            az, el, _ = self.pointing(at)
            samples.append(PassSample(at, az, el))
        return TrackedPass(satellite_id or self.satellite_id, self.aos, self.los, tuple(samples))

    def max_axis_rate_deg_s(self) -> float:
        """Fastest change of azimuth or elevation over the pass (simulated °/s)."""
        inside = self.elevation_deg >= 0.0
        rates = np.maximum(
            np.abs(np.gradient(self.azimuth_unwrapped_deg, self.times_s)),
            np.abs(np.gradient(self.elevation_deg, self.times_s)),
        )
        return float(np.max(rates[inside]))


def _iss_lines() -> tuple[str, str]:
    lines = CATALOG.read_text().splitlines()
    index = lines.index("ISS (ZARYA)")
    return lines[index + 1], lines[index + 2]


def iss_pass(site: Site, aos_after: datetime, margin_s: float = 120.0) -> PassFixture:
    """The first ISS pass over ``site`` after ``aos_after`` (elevation above the site minimum)."""
    from skyfield.api import EarthSatellite, load, wgs84

    ts = load.timescale(builtin=True)
    line1, line2 = _iss_lines()
    satellite = EarthSatellite(line1, line2, "ISS (ZARYA)", ts)
    topos = wgs84.latlon(site.lat_deg, site.lon_deg, elevation_m=site.alt_m)
    t0 = ts.from_datetime(aos_after)
    times, events = satellite.find_events(
        topos,
        t0,
        ts.from_datetime(aos_after + timedelta(days=1)),
        altitude_degrees=site.min_elevation_deg,
    )
    rise = next(i for i, e in enumerate(events) if e == 0 and i + 2 < len(events))
    aos = times[rise].utc_datetime().replace(microsecond=0) + timedelta(seconds=1)
    los = times[rise + 2].utc_datetime().replace(microsecond=0)
    start = aos - timedelta(seconds=margin_s)
    span_s = (los - start).total_seconds() + margin_s
    offsets = np.arange(0.0, span_s + TABLE_STEP_S, TABLE_STEP_S)
    grid = ts.from_datetimes([start + timedelta(seconds=float(o)) for o in offsets])
    topocentric = (satellite - topos).at(grid)
    alt, az, _ = topocentric.altaz()
    *_, range_rate = topocentric.frame_latlon_and_rates(topos)
    return PassFixture(
        site=site,
        satellite_id="25544",
        aos=aos.astimezone(UTC),
        los=los.astimezone(UTC),
        start=start.astimezone(UTC),
        times_s=offsets,
        azimuth_unwrapped_deg=np.degrees(np.unwrap(np.radians(az.degrees))),
        elevation_deg=np.asarray(alt.degrees, dtype=np.float64),
        range_rate_km_s=np.asarray(range_rate.km_per_s, dtype=np.float64),
    )


#: Punta Arenas (shared ground-stations.csv); its ISS pass at 2026-08-15 21:32 UTC rises at
#: az ≈355°, crosses north and sets at az ≈94° (max elevation ≈9°), a ~500 s pass.
PUNTA_ARENAS = Site("punta-arenas", -52.9380, -70.8570, 40.0, "Punta Arenas")
#: Wallops; its ISS pass at 2026-08-15 13:07 UTC rises at az ≈301° and crosses north to ≈43°.
WALLOPS = Site("wallops", 37.9249, -75.4765, 10.0, "Wallops")


@pytest.fixture(scope="session")
def punta_arenas_pass() -> PassFixture:
    """Real ISS pass over Punta Arenas crossing north (AOS 2026-08-15 ≈21:32:27Z)."""
    return iss_pass(PUNTA_ARENAS, datetime(2026, 8, 15, 21, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def wallops_pass() -> PassFixture:
    """Real ISS pass over Wallops crossing north (AOS 2026-08-15 ≈13:07:32Z)."""
    return iss_pass(WALLOPS, datetime(2026, 8, 15, 13, 0, tzinfo=UTC))
