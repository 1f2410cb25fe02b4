"""Fixtures for the hardware-in-the-loop tests: real Hamlib dummy daemons and a real ISS pass.

``rotctld -m 1`` / ``rigctld -m 1`` (Hamlib's dummy rotator and radio) are started on free
loopback ports and killed at teardown. The tests skip, saying why, when the binaries are missing
(``apt-get install libhamlib-utils``).

Pointing comes from Skyfield (test-only reference) for the ISS elements in the 2026-08 catalog
(data/satellites-2026-08.3le), tabulated every 0.5 s and interpolated, so the tracker's callable
is cheap and exact to well under the tolerances used.
"""

from __future__ import annotations

import functools
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from groundplane.hil.rotator import PassSample
from groundplane.hil.tracker import TrackedPass
from groundplane.orbit.sites import Site

from ..data import DATA

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


def start_daemon(binary: str, config: str | None, started: list[HamlibDaemon]) -> HamlibDaemon:
    """Start ``binary -m 1`` on a free loopback port; every process tried goes to ``started``."""
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


@pytest.fixture
def hamlib_daemon() -> Iterator[DaemonFactory]:
    """Start ``rotctld``/``rigctld -m 1`` on free loopback ports; all are killed at teardown."""
    started: list[HamlibDaemon] = []

    def start(binary: str, config: str | None = None) -> HamlibDaemon:
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not installed (apt-get install libhamlib-utils)")
        return start_daemon(binary, config, started)

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


#: Punta Arenas (data/ground-stations.csv); its ISS pass at 2026-08-15 21:32 UTC rises at
#: az ≈355°, crosses north and sets at az ≈94° (max elevation ≈9°), a ~500 s pass.
PUNTA_ARENAS = Site("punta-arenas", -52.9380, -70.8570, 40.0, "Punta Arenas")
#: Wallops; its ISS pass at 2026-08-15 13:07 UTC rises at az ≈301° and crosses north to ≈43°.
WALLOPS = Site("wallops", 37.9249, -75.4765, 10.0, "Wallops")


@pytest.fixture(scope="session")
def punta_arenas_pass() -> PassFixture:
    """Real ISS pass over Punta Arenas crossing north (AOS 2026-08-15 ≈21:32:27Z)."""
    return iss_pass(PUNTA_ARENAS, datetime(2026, 8, 15, 21, 0, tzinfo=UTC))


@functools.cache
def _wallops_pass() -> PassFixture:
    return iss_pass(WALLOPS, datetime(2026, 8, 15, 13, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def wallops_pass() -> PassFixture:
    """Real ISS pass over Wallops crossing north (AOS 2026-08-15 ≈13:07:32Z)."""
    return _wallops_pass()


# -- a 0–450° rotctld pre-positioned for the Wallops pass, started before the tests run --------
#
# The dummy starts at az 0° and slews 6 °/s (wall): reaching the Wallops pass's AOS azimuth
# (≈301°) takes ≈50 s. The daemon is therefore started, and commanded there, as soon as
# collection has finished (only when the test needing it is selected); it slews while the other
# tests run. ``pytest_collection_finish`` is used rather than ``pytest_sessionstart`` because the
# latter only reaches conftests loaded at start-up, which this one is not in a whole-suite run.
# Left alone the dummy's slew is exact in wall time, so the test waits for whatever is left of
# it, however busy the machine, and nothing it checks depends on how long that was.

#: rotctld -C limits of a rotator with 90° of overwind past north.
OVERWIND_CONFIG = "min_az=0,max_az=450"
#: The test that uses :func:`overwind_rotctld` (tests/hil/test_tracker.py).
OVERWIND_TEST = "test_pass_crossing_north_is_overwound_without_unwind"


@dataclass(frozen=True)
class PrepositionedRotator:
    """A running 0–450° rotctld commanded to ``azimuth_deg``/0°."""

    daemon: HamlibDaemon
    azimuth_deg: float


_PREPOSITIONED = pytest.StashKey[PrepositionedRotator]()


def command_position(port: int, azimuth_deg: float, elevation_deg: float) -> None:
    """Send one ``P`` to the rotctld on ``port`` (blocking; hooks run outside any event loop)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.settimeout(2.0)
        sock.sendall(f"+P {azimuth_deg:.2f} {elevation_deg:.2f}\n".encode("ascii"))
        reply = b""
        while b"RPRT" not in reply or not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if b"RPRT 0" not in reply:
        raise RuntimeError(f"rotctld on port {port} refused P {azimuth_deg:.2f}: {reply!r}")


def wallops_aos_azimuth_deg() -> float:
    """Geographic azimuth at AOS of the Wallops pass: the mechanical AOS azimuth on a 0–450°
    rotator (the pass sweeps ≈301° → ≈403°, which only fits there)."""
    fixture = _wallops_pass()
    return fixture.pointing(fixture.aos)[0]


def start_prepositioned_rotctld(started: list[HamlibDaemon]) -> PrepositionedRotator:
    daemon = start_daemon("rotctld", OVERWIND_CONFIG, started)
    azimuth_deg = round(wallops_aos_azimuth_deg(), 2)
    command_position(daemon.port, azimuth_deg, 0.0)
    return PrepositionedRotator(daemon, azimuth_deg)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(item.name == OVERWIND_TEST for item in session.items):
        return
    if shutil.which("rotctld") is None:
        return  # the fixture skips (or fails under GROUNDPLANE_REQUIRE_ALL) with the reason
    started: list[HamlibDaemon] = []

    def kill_all() -> None:
        for daemon in started:
            daemon.kill()

    # Registered before starting: whatever happens next, no daemon outlives the session.
    session.config.add_cleanup(kill_all)
    try:
        session.stash[_PREPOSITIONED] = start_prepositioned_rotctld(started)
    except (OSError, RuntimeError):
        kill_all()  # the fixture starts its own and reports the error if it recurs


def pytest_sessionfinish(session: pytest.Session) -> None:
    rotator = session.stash.get(_PREPOSITIONED, None)
    if rotator is not None:
        rotator.daemon.kill()


@pytest.fixture
def overwind_rotctld(request: pytest.FixtureRequest) -> Iterator[PrepositionedRotator]:
    """rotctld limited to 0–450°, commanded to the Wallops pass's AOS azimuth at el 0°.

    Started after collection (see above) when possible, else here (the test then waits the
    whole slew). Killed at teardown, and at the end of the session if the test never ran.
    """
    if shutil.which("rotctld") is None:
        pytest.skip("rotctld not installed (apt-get install libhamlib-utils)")
    started: list[HamlibDaemon] = []
    rotator = request.session.stash.get(_PREPOSITIONED, None)
    if (
        rotator is None
        or rotator.daemon.process is None
        or rotator.daemon.process.poll() is not None
    ):
        rotator = start_prepositioned_rotctld(started)
    try:
        yield rotator
    finally:
        rotator.daemon.kill()
        for daemon in started:
            daemon.kill()
