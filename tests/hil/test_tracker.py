"""The tracking loops against the real dummy daemons over a sped-up real ISS pass, and faults.

How "the rotator follows the pass" is judged without depending on how busy the machine is.
Hamlib's dummy rotator moves in *wall* time while the pass is replayed in simulated time, so any
delay in scheduling the tracker, the daemon or the observer shows up as pointing error; a fixed
tolerance on that error (as these tests once had) fails on a loaded machine. Instead:

* the tracker is judged by what it commanded, against the plan, exactly: every command is the
  plan's safe target for the predicted pointing at the instant it was computed for, and every
  cycle that read a position more than the threshold away from its target sent a command;
* the rotator is judged against what those commands, *at the instants they were actually sent*,
  allow: every position it reports lies inside the envelope of a Hamlib 4.5 dummy
  (``rotators/dummy/dummy.c``) driven by them. That dummy moves each axis toward its target at
  360°/min of wall time, integrates the motion on each position query in whole milliseconds (up
  to 1 ms gained or lost per query) and restarts its motion clock on a position command without
  integrating first (the motion since the last query is lost; it lies between the tracker's cycle
  start and the command's acknowledgement). Delays only widen the envelope by what they cost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pytest
from structlog.testing import capture_logs

from groundplane.hil.hamlib import (
    Backoff,
    HamlibConnectionError,
    RigClient,
    RotatorClient,
    RotatorLimits,
)
from groundplane.hil.rotator import PassPlan, plan_pass
from groundplane.hil.tracker import (
    SPEED_OF_LIGHT_KM_S,
    RadioPlan,
    StationTracker,
    TrackedPass,
    TrackerConfig,
    TrackerStatus,
)
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument

from .conftest import DaemonFactory, HamlibDaemon, PassFixture, PrepositionedRotator

#: Hamlib 4.5's dummy rotator (see the module docstring): wall °/s per axis, and how much motion
#: one position query may gain or lose (whole milliseconds).
DUMMY_SLEW_DEG_S = 6.0
DUMMY_QUERY_SLACK_DEG = DUMMY_SLEW_DEG_S * 0.001
#: Slack on a reported position: two decimals, plus the envelope's time grid.
ENVELOPE_SLACK_DEG = 0.02
ENVELOPE_STEP_S = 0.02
THRESHOLD_DEG = 0.5
CYCLE_S = 1.0
LIMIT_RESOLUTION_DEG = 0.01  # positions are reported with two decimals
#: Largest decrease of the reported azimuth still counted as "not turning back": the dummy
#: reports two decimals.
REVERSAL_TOLERANCE_DEG = 0.05
DOWNLINK_HZ = 437_800_000.0
UPLINK_HZ = 145_990_000.0
FAST_BACKOFF = Backoff(initial_s=0.05, max_s=0.4)
#: What rotctld -m 1 reports without -C (test_hamlib).
DUMMY_LIMITS = RotatorLimits(-180.0, 450.0, 0.0, 90.0)
TRACKING_PHASES = ("prepositioning", "tracking")


def config(**overrides: object) -> TrackerConfig:
    values: dict[str, object] = {
        "rotator_cycle_s": CYCLE_S,
        "pointing_threshold_deg": THRESHOLD_DEG,
        "stall_min_motion_deg": 0.02,
        # Cycle-level stall logic is what these tests check; the wall-time guard (for high
        # speeds with a real rotator) would stretch detection over many 50 ms cycles.
        "stall_min_wall_s": 0.0,
        "backoff": FAST_BACKOFF,
        "park_timeout_s": 5.0,
    }
    values.update(overrides)
    return TrackerConfig(**values)  # type: ignore[arg-type]


@dataclass
class Observation:
    """One position read on a connection of our own: asked at ``sent_at``, answered by ``at``."""

    sent_at: datetime
    at: datetime
    azimuth_deg: float
    elevation_deg: float


async def observe_rotator(
    port: int, clock: SimulatedClock, out: list[Observation], period_s: float = 0.05
) -> None:
    """Poll rotctld on a connection of our own, independent of the tracker's."""
    rot = RotatorClient("127.0.0.1", port, io_timeout_s=1.0)
    try:
        while True:
            try:
                if not rot.connected:
                    await rot.connect()
                sent_at = clock.now()
                az, el = await rot.get_position()
                out.append(Observation(sent_at, clock.now(), az, el))
            except HamlibConnectionError:
                pass
            await asyncio.sleep(period_s)
    finally:
        await rot.close()


