"""One station under control: which pass to track, the tracker running it, and stopping it.

:class:`StationController` owns the station's Hamlib clients and a :class:`StationTracker`, and
runs at most one pass at a time inside its own task group (:meth:`run`). Passes and pointing come
from a :class:`PassSource`: computed locally from element sets (the CLI), or asked of the
tracking service over gRPC (the service).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import grpc
import numpy as np
import structlog

from groundplane.hil.hamlib import RigClient, RotatorClient
from groundplane.hil.pointing import SampledPointing, choose_pass, pointing_from_elements
from groundplane.hil.tracker import (
    RadioPlan,
    StationTracker,
    StatusHub,
    TrackedPass,
    TrackerConfig,
    TrackerStatus,
    samples_from_pointing,
)
from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    error_from_status,
)
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.orbit.elements import ElementSet, canonical_catalog_id
from groundplane.orbit.geometry import FloatArray, SatelliteBatch
from groundplane.orbit.passes import Pass, find_passes
from groundplane.orbit.sites import Site
from groundplane.tracking.v1 import tracking_pb2 as tpb
from groundplane.tracking.v1 import tracking_pb2_grpc as tpb_grpc

log = structlog.get_logger("groundplane.hil.controller")

#: How far ahead the next pass is searched for.
SEARCH_WINDOW = timedelta(hours=48)
#: Pointing is tabulated from this long before AOS to this long after LOS.
POINTING_MARGIN = timedelta(seconds=60)
POINTING_STEP_S = 1.0
RPC_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PlannedPass:
    """A pass chosen for tracking and how to point during it."""

    found: Pass
    pointing: SampledPointing


class PassSource(Protocol):
    async def plan(
        self, catalog_id: str, site: Site, now: datetime, pass_time: datetime | None
    ) -> PlannedPass: ...


class ElementsPassSource:
    """Passes and pointing computed here from element sets (no tracking service needed)."""

    def __init__(self, elements: list[ElementSet]) -> None:
        self._by_id = {e.catalog_id: e for e in elements}

    async def plan(
        self, catalog_id: str, site: Site, now: datetime, pass_time: datetime | None
    ) -> PlannedPass:
        key = canonical_catalog_id(catalog_id)
        if key not in self._by_id:
            raise NotFound(f"no elements for satellite {catalog_id!r}")
        elements = self._by_id[key]
        return await asyncio.to_thread(_plan_locally, elements, site, now, pass_time)


def _window(now: datetime, pass_time: datetime | None) -> tuple[datetime, datetime]:
    if pass_time is None:
        return now, now + SEARCH_WINDOW
    return pass_time - timedelta(hours=2), pass_time + timedelta(hours=2)


def _plan_locally(
    elements: ElementSet, site: Site, now: datetime, pass_time: datetime | None
) -> PlannedPass:
    start, end = _window(now, pass_time)
    batch = SatelliteBatch([elements.catalog_id], [elements.to_satrec()])
    found = choose_pass(find_passes(batch, [site], start, end), now, pass_time, elements.catalog_id)
    pointing = pointing_from_elements(
        elements, site, found.aos - POINTING_MARGIN, found.los + POINTING_MARGIN, POINTING_STEP_S
    )
    return PlannedPass(found, pointing)


class TrackingPassSource:
    """Passes and pointing asked of the tracking service (its gRPC contract)."""

    def __init__(self, stub: tpb_grpc.TrackingServiceAsyncStub) -> None:
        self._stub = stub

    async def plan(
        self, catalog_id: str, site: Site, now: datetime, pass_time: datetime | None
    ) -> PlannedPass:
        try:
            return await self._plan(catalog_id, site, now, pass_time)
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error.code(), error.details() or "", "tracking") from None

    async def _plan(
        self, catalog_id: str, site: Site, now: datetime, pass_time: datetime | None
    ) -> PlannedPass:
        start, end = _window(now, pass_time)
        site_message = tpb.Site(
            id=site.id,
            name=site.name,
            lat_deg=site.lat_deg,
            lon_deg=site.lon_deg,
            alt_m=site.alt_m,
            min_elevation_deg=site.min_elevation_deg,
            mask=[tpb.MaskPoint(azimuth_deg=a, elevation_deg=e) for a, e in site.mask.points],
        )
        selector = tpb.SiteSelector(sites=[site_message])
        passes: list[Pass] = []
        async for chunk in self._stub.ListPasses(
            tpb.ListPassesRequest(
                catalog_ids=[catalog_id],
                sites=selector,
                start=to_timestamp(start),
                end=to_timestamp(end),
            ),
            timeout=RPC_TIMEOUT_S,
        ):
            passes.extend(_pass_from_proto(p) for p in chunk.passes)
        found = choose_pass(passes, now, pass_time, catalog_id)
        first = found.aos - POINTING_MARGIN
        count = math.ceil(((found.los + POINTING_MARGIN) - first).total_seconds() / POINTING_STEP_S)
        times = [first + timedelta(seconds=i * POINTING_STEP_S) for i in range(count + 1)]
        reply = await self._stub.GetLookAngles(
            tpb.GetLookAnglesRequest(
                catalog_ids=[catalog_id], sites=selector, times=[to_timestamp(t) for t in times]
            ),
            timeout=RPC_TIMEOUT_S,
        )
        angles = list(reply.look_angles)
        failed = next((a for a in angles if a.sgp4_error), None)
        if failed is not None:
            raise FailedPrecondition(
                f"SGP4 cannot place {catalog_id} during the pass: {failed.error}"
            )
        pointing = SampledPointing.from_samples(
            first,
            POINTING_STEP_S,
            _floats([a.azimuth_deg for a in angles]),
            _floats([a.elevation_deg for a in angles]),
            _floats([a.range_rate_km_s for a in angles]),
        )
        return PlannedPass(found, pointing)


def _floats(values: list[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _pass_from_proto(message: tpb.Pass) -> Pass:
    return Pass(
        catalog_id=message.catalog_id,
        site_id=message.site_id,
        aos=from_timestamp(message.aos, "pass aos"),
        tca=from_timestamp(message.tca, "pass tca"),
        los=from_timestamp(message.los, "pass los"),
        max_elevation_deg=message.max_elevation_deg,
        aos_azimuth_deg=message.aos_azimuth_deg,
        los_azimuth_deg=message.los_azimuth_deg,
        aos_clipped=message.aos_clipped,
        los_clipped=message.los_clipped,
    )


@dataclass(frozen=True)
class HamlibEndpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> HamlibEndpoint:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"{what} expects HOST:PORT (e.g. 127.0.0.1:4533), got {text!r}")
        return cls(host, int(port))


class StationController:
    """One station's rotator and radio, tracking one pass at a time."""

    def __init__(  # noqa: PLR0913 - the site, clock, pass source and both daemons by keyword
        self,
        *,
        site: Site,
        clock: Clock,
        source: PassSource,
        rotctld: HamlibEndpoint,
        rigctld: HamlibEndpoint | None = None,
        config: TrackerConfig | None = None,
    ) -> None:
        self.site = site
        self.clock = clock
        self.source = source
        self.hub = StatusHub()
        self.rotator = RotatorClient(rotctld.host, rotctld.port)
        self.radio = RigClient(rigctld.host, rigctld.port) if rigctld else None
        self.tracker = StationTracker(
            site=site,
            clock=clock,
            rotator=self.rotator,
            radio=self.radio,
            config=config,
            hub=self.hub,
        )
        self._jobs: asyncio.Queue[tuple[TrackedPass, SampledPointing, RadioPlan | None]] = (
            asyncio.Queue(maxsize=1)
        )
        self._current: asyncio.Task[TrackerStatus] | None = None
        self._parking = False
        """True while :meth:`stop` parks the antenna: the rotator is not free for a new pass."""
        self._finished = asyncio.Event()
        self._log = log.bind(site=site.id)

    @property
    def status(self) -> TrackerStatus:
        return self.tracker.status

    @property
    def busy(self) -> bool:
        return self._current is not None or self._parking or not self._jobs.empty()

    async def plan(self, catalog_id: str, pass_time: datetime | None) -> PlannedPass:
        return await self.source.plan(catalog_id, self.site, self.clock.now(), pass_time)

    def start(self, planned: PlannedPass, radio: RadioPlan | None) -> None:
        """Queue ``planned`` for tracking; FAILED_PRECONDITION while another pass runs."""
        if self.busy:
            raise FailedPrecondition(
                f"station {self.site.id} is tracking {self.status.satellite_id}; stop it first"
            )
        found = planned.found
        samples = samples_from_pointing(planned.pointing, found.aos, found.los, POINTING_STEP_S)
        tracked = TrackedPass(found.catalog_id, found.aos, found.los, samples)
        self._finished.clear()
        self._jobs.put_nowait((tracked, planned.pointing, radio))

    async def stop(self) -> TrackerStatus:
        """Cancel the pass being tracked (if any) and park the antenna."""
        current = self._current
        if current is not None and not self._parking:
            # Busy until parked: a start() during the park would drive the rotator with it.
            self._parking = True
            try:
                current.cancel()
                # wait() (not await): a cancellation of stop() itself must still propagate.
                await asyncio.wait({current})
                await self.tracker.park()
            finally:
                self._parking = False
            self._finished.set()
        return self.status

    async def wait_finished(self) -> TrackerStatus:
        await self._finished.wait()
        return self.status

    async def run(self) -> None:
        """Track queued passes one after another until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    tracked, pointing, radio = await self._jobs.get()
                    self._current = group.create_task(
                        self.tracker.track(tracked, pointing, radio),
                        name=f"hil-pass-{tracked.satellite_id}",
                    )
                    # wait() returns when the pass ends or is stopped (cancelled); a
                    # cancellation of run() itself still propagates from here.
                    await asyncio.wait([self._current])
                    stopped = self._current.cancelled()
                    self._current = None
                    if not stopped:  # a stopped pass is finished once stop() has parked
                        self._finished.set()
        finally:
            self.hub.close()
            await self.rotator.close()
            if self.radio is not None:
                await self.radio.close()


def describe(found: Pass) -> str:
    return (
        f"{found.catalog_id} AOS {format_utc(found.aos)} (az {found.aos_azimuth_deg:.1f}°) "
        f"TCA {format_utc(found.tca)} max el {found.max_elevation_deg:.1f}° "
        f"LOS {format_utc(found.los)} (az {found.los_azimuth_deg:.1f}°)"
    )
