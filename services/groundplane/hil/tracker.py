"""The loops that drive a station's rotator and radio through one scheduled pass.

:class:`StationTracker` owns a station's Hamlib clients and runs, for each pass, two tasks in one
:class:`asyncio.TaskGroup`:

``hil-rotator-<sat>``
    plans the pass against the limits the daemon reports (``rotator.plan_pass``),
    pre-positions at the AOS azimuth, and every ``rotator_cycle_s`` (simulated) reads the
    position and commands the planned pointing when the error exceeds ``pointing_threshold_deg``;
    after LOS it parks. A rotator commanded far away whose reported position does not change for
    ``stall_cycles`` cycles is reported stalled.
``hil-radio-<sat>``
    every ``radio_period_s`` (simulated; 0.1 s = 10 Hz) sets the downlink ``f·(1 − ṙ/c)`` as
    the receive frequency and the uplink ``f·(1 + ṙ/c)`` as the split transmit frequency.
    When the satellite differs from the previous pass the radio is reset (split enabled, last
    values forgotten so everything is re-sent).

Time comes from the injected :class:`~groundplane.kernel.clock.Clock` (simulated time with a
speed factor in tests); pointing comes from a pure callable ``datetime -> (azimuth_deg,
elevation_deg, range_rate_km_s)``, so the loops do not depend on how the geometry is computed.

Faults: an ``RPRT -n`` reply is logged by the client and counted in the status, and the loop goes
on; a lost connection is retried with jittered exponential backoff (:class:`Backoff`), after
which the rotator resumes the pass (re-reading the limits, re-planning if they changed) or, past
LOS, parks. Every I/O await runs under the client's timeout; cancellation propagates.

Status snapshots (:class:`TrackerStatus`) go to a :class:`StatusHub`: callbacks and async
iterators (:meth:`StatusHub.watch`) for a gRPC watch stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import structlog

from groundplane.hil.hamlib import (
    Backoff,
    HamlibClient,
    HamlibConnectionError,
    HamlibReplyError,
    RigClient,
    RotatorClient,
    RotatorLimits,
)
from groundplane.hil.rotator import PassPlan, PassSample, plan_pass, safe_command
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.sites import Site

log = structlog.get_logger("groundplane.hil.tracker")

SPEED_OF_LIGHT_KM_S = 299_792.458

#: Pure pointing source: instant -> (azimuth_deg, elevation_deg, range_rate_km_s).
PointingFn = Callable[[datetime], tuple[float, float, float]]

Phase = Literal["idle", "prepositioning", "tracking", "parking", "parked", "failed"]


def downlink_hz(nominal_hz: float, range_rate_km_s: float) -> float:
    """Frequency received on the ground: ``f·(1 − ṙ/c)`` (ṙ > 0 when receding)."""
    return nominal_hz * (1.0 - range_rate_km_s / SPEED_OF_LIGHT_KM_S)


def uplink_hz(nominal_hz: float, range_rate_km_s: float) -> float:
    """Frequency to transmit so the satellite hears ``nominal_hz``: ``f·(1 + ṙ/c)``."""
    return nominal_hz * (1.0 + range_rate_km_s / SPEED_OF_LIGHT_KM_S)


@dataclass(frozen=True)
class TrackedPass:
    """One scheduled pass: satellite, AOS/LOS and look-angle samples from AOS to LOS."""

    satellite_id: str
    aos: datetime
    los: datetime
    samples: tuple[PassSample, ...]

    def __post_init__(self) -> None:
        if not self.satellite_id:
            raise InvalidArgument("a tracked pass needs a non-empty satellite_id")
        if self.aos.tzinfo is None or self.los.tzinfo is None:
            raise InvalidArgument("aos and los must be timezone-aware UTC datetimes")
        if not self.aos < self.los:
            raise InvalidArgument(f"aos must be before los, got aos={self.aos} los={self.los}")
        if len(self.samples) < 2:
            raise InvalidArgument(
                f"a tracked pass needs at least 2 look-angle samples, got {len(self.samples)}"
            )


@dataclass(frozen=True)
class RadioPlan:
    """Nominal (satellite-frame) frequencies; ``None`` leaves that side alone."""

    downlink_hz: float | None = None
    uplink_hz: float | None = None
    tx_vfo: str = "VFOB"

    def __post_init__(self) -> None:
        for name in ("downlink_hz", "uplink_hz"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name} must be a positive frequency in Hz, got {value!r}")


@dataclass(frozen=True)
class TrackerConfig:
    """Loop settings. ``*_cycle_s``/``*_period_s`` are simulated seconds; waits are wall seconds."""

    rotator_cycle_s: float = 1.0
    pointing_threshold_deg: float = 1.0
    radio_period_s: float = 0.1
    stall_cycles: int = 2
    #: Reported motion per cycle below which a rotator commanded far away counts as not moving.
    stall_min_motion_deg: float = 0.1
    #: Error (commanded vs reported) beyond which the rotator must visibly move.
    stall_far_deg: float = 2.0
    #: Wall seconds without motion needed as well as ``stall_cycles`` cycles: at high simulation
    #: speeds a cycle lasts milliseconds, shorter than a real rotator needs to show motion.
    stall_min_wall_s: float = 0.5
    #: Mechanical park position; ``None`` uses the device's own park command (``K``).
    park_position: tuple[float, float] | None = (0.0, 90.0)
    backoff: Backoff = field(default_factory=Backoff)
    #: Wall seconds after LOS to keep trying to reach the rotator to park it.
    park_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("rotator_cycle_s", "radio_period_s", "park_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        if self.stall_cycles < 1:
            raise InvalidArgument(f"stall_cycles must be >= 1, got {self.stall_cycles}")
        if not self.pointing_threshold_deg >= 0:
            raise InvalidArgument(
                f"pointing_threshold_deg must be >= 0, got {self.pointing_threshold_deg}"
            )


@dataclass(frozen=True)
class TrackerStatus:
    """A snapshot of the station for watchers (all angles degrees, frequencies hertz)."""

    at: datetime
    satellite_id: str = ""
    phase: Phase = "idle"
    plan_mode: str | None = None
    predicted_azimuth_deg: float | None = None
    predicted_elevation_deg: float | None = None
    range_rate_km_s: float | None = None
    #: Last mechanical command sent to the rotator and the instant it was computed for.
    commanded_azimuth_deg: float | None = None
    commanded_elevation_deg: float | None = None
    commanded_at: datetime | None = None
    reported_azimuth_deg: float | None = None
    reported_elevation_deg: float | None = None
    reported_at: datetime | None = None
    #: Last frequencies sent to the radio and the instant their Doppler was computed for.
    downlink_hz: int | None = None
    uplink_hz: int | None = None
    radio_commanded_at: datetime | None = None
    rotator_connected: bool = False
    radio_connected: bool = False
    rotator_error_replies: int = 0
    radio_error_replies: int = 0
    rotator_reconnects: int = 0
    radio_reconnects: int = 0
    stalled: bool = False
    stalls: int = 0
    last_fault: str | None = None


class StatusHub:
    """Fan-out of status snapshots to callbacks and conflating async iterators."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[TrackerStatus], None]] = []
        self._queues: set[asyncio.Queue[TrackerStatus | None]] = set()
        self.latest: TrackerStatus | None = None

    def subscribe(self, callback: Callable[[TrackerStatus], None]) -> Callable[[], None]:
        """Call ``callback`` with every snapshot; returns the function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def publish(self, status: TrackerStatus) -> None:
        self.latest = status
        for callback in list(self._callbacks):
            callback(status)
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()  # conflate: a slow watcher sees the newest snapshot
            queue.put_nowait(status)

    def close(self) -> None:
        """End every :meth:`watch` iterator."""
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)

    async def watch(self) -> AsyncIterator[TrackerStatus]:
        """Snapshots as they come (the latest first); slow consumers skip stale ones."""
        queue: asyncio.Queue[TrackerStatus | None] = asyncio.Queue(maxsize=1)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        self._queues.add(queue)
        try:
            while (status := await queue.get()) is not None:
                yield status
        finally:
            self._queues.discard(queue)


@dataclass
class _RotatorState:
    limits: RotatorLimits | None = None
    plan: PassPlan | None = None
    target: tuple[float, float] | None = None
    last_reported: tuple[float, float] | None = None
    still_cycles: int = 0
    still_since_wall_s: float | None = None


class StationTracker:
    """One station's rotator and radio, driven pass after pass."""

    def __init__(  # noqa: PLR0913 - optional devices, hub and rng injected by keyword for tests
        self,
        *,
        site: Site,
        clock: Clock,
        rotator: RotatorClient | None = None,
        radio: RigClient | None = None,
        config: TrackerConfig | None = None,
        hub: StatusHub | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.site = site
        self.clock = clock
        self.rotator = rotator
        self.radio = radio
        self.config = config or TrackerConfig()
        self.hub = hub or StatusHub()
        self._rng = rng or random.Random()
        self._status = TrackerStatus(at=clock.now())
        self._radio_satellite: str | None = None
        self._log = log.bind(site=site.id)

    @property
    def status(self) -> TrackerStatus:
        return self._status

    def _update(self, **changes: object) -> None:
        self._status = dataclasses.replace(self._status, at=self.clock.now(), **changes)  # type: ignore[arg-type]
        self.hub.publish(self._status)

    def _fault(self, counter: str | None, message: str, **context: object) -> None:
        self._log.warning("hil_fault", fault=message, **context)
        changes: dict[str, object] = {"last_fault": message}
        if counter is not None:
            changes[counter] = getattr(self._status, counter) + 1
        self._update(**changes)

    async def track(
        self,
        tracked_pass: TrackedPass,
        pointing: PointingFn,
        radio_plan: RadioPlan | None = None,
    ) -> TrackerStatus:
        """Follow one pass to LOS (and park); returns the final status snapshot."""
        sat = tracked_pass.satellite_id
        self._update(
            satellite_id=sat,
            phase="prepositioning" if self.clock.now() < tracked_pass.aos else "tracking",
            plan_mode=None,
            stalled=False,
            last_fault=None,
        )
        self._log.info(
            "hil_pass_start",
            satellite_id=sat,
            aos=tracked_pass.aos.isoformat(),
            los=tracked_pass.los.isoformat(),
        )
        async with asyncio.TaskGroup() as group:
            if self.rotator is not None:
                group.create_task(
                    self._rotator_loop(self.rotator, tracked_pass, pointing),
                    name=f"hil-rotator-{sat}",
                )
            if self.radio is not None and radio_plan is not None:
                group.create_task(
                    self._radio_loop(self.radio, tracked_pass, pointing, radio_plan),
                    name=f"hil-radio-{sat}",
                )
        if self.rotator is None and self._status.phase != "failed":
            self._update(phase="parked")
        self._log.info("hil_pass_end", satellite_id=sat, phase=self._status.phase)
        return self._status

    async def park(self) -> TrackerStatus:
        """Park the antenna after a pass was stopped (cancelled) before LOS.

        The status goes through ``parking`` to ``parked`` (``failed`` when the rotator refuses
        or stays unreachable past the park timeout), as at the end of a pass; without a rotator
        it is ``parked`` at once.
        """
        if self.rotator is None:
            self._update(phase="parked")
        else:
            await self._park(self.rotator, _RotatorState())
        self._log.info(
            "hil_stopped", satellite_id=self._status.satellite_id, phase=self._status.phase
        )
        return self._status

    # -- connections -------------------------------------------------------------------------

    async def _reconnect(
        self, client: HamlibClient, which: Literal["rotator", "radio"], give_up: Callable[[], bool]
    ) -> bool:
        """Reconnect with jittered exponential backoff; False if ``give_up()`` turned true."""
        connected_field = f"{which}_connected"
        self._update(**{connected_field: False})
        attempt = 0
        while not give_up():
            delay_s = self.config.backoff.delay_s(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay_s)
            try:
                await client.connect()
            except HamlibConnectionError as exc:
                self._log.info("hil_reconnect_failed", which=which, attempt=attempt, error=str(exc))
                continue
            self._log.info("hil_reconnected", which=which, attempts=attempt)
            self._update(
                **{
                    connected_field: True,
                    f"{which}_reconnects": getattr(self._status, f"{which}_reconnects") + 1,
                }
            )
            return True
        return False

    async def _sleep_until(self, at: datetime) -> None:
        await self.clock.sleep(max(0.0, (at - self.clock.now()).total_seconds()))

    # -- rotator -----------------------------------------------------------------------------

    async def _rotator_loop(
        self, rotator: RotatorClient, tracked_pass: TrackedPass, pointing: PointingFn
    ) -> None:
        state = _RotatorState()
        los = tracked_pass.los
        cycle = timedelta(seconds=self.config.rotator_cycle_s)
        next_at = self.clock.now()
        while self.clock.now() < los:
            if not rotator.connected and not await self._reconnect(
                rotator, "rotator", lambda: self.clock.now() >= los
            ):
                break
            try:
                await self._rotator_cycle(rotator, tracked_pass, pointing, state)
            except HamlibReplyError as exc:
                self._fault("rotator_error_replies", str(exc), command=exc.command, rprt=exc.rprt)
            except HamlibConnectionError as exc:
                self._fault(None, str(exc))
                state.last_reported = None
                state.limits = None  # re-read: the daemon may have restarted with other limits
                state.still_cycles = 0
                continue
            next_at = max(next_at + cycle, self.clock.now())
            await self._sleep_until(min(next_at, los))
        await self._park(rotator, state)

    async def _ensure_plan(
        self, rotator: RotatorClient, tracked_pass: TrackedPass, state: _RotatorState
    ) -> PassPlan:
        if state.plan is None or state.limits is None:
            limits = await rotator.read_limits()
            current_az, _ = await rotator.get_position()
            if state.plan is None or limits != state.plan.limits:
                state.plan = plan_pass(
                    tracked_pass.samples, limits, self.site, current_azimuth_deg=current_az
                )
                self._log.info(
                    "hil_pass_planned",
                    mode=state.plan.mode,
                    flip=state.plan.flip,
                    limits=dataclasses.asdict(limits),
                    clamped_fraction=round(state.plan.clamped_fraction, 3),
                )
            state.limits = limits
            self._update(plan_mode=state.plan.mode, rotator_connected=True)
        return state.plan

    async def _rotator_cycle(
        self,
        rotator: RotatorClient,
        tracked_pass: TrackedPass,
        pointing: PointingFn,
        state: _RotatorState,
    ) -> None:
        plan = await self._ensure_plan(rotator, tracked_pass, state)
        now = self.clock.now()
        az, el, range_rate = pointing(now)
        if now < tracked_pass.aos:
            phase: Phase = "prepositioning"
            target = plan.preposition
        else:
            phase = "tracking"
            target = plan.command_for(now, az, el)
        reported = await rotator.get_position()
        reported_at = self.clock.now()
        self._check_stall(state, reported)
        error_deg = max(abs(target[0] - reported[0]), abs(target[1] - reported[1]))
        changes: dict[str, object] = {
            "phase": phase,
            "predicted_azimuth_deg": az,
            "predicted_elevation_deg": el,
            "range_rate_km_s": range_rate,
            "reported_azimuth_deg": reported[0],
            "reported_elevation_deg": reported[1],
            "reported_at": reported_at,
            "rotator_connected": True,
        }
        if error_deg > self.config.pointing_threshold_deg:
            await rotator.set_position(*target)
            state.target = target
            changes.update(
                commanded_azimuth_deg=target[0], commanded_elevation_deg=target[1], commanded_at=now
            )
        self._update(**changes)

    def _check_stall(self, state: _RotatorState, reported: tuple[float, float]) -> None:
        previous, state.last_reported = state.last_reported, reported
        if previous is None or state.target is None:
            return
        far = max(abs(state.target[0] - reported[0]), abs(state.target[1] - reported[1]))
        moved = max(abs(reported[0] - previous[0]), abs(reported[1] - previous[1]))
        if far > self.config.stall_far_deg and moved < self.config.stall_min_motion_deg:
            state.still_cycles += 1
            if state.still_since_wall_s is None:
                state.still_since_wall_s = self.clock.monotonic()
        else:
            state.still_cycles = 0
            state.still_since_wall_s = None
            if self._status.stalled:
                self._log.info("hil_rotator_moving_again", reported=reported)
                self._update(stalled=False)
        still_wall_s = (
            0.0
            if state.still_since_wall_s is None
            else self.clock.monotonic() - state.still_since_wall_s
        )
        if (
            state.still_cycles >= self.config.stall_cycles
            and still_wall_s >= self.config.stall_min_wall_s
            and not self._status.stalled
        ):
            message = (
                f"rotator stalled: commanded {state.target[0]:.1f}°/{state.target[1]:.1f}° but "
                f"the reported position stayed at {reported[0]:.2f}°/{reported[1]:.2f}° for "
                f"{state.still_cycles} cycles"
            )
            self._fault("stalls", message)
            self._update(stalled=True)

    async def _park(self, rotator: RotatorClient, state: _RotatorState) -> None:
        self._update(phase="parking")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.park_timeout_s
        while True:
            if not rotator.connected and not await self._reconnect(
                rotator, "rotator", lambda: loop.time() >= deadline
            ):
                self._fault(None, "could not park: rotator unreachable until the park timeout")
                self._update(phase="failed")
                return
            try:
                if self.config.park_position is None:
                    await rotator.park()
                    self._update(phase="parked")
                    return
                limits = state.limits or await rotator.read_limits()
                target = safe_command(limits, self.site, *self.config.park_position)
                await rotator.set_position(*target)
            except HamlibReplyError as exc:
                self._fault("rotator_error_replies", str(exc), command=exc.command, rprt=exc.rprt)
                self._update(phase="failed")
                return
            except HamlibConnectionError as exc:
                self._fault(None, str(exc))
                continue
            self._update(
                phase="parked",
                commanded_azimuth_deg=target[0],
                commanded_elevation_deg=target[1],
                commanded_at=self.clock.now(),
            )
            return

    # -- radio -------------------------------------------------------------------------------

    async def _radio_loop(
        self,
        radio: RigClient,
        tracked_pass: TrackedPass,
        pointing: PointingFn,
        plan: RadioPlan,
    ) -> None:
        los = tracked_pass.los
        period = timedelta(seconds=self.config.radio_period_s)
        last_sent: dict[str, int] = {}
        # Set-up (split on) happens for a new satellite and after every reconnect.
        ready = self._radio_satellite == tracked_pass.satellite_id and radio.connected
        next_at = self.clock.now()
        while self.clock.now() < los:
            if not radio.connected:
                ready = False
                if not await self._reconnect(radio, "radio", lambda: self.clock.now() >= los):
                    break
            try:
                if not ready or self._radio_satellite != tracked_pass.satellite_id:
                    last_sent.clear()
                    if plan.uplink_hz is not None:
                        await radio.set_split(True, plan.tx_vfo)
                    self._radio_satellite = tracked_pass.satellite_id
                    ready = True
                await self._radio_tick(radio, pointing, plan, last_sent)
            except HamlibReplyError as exc:
                self._fault("radio_error_replies", str(exc), command=exc.command, rprt=exc.rprt)
            except HamlibConnectionError as exc:
                self._fault(None, str(exc))
                continue
            next_at = max(next_at + period, self.clock.now())
            await self._sleep_until(min(next_at, los))

    async def _radio_tick(
        self, radio: RigClient, pointing: PointingFn, plan: RadioPlan, last_sent: dict[str, int]
    ) -> None:
        at = self.clock.now()
        _, _, range_rate = pointing(at)
        changes: dict[str, object] = {"range_rate_km_s": range_rate, "radio_connected": True}
        if plan.downlink_hz is not None:
            down = round(downlink_hz(plan.downlink_hz, range_rate))
            if last_sent.get("down") != down:
                await radio.set_frequency(down)
                last_sent["down"] = down
            changes["downlink_hz"] = down
        if plan.uplink_hz is not None:
            up = round(uplink_hz(plan.uplink_hz, range_rate))
            if last_sent.get("up") != up:
                await radio.set_split_frequency(up)
                last_sent["up"] = up
            changes["uplink_hz"] = up
        changes["radio_commanded_at"] = at
        self._update(**changes)


def samples_from_pointing(
    pointing: PointingFn, aos: datetime, los: datetime, step_s: float = 1.0
) -> tuple[PassSample, ...]:
    """Look-angle samples from AOS to LOS (inclusive) every ``step_s`` seconds."""
    if not step_s > 0:
        raise InvalidArgument(f"step_s must be positive seconds, got {step_s}")
    total_s = (los - aos).total_seconds()
    if not total_s > 0:
        raise InvalidArgument(f"aos must be before los, got aos={aos} los={los}")
    count = max(2, math.ceil(total_s / step_s) + 1)
    out: list[PassSample] = []
    for index in range(count):
        at = aos + timedelta(seconds=min(total_s, index * step_s))
        az, el, _ = pointing(at)
        out.append(PassSample(at=at, azimuth_deg=az, elevation_deg=el))
    return tuple(out)