async def run_with(
    main: Coroutine[object, object, TrackerStatus],
    *background: Callable[[], Coroutine[object, object, None]],
) -> TrackerStatus:
    """Run ``main`` with background tasks that are cancelled once it finishes."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(make(), name=f"test-bg-{i}") for i, make in enumerate(background)
        ]
        try:
            result = await main
        finally:
            for task in tasks:
                task.cancel()
    return result


@dataclass(frozen=True)
class Command:
    """A position command the tracker sent: computed at ``computed_at`` (its cycle's start,
    before that cycle's position query), acknowledged by ``acknowledged_by``."""

    computed_at: datetime
    acknowledged_by: datetime
    target: tuple[float, float]


def commands_of(statuses: list[TrackerStatus]) -> list[Command]:
    """The tracking commands in ``statuses``, in order (the park command is not one)."""
    commands: dict[datetime, Command] = {}
    for status in statuses:
        at = status.commanded_at
        if status.phase in TRACKING_PHASES and at is not None and at not in commands:
            assert status.commanded_azimuth_deg is not None
            assert status.commanded_elevation_deg is not None
            target = (status.commanded_azimuth_deg, status.commanded_elevation_deg)
            commands[at] = Command(at, status.at, target)
    return sorted(commands.values(), key=lambda c: c.computed_at)


def plan_target(plan: PassPlan, fixture: PassFixture, at: datetime) -> tuple[float, float]:
    """What the tracker must command at ``at``: the pre-position before AOS, then the plan."""
    if at < fixture.aos:
        return plan.preposition
    return plan.command_for(at, *fixture.pointing(at)[:2])


def assert_commands_follow_plan(
    statuses: list[TrackerStatus], *, plan: PassPlan, fixture: PassFixture
) -> int:
    """Every command is the plan's target for its instant, and every cycle that read a position
    more than the threshold off its target commanded; returns the number of commands."""
    commands = commands_of(statuses)
    for command in commands:
        expected = plan_target(plan, fixture, command.computed_at)
        assert command.target == pytest.approx(expected, abs=1e-9), (command, expected)
    previous_command: datetime | None = None
    seen_reports: set[datetime] = set()
    for status in statuses:
        commanded_now = status.commanded_at != previous_command
        previous_command = status.commanded_at
        reported_at = status.reported_at
        if status.phase not in TRACKING_PHASES or reported_at is None:
            continue
        if reported_at in seen_reports:
            continue  # a later snapshot of the same cycle (e.g. a radio update)
        seen_reports.add(reported_at)
        assert status.reported_azimuth_deg is not None
        assert status.reported_elevation_deg is not None
        if status.phase == "prepositioning":
            target = plan.preposition
        else:
            assert status.predicted_azimuth_deg is not None
            assert status.predicted_elevation_deg is not None
            target = plan.command_for(
                reported_at, status.predicted_azimuth_deg, status.predicted_elevation_deg
            )
        error = max(
            abs(target[0] - status.reported_azimuth_deg),
            abs(target[1] - status.reported_elevation_deg),
        )
        assert commanded_now or error <= THRESHOLD_DEG, (status, target, error)
    return len(commands)


def _pursue(
    low: float, high: float, target_low: float, target_high: float, *, fast: float, slow: float
) -> tuple[float, float]:
    """One step of the envelope of one axis: ``high`` is as far up as the dummy can be (moving
    up at full speed, down as slowly as it may), ``low`` the mirror image."""
    if high < target_high:
        high = min(high + fast, target_high)
    elif high > target_high:
        high = max(high - slow, target_high)
    if low > target_low:
        low = max(low - fast, target_low)
    elif low < target_low:
        low = min(low + slow, target_low)
    return low, high


@dataclass(frozen=True)
class Envelope:
    """Per-axis bounds of where the dummy can be, every ``ENVELOPE_STEP_S`` simulated seconds."""

    start: datetime
    low: np.ndarray  # (steps, 2): azimuth, elevation
    high: np.ndarray

    def bounds(self, first: datetime, last: datetime) -> tuple[np.ndarray, np.ndarray]:
        """The widest bounds over ``first``…``last`` (one grid step of margin each side)."""
        i = max(0, int((first - self.start).total_seconds() / ENVELOPE_STEP_S) - 1)
        j = min(len(self.low), int((last - self.start).total_seconds() / ENVELOPE_STEP_S) + 2)
        assert i < j, (first, last, self.start)
        return self.low[i:j].min(axis=0), self.high[i:j].max(axis=0)


def dummy_envelope(
    *,
    start: datetime,
    end: datetime,
    position: tuple[float, float],
    target: tuple[float, float],
    commands: list[Command],
    queries: list[datetime],
    speed: float,
    resets: tuple[tuple[datetime, datetime], ...] = (),
) -> Envelope:
    """Where a Hamlib 4.5 dummy at ``position`` heading for ``target`` at ``start`` can be
    afterwards, driven by ``commands`` and queried at ``queries`` (simulated times). Each reset
    ``(from, to)`` is a daemon killed from ``from`` and running afresh (0°/0°) by ``to``."""
    steps = int((end - start).total_seconds() / ENVELOPE_STEP_S) + 1
    fast = DUMMY_SLEW_DEG_S / speed * ENVELOPE_STEP_S
    computed = [(c.computed_at - start).total_seconds() for c in commands]
    acked = [(c.acknowledged_by - start).total_seconds() for c in commands]
    query_steps = np.bincount(
        [
            min(steps - 1, max(0, int((q - start).total_seconds() / ENVELOPE_STEP_S)))
            for q in queries
        ],
        minlength=steps,
    )
    kills = sorted((a - start).total_seconds() for a, _ in resets)
    low = list(position)
    high = list(position)
    definite = tuple(target)
    ignore_before = -math.inf
    lows = np.empty((steps, 2))
    highs = np.empty((steps, 2))
    done = 0  # commands known to have been processed
    for step in range(steps):
        t0 = step * ENVELOPE_STEP_S
        t1 = t0 + ENVELOPE_STEP_S
        if kills and t0 >= kills[0]:
            ignore_before = kills.pop(0)
            low, high, definite = [0.0, 0.0], [0.0, 0.0], (0.0, 0.0)
        while done < len(commands) and acked[done] <= t0:
            if computed[done] >= ignore_before:
                definite = commands[done].target
            done += 1
        candidates = [definite]
        k = done
        while k < len(commands) and computed[k] < t1:
            if computed[k] >= ignore_before:
                candidates.append(commands[k].target)
            k += 1
        # A command in flight: the motion since the last query may be lost.
        slow = 0.0 if len(candidates) > 1 else fast
        for axis in range(2):
            target_low = min(c[axis] for c in candidates)
            target_high = max(c[axis] for c in candidates)
            low[axis], high[axis] = _pursue(
                low[axis], high[axis], target_low, target_high, fast=fast, slow=slow
            )
            for _ in range(int(query_steps[step])):
                low[axis], high[axis] = _pursue(
                    low[axis],
                    high[axis],
                    target_low,
                    target_high,
                    fast=DUMMY_QUERY_SLACK_DEG,
                    slow=-DUMMY_QUERY_SLACK_DEG,
                )
        lows[step] = low
        highs[step] = high
    return Envelope(start, lows, highs)


def assert_obeys_commands(
    observations: list[Observation],
    statuses: list[TrackerStatus],
    *,
    start: datetime,
    until: datetime,
    position: tuple[float, float],
    target: tuple[float, float],
    speed: float,
    resets: tuple[tuple[datetime, datetime], ...] = (),
) -> int:
    """Every position reported between ``start`` and ``until`` lies inside the envelope of a
    dummy driven by the tracker's commands as they were sent; returns how many were checked.
    Reads overlapping a reset are skipped (they may come from either daemon)."""
    queries = [o.at for o in observations] + sorted(
        {s.reported_at for s in statuses if s.reported_at is not None}
    )
    envelope = dummy_envelope(
        start=start,
        end=until,
        position=position,
        target=target,
        commands=commands_of(statuses),
        queries=queries,
        speed=speed,
        resets=resets,
    )
    checked = 0
    for obs in observations:
        if obs.sent_at < start or obs.at >= until:
            continue
        if any(obs.sent_at < b and obs.at > a for a, b in resets):
            continue
        low, high = envelope.bounds(obs.sent_at, obs.at)
        reported = (obs.azimuth_deg, obs.elevation_deg)
        for axis in range(2):
            assert low[axis] - ENVELOPE_SLACK_DEG <= reported[axis], (obs, low, high)
            assert reported[axis] <= high[axis] + ENVELOPE_SLACK_DEG, (obs, low, high)
        checked += 1
    return checked


def expected_downlink(fixture: PassFixture, at: datetime) -> int:
    return round(DOWNLINK_HZ * (1.0 - fixture.pointing(at)[2] / SPEED_OF_LIGHT_KM_S))


def expected_uplink(fixture: PassFixture, at: datetime) -> int:
    return round(UPLINK_HZ * (1.0 + fixture.pointing(at)[2] / SPEED_OF_LIGHT_KM_S))


async def test_real_pass_is_followed_with_doppler(
    hamlib_daemon: DaemonFactory, punta_arenas_pass: PassFixture
) -> None:
    """Over the whole ISS pass (sped up 40×) the tracker commands the plan's target for each
    instant whenever rotctld reports it more than the threshold off, rotctld's reported position
    is always one its commands allow, never leaves the limits, and crosses north without an
    unwind; the frequencies rigctld holds are the Doppler-corrected ones for the instants they
    were commanded for; the rotator parks after LOS."""
    speed = 40.0
    fixture = punta_arenas_pass
    rotd, rigd = hamlib_daemon("rotctld"), hamlib_daemon("rigctld")
    start = fixture.aos - timedelta(seconds=60)
    clock = SimulatedClock(start, speed)
    tracked = fixture.tracked()
    statuses: list[TrackerStatus] = []
    observations: list[Observation] = []
    rig_readings: list[tuple[float, float]] = []
    async with (
        RotatorClient("127.0.0.1", rotd.port) as rot,
        RigClient("127.0.0.1", rigd.port) as rig,
    ):
        tracker = StationTracker(
            site=fixture.site, clock=clock, rotator=rot, radio=rig, config=config()
        )
        tracker.hub.subscribe(statuses.append)

        async def observe_rig() -> None:
            async with RigClient("127.0.0.1", rigd.port) as reader:
                while True:
                    rig_readings.append(
                        (await reader.get_frequency(), await reader.get_split_frequency())
                    )
                    await asyncio.sleep(0.1)

        final = await run_with(
            tracker.track(tracked, fixture.pointing, RadioPlan(DOWNLINK_HZ, UPLINK_HZ)),
            lambda: observe_rotator(rotd.port, clock, observations),
            observe_rig,
        )
        limits = await rot.read_limits()
    assert final.phase == "parked"
    assert final.rotator_error_replies == 0
    assert final.radio_error_replies == 0
    assert final.plan_mode == "direct"  # −180..450°: the north crossing is −5° → 94°
    plan = plan_pass(tracked.samples, limits, fixture.site, current_azimuth_deg=0.0)
    assert assert_commands_follow_plan(statuses, plan=plan, fixture=fixture) > 50
    checked = assert_obeys_commands(
        observations,
        statuses,
        start=start,
        until=fixture.los,
        position=(0.0, 0.0),
        target=(0.0, 0.0),
        speed=speed,
    )
    assert checked > 100
    for obs in observations:
        assert limits.contains(obs.azimuth_deg, obs.elevation_deg, LIMIT_RESOLUTION_DEG)
    during = [o.azimuth_deg for o in observations if fixture.aos <= o.at < fixture.los]
    # No unwind: through the pass the azimuth only ever increases, and it did cross north.
    assert float(np.min(np.diff(during))) >= -REVERSAL_TOLERANCE_DEG
    assert min(during) < 0.0 < max(during)
    # Radio: every command was the Doppler-corrected frequency for its instant ...
    radio = [s for s in statuses if s.radio_commanded_at is not None]
    assert len(radio) > 50
    for status in radio:
        assert status.radio_commanded_at is not None
        assert status.downlink_hz == expected_downlink(fixture, status.radio_commanded_at)
        assert status.uplink_hz == expected_uplink(fixture, status.radio_commanded_at)
    # ... and what rigctld holds is always one of the commanded values, the last one at the end.
    sent_down = {s.downlink_hz for s in radio}
    sent_up = {s.uplink_hz for s in radio}
    settled = [(f, i) for f, i in rig_readings if f != 145_000_000.0]
    assert len(settled) > 20
    for down, up in settled:
        assert round(down) in sent_down
        assert round(up) in sent_up
    async with RigClient("127.0.0.1", rigd.port) as rig:
        assert await rig.get_frequency() == radio[-1].downlink_hz
        assert await rig.get_split_frequency() == radio[-1].uplink_hz


async def test_narrowed_limits_are_never_left(
    hamlib_daemon: DaemonFactory, punta_arenas_pass: PassFixture
) -> None:
    """With rotctld limited to 0–30° azimuth the pass (−5° → 94°) is clamped: the reported
    position never leaves 0–30°, the commands are the plan's safe targets, and the reported
    position is always one those commands allow."""
    speed = 60.0
    fixture = punta_arenas_pass
    rotd = hamlib_daemon("rotctld", "min_az=0,max_az=30")
    start = fixture.aos - timedelta(seconds=60)
    clock = SimulatedClock(start, speed)
    tracked = fixture.tracked()
    statuses: list[TrackerStatus] = []
    observations: list[Observation] = []
    async with RotatorClient("127.0.0.1", rotd.port) as rot:
        tracker = StationTracker(site=fixture.site, clock=clock, rotator=rot, config=config())
        tracker.hub.subscribe(statuses.append)
        final = await run_with(
            tracker.track(tracked, fixture.pointing),
            lambda: observe_rotator(rotd.port, clock, observations),
        )
        limits = await rot.read_limits()
    assert (limits.min_azimuth_deg, limits.max_azimuth_deg) == (0.0, 30.0)
    assert final.plan_mode == "clamped"
    assert final.rotator_error_replies == 0  # every command was inside the limits
    assert len(observations) > 50
    for obs in observations:
        assert limits.contains(obs.azimuth_deg, obs.elevation_deg, LIMIT_RESOLUTION_DEG)
    assert max(o.azimuth_deg for o in observations) > 29.0  # it did reach the stop
    plan = plan_pass(tracked.samples, limits, fixture.site, current_azimuth_deg=0.0)
    assert assert_commands_follow_plan(statuses, plan=plan, fixture=fixture) > 20
    checked = assert_obeys_commands(
        observations,
        statuses,
        start=start,
        until=fixture.los,
        position=(0.0, 0.0),
        target=(0.0, 0.0),
        speed=speed,
    )
    assert checked > 50


async def test_tracking_resumes_after_rotctld_restart(
    hamlib_daemon: DaemonFactory, punta_arenas_pass: PassFixture
) -> None:
    """rotctld killed mid-pass and restarted on the same port: the tracker reconnects with
    backoff and goes on commanding the plan's targets; the restarted dummy (at 0°/0°) moves
    toward the pass again, always to positions those commands allow."""
    speed = 40.0
    fixture = punta_arenas_pass
    rotd = hamlib_daemon("rotctld")
    start = fixture.aos - timedelta(seconds=60)
    clock = SimulatedClock(start, speed)
    tracked = fixture.tracked()
    observations: list[Observation] = []
    outage: list[tuple[datetime, datetime]] = []
    statuses: list[TrackerStatus] = []
    down_s = 0.3

    async def chaos(daemon: HamlibDaemon) -> None:
        kill_at = fixture.aos + (fixture.los - fixture.aos) * 0.3
        await clock.sleep((kill_at - clock.now()).total_seconds())
        killed_at = clock.now()
        daemon.kill()
        await asyncio.sleep(down_s)
        daemon.start()
        outage.append((killed_at, clock.now()))
        await asyncio.Event().wait()

    async with RotatorClient("127.0.0.1", rotd.port, io_timeout_s=0.5) as rot:
        tracker = StationTracker(site=fixture.site, clock=clock, rotator=rot, config=config())
        tracker.hub.subscribe(statuses.append)
        final = await run_with(
            tracker.track(tracked, fixture.pointing),
            lambda: observe_rotator(rotd.port, clock, observations),
            lambda: chaos(rotd),
        )
    assert outage
    assert final.rotator_reconnects >= 1
    assert final.rotator_connected
    assert final.phase == "parked"
    plan = plan_pass(tracked.samples, DUMMY_LIMITS, fixture.site, current_azimuth_deg=0.0)
    assert assert_commands_follow_plan(statuses, plan=plan, fixture=fixture) > 20
    restarted_at = outage[0][1]
    reconnected_at = next(s.at for s in statuses if s.rotator_reconnects >= 1)
    assert any(c.computed_at >= reconnected_at for c in commands_of(statuses))
    after = [o for o in observations if o.sent_at > restarted_at]
    assert len(after) > 50
    assert after[0].azimuth_deg < 1.0  # the restarted dummy starts from 0°/0° ...
    assert max(o.azimuth_deg for o in after) > 10.0  # ... and follows the pass again
    checked = assert_obeys_commands(
        observations,
        statuses,
        start=start,
        until=fixture.los,
        position=(0.0, 0.0),
        target=(0.0, 0.0),
        speed=speed,
        resets=tuple(outage),
    )
    assert checked > 100


class FakeRotctld:
    """A rotctld stand-in for faults the dummy cannot produce: it never moves, and can refuse
    every set_pos with ``RPRT -9`` (command rejected)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.set_pos = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeRotctld:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := (await reader.readline()).decode().strip():
            command = line.lstrip("+")
            if command == "p":
                reply = "get_pos:\nAzimuth: 0.00\nElevation: 0.00\nRPRT 0\n"
            elif command.startswith("P "):
                self.set_pos += 1
                reply = f"set_pos: {command[2:]}\nRPRT {-9 if self.refuse else 0}\n"
            elif command == "\\dump_state":
                reply = (
                    "dump_state:\nMinimum Azimuth: -180.0\nMaximum Azimuth: 450.0\n"
                    "Minimum Elevation: 0.0\nMaximum Elevation: 90.0\nRPRT 0\n"
                )
            else:
                reply = f"{command}:\nRPRT -4\n"
            writer.write(reply.encode())
            await writer.drain()
        writer.close()
        await writer.wait_closed()


def short_pass(
    fixture: PassFixture, seconds: float, satellite_id: str | None = None
) -> TrackedPass:
    """The first ``seconds`` after mid-pass, as a pass of its own (the rotator must move far)."""
    middle = fixture.aos + (fixture.los - fixture.aos) / 2
    full = fixture.tracked(satellite_id=satellite_id)
    samples = tuple(
        s for s in full.samples if middle <= s.at <= middle + timedelta(seconds=seconds)
    )
    return TrackedPass(full.satellite_id, samples[0].at, samples[-1].at, samples)


async def test_stalled_rotator_is_reported_within_two_cycles(
    punta_arenas_pass: PassFixture,
) -> None:
    """A rotator commanded ~40° away whose reported position never changes is reported
    stalled (status, counter, structlog warning) two cycles after the first command."""
    tracked = short_pass(punta_arenas_pass, 20.0)
    clock = SimulatedClock(tracked.aos, 20.0)
    statuses: list[TrackerStatus] = []
    async with FakeRotctld() as fake, RotatorClient("127.0.0.1", fake.port) as rot:
        tracker = StationTracker(
            site=punta_arenas_pass.site, clock=clock, rotator=rot, config=config()
        )
        tracker.hub.subscribe(statuses.append)
        with capture_logs() as logs:
            final = await tracker.track(tracked, punta_arenas_pass.pointing)
    assert final.stalls == 1
    assert final.stalled
    readings = [s for s in statuses if s.reported_at is not None]
    readings = list({s.reported_at: s for s in readings}.values())  # one per cycle
    first_command = next(i for i, s in enumerate(readings) if s.commanded_at is not None)
    first_stalled = next(i for i, s in enumerate(readings) if s.stalled)
    assert first_stalled - first_command <= 2
    assert any(e["event"] == "hil_fault" and "stalled" in e["fault"] for e in logs)


async def test_error_replies_are_counted_and_logged(punta_arenas_pass: PassFixture) -> None:
    """Every ``RPRT -9`` to a position command is logged and counted; the loop keeps
    commanding each cycle, and a refused park leaves the status 'failed', not 'parked'."""
    tracked = short_pass(punta_arenas_pass, 10.0)
    clock = SimulatedClock(tracked.aos, 20.0)
    async with FakeRotctld(refuse=True) as fake, RotatorClient("127.0.0.1", fake.port) as rot:
        tracker = StationTracker(
            site=punta_arenas_pass.site, clock=clock, rotator=rot, config=config()
        )
        with capture_logs() as logs:
            final = await tracker.track(tracked, punta_arenas_pass.pointing)
    assert fake.set_pos >= 8  # ~one per cycle over 10 cycles, plus the park
    assert final.rotator_error_replies == fake.set_pos == rot.reply_errors
    error_logs = [e for e in logs if e["event"] == "hamlib_error_reply"]
    assert len(error_logs) == fake.set_pos
    assert all(e["rprt"] == -9 for e in error_logs)
    assert final.phase == "failed"
    assert final.last_fault is not None
    assert "RPRT -9" in final.last_fault


async def test_radio_is_reset_when_the_satellite_changes(
    hamlib_daemon: DaemonFactory, punta_arenas_pass: PassFixture
) -> None:
    """A second pass of the same satellite keeps the radio set-up; a different satellite
    re-enables split and re-sends the frequencies. Watchers see the snapshots until closed."""
    rigd = hamlib_daemon("rigctld")
    first = short_pass(punta_arenas_pass, 5.0)
    clock = SimulatedClock(first.aos, 20.0)
    plan = RadioPlan(DOWNLINK_HZ, UPLINK_HZ)
    async with (
        RigClient("127.0.0.1", rigd.port) as rig,
        RigClient("127.0.0.1", rigd.port) as operator,
    ):
        tracker = StationTracker(site=punta_arenas_pass.site, clock=clock, radio=rig)
        watched: list[TrackerStatus] = []

        async def watch() -> None:
            async for status in tracker.hub.watch():
                watched.append(status)

        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(watch(), name="test-watch")
            await tracker.track(first, punta_arenas_pass.pointing, plan)
            assert await operator.get_split() == (True, "VFOB")
            await operator.set_split(False, "VFOA")  # someone changes the radio by hand
            again = TrackedPass(
                first.satellite_id,
                clock.now(),
                clock.now() + timedelta(seconds=5),
                first.samples,
            )
            await tracker.track(again, punta_arenas_pass.pointing, plan)
            assert (await operator.get_split())[0] is False  # same satellite: no reset
            other = TrackedPass(
                "99999", clock.now(), clock.now() + timedelta(seconds=5), first.samples
            )
            await tracker.track(other, punta_arenas_pass.pointing, plan)
            assert await operator.get_split() == (True, "VFOB")  # new satellite: reset
            tracker.hub.close()
        assert watcher.done()
    assert {s.satellite_id for s in watched} >= {"25544", "99999"}
    assert all(not math.isnan(float(s.downlink_hz or 0)) for s in watched)


def test_config_rejects_nonsense() -> None:
    """Non-positive cycles and negative thresholds are refused with a message."""
    with pytest.raises(InvalidArgument, match="rotator_cycle_s"):
        TrackerConfig(rotator_cycle_s=0.0)
    with pytest.raises(InvalidArgument, match="downlink_hz"):
        RadioPlan(downlink_hz=-1.0)


logger = logging.getLogger(__name__)

PREPOSITION_POLL_S = 0.2


async def wait_until_reported(rotator: PrepositionedRotator) -> float:
    """Poll ``p`` until rotctld reports the pre-position; returns the wall seconds waited.

    No deadline: left alone, the dummy slews in wall time whatever the load (≈301° at 6 °/s is
    ≈50 s from its command). It fails only if the dummy stops short (two reads a poll apart
    that agree while it is not there), which no amount of waiting would cure."""
    began_s = time.monotonic()
    previous: tuple[float, float] | None = None
    async with RotatorClient("127.0.0.1", rotator.daemon.port) as rot:
        while True:
            az, el = await rot.get_position()
            if abs(az - rotator.azimuth_deg) < LIMIT_RESOLUTION_DEG and el == 0.0:
                return time.monotonic() - began_s
            if previous == (az, el):
                pytest.fail(
                    f"rotctld stopped at {az:.2f}°/{el:.2f}° when commanded to "
                    f"{rotator.azimuth_deg:.2f}°/0°"
                )
            previous = (az, el)
            await asyncio.sleep(PREPOSITION_POLL_S)


async def test_pass_crossing_north_is_overwound_without_unwind(
    overwind_rotctld: PrepositionedRotator,
    wallops_pass: PassFixture,
) -> None:
    """On a 0–450° rotctld the ISS pass over Wallops crossing north (≈301° → ≈403°, sped up
    20×) is planned as overwind and followed through 360°: the tracker commands the plan's
    target for each instant whenever rotctld is more than the threshold off, the reported
    mechanical azimuth never decreases during the pass (no mid-pass unwind), never leaves
    0–450°, is always a position the commands allow, and is beyond 360° at LOS, before parking;
    the rotator is never reported stalled."""
    # 20×: the pass's fastest axis moves 0.27 °/s, 5.4 °/s of wall time: the 502 s pass takes
    # 25 s, and to be past 360° at LOS the dummy needs only 59° of its 150° of slew in that time.
    speed = 20.0
    fixture = wallops_pass
    port = overwind_rotctld.daemon.port
    waited_s = await wait_until_reported(overwind_rotctld)
    logger.info("overwind test waited %.2f s for the pre-position", waited_s)
    start = fixture.aos - timedelta(seconds=10)
    clock = SimulatedClock(start, speed)
    tracked = fixture.tracked()
    observations: list[Observation] = []
    statuses: list[TrackerStatus] = []
    # The production stall guard (wall seconds without motion as well as cycles): at 20× a
    # cycle is 50 ms, and a loaded machine may run two in a row with no motion in between.
    stall_min_wall_s = TrackerConfig().stall_min_wall_s
    async with RotatorClient("127.0.0.1", port) as rot:
        limits = await rot.read_limits()
        start_position = await rot.get_position()
        tracker = StationTracker(
            site=fixture.site,
            clock=clock,
            rotator=rot,
            config=config(stall_min_wall_s=stall_min_wall_s),
        )
        tracker.hub.subscribe(statuses.append)
        final = await run_with(
            tracker.track(tracked, fixture.pointing),
            lambda: observe_rotator(port, clock, observations),
        )
    assert (limits.min_azimuth_deg, limits.max_azimuth_deg) == (0.0, 450.0)
    assert start_position == pytest.approx((overwind_rotctld.azimuth_deg, 0.0), abs=0.005)
    assert final.phase == "parked"
    assert final.rotator_error_replies == 0
    assert final.stalls == 0
    assert final.plan_mode == "overwind"
    before_los = [o for o in observations if o.at < fixture.los]
    azimuths = np.array([o.azimuth_deg for o in before_los])
    assert len(azimuths) > 200  # ≈25 s of polling every 50 ms
    # No unwind: from the pre-position to LOS the mechanical azimuth only ever increases ...
    assert float(np.min(np.diff(azimuths))) >= -REVERSAL_TOLERANCE_DEG
    for obs in observations:
        assert limits.contains(obs.azimuth_deg, obs.elevation_deg, LIMIT_RESOLUTION_DEG)
    # ... from the AOS azimuth through north (360°) to beyond it at LOS, where parking starts.
    assert azimuths[0] == pytest.approx(overwind_rotctld.azimuth_deg, abs=LIMIT_RESOLUTION_DEG)
    assert azimuths[-1] > 360.0
    plan = plan_pass(tracked.samples, limits, fixture.site, current_azimuth_deg=start_position[0])
    assert plan.mode == "overwind"
    assert assert_commands_follow_plan(statuses, plan=plan, fixture=fixture) > 50
    checked = assert_obeys_commands(
        observations,
        statuses,
        start=start,
        until=fixture.los,
        position=start_position,
        target=start_position,
        speed=speed,
    )
    assert checked > 200
