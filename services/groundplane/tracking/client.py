"""What other services import from ``groundplane.tracking``: the catalog follower and converters.

Tracking is the source of truth for elements and sites. :class:`CatalogFollower` keeps a local
copy current through ``TrackingService.WatchCatalog`` (a level-triggered stream: every response
is the whole state): its :class:`CatalogView` holds the active element set of every satellite,
every ground site, and the SGP4 :class:`~groundplane.orbit.geometry.SatelliteBatch` of those
elements for vectorised geometry (links, routing, handoff).

* The batch is built in a worker thread (``asyncio.to_thread``): thousands of satellites take
  tens of milliseconds, which the event loop must not pay.
* Coalescing: the stream is read as fast as it comes and only the newest response is converted;
  a follower that falls behind skips straight to the latest state.
* When the stream fails (tracking restarts, the network goes), the follower reconnects with
  :class:`~groundplane.mqtt.client.Backoff`; meanwhile :meth:`CatalogFollower.current` keeps the
  last view. The catalog version grows across a restart of tracking, so ``wait_for_version``
  keeps working.

The proto ↔ domain converters for element sets and sites live here too, one copy used by the
tracking servicer and by every client.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import structlog

from groundplane.kernel.errors import DeadlineExceeded, GroundplaneError, InvalidArgument
from groundplane.kernel.timestamps import required_timestamp, to_timestamp
from groundplane.kernel.tls import open_channel
from groundplane.mqtt.client import Backoff
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import MAX_MASK_POINTS, HorizonMask, Site
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

log = structlog.get_logger("groundplane.tracking.client")

__all__ = [
    "CatalogFollower",
    "CatalogView",
    "element_set_from_proto",
    "element_set_to_proto",
    "site_from_proto",
    "site_to_proto",
    "view_from_response",
]

RECONNECT_BACKOFF = Backoff(base_s=0.2, factor=1.6, cap_s=5.0, jitter=0.2)
"""Between attempts to reopen the catalog stream: tracking usually comes back within seconds."""


# -------------------------------------------------------------------------------- conversion


def site_from_proto(message: pb.Site) -> Site:
    if len(message.mask) > MAX_MASK_POINTS:  # before converting any of them
        raise InvalidArgument(
            f"site {message.id[:64]!r}: a horizon mask has at most {MAX_MASK_POINTS} points, "
            f"got {len(message.mask)}"
        )
    mask = HorizonMask.from_points((p.azimuth_deg, p.elevation_deg) for p in message.mask)
    return Site(
        id=message.id,
        name=message.name,
        lat_deg=message.lat_deg,
        lon_deg=message.lon_deg,
        alt_m=message.alt_m,
        min_elevation_deg=message.min_elevation_deg,
        mask=mask,
    )


def site_to_proto(site: Site) -> pb.Site:
    return pb.Site(
        id=site.id,
        name=site.name,
        lat_deg=site.lat_deg,
        lon_deg=site.lon_deg,
        alt_m=site.alt_m,
        min_elevation_deg=site.min_elevation_deg,
        mask=[pb.MaskPoint(azimuth_deg=a, elevation_deg=e) for a, e in site.mask.points],
    )


def element_set_from_proto(message: pb.ElementSet) -> ElementSet:
    return ElementSet(
        catalog_id=message.catalog_id,
        name=message.name,
        epoch=required_timestamp(message.epoch, f"element set {message.catalog_id!r} epoch"),
        mean_motion_rev_per_day=message.mean_motion_rev_per_day,
        eccentricity=message.eccentricity,
        inclination_deg=message.inclination_deg,
        raan_deg=message.raan_deg,
        arg_of_pericenter_deg=message.arg_of_pericenter_deg,
        mean_anomaly_deg=message.mean_anomaly_deg,
        bstar=message.bstar,
        mean_motion_dot=message.mean_motion_dot,
        mean_motion_ddot=message.mean_motion_ddot,
        classification=message.classification or "U",
        intl_designator=message.intl_designator,
        element_set_no=message.element_set_no,
        rev_at_epoch=message.rev_at_epoch,
        ephemeris_type=message.ephemeris_type,
    )


def element_set_to_proto(elements: ElementSet) -> pb.ElementSet:
    return pb.ElementSet(
        catalog_id=elements.catalog_id,
        name=elements.name,
        epoch=to_timestamp(elements.epoch),
        mean_motion_rev_per_day=elements.mean_motion_rev_per_day,
        eccentricity=elements.eccentricity,
        inclination_deg=elements.inclination_deg,
        raan_deg=elements.raan_deg,
        arg_of_pericenter_deg=elements.arg_of_pericenter_deg,
        mean_anomaly_deg=elements.mean_anomaly_deg,
        bstar=elements.bstar,
        mean_motion_dot=elements.mean_motion_dot,
        mean_motion_ddot=elements.mean_motion_ddot,
        classification=elements.classification,
        intl_designator=elements.intl_designator,
        element_set_no=elements.element_set_no,
        rev_at_epoch=elements.rev_at_epoch,
        ephemeris_type=elements.ephemeris_type,
    )


# -------------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class CatalogView:
    """Tracking's catalog at one version, ready for geometry."""

    version: int
    """Tracking's catalog revision; grows with every change (also across its restarts)."""
    elements: tuple[ElementSet, ...]
    """The active element set per satellite, in catalog-id order."""
    sites: tuple[Site, ...]
    """Every ground site (min elevation, horizon mask), by id."""
    batch: SatelliteBatch
    """SGP4 batch of :attr:`elements`, same order."""

    @property
    def satellite_ids(self) -> tuple[str, ...]:
        return tuple(self.batch.ids)


def view_from_response(message: pb.WatchCatalogResponse) -> CatalogView:
    """A :class:`CatalogView` of one WatchCatalog response (CPU-bound: run it off the loop)."""
    elements = tuple(element_set_from_proto(m) for m in message.element_sets)
    sites = tuple(site_from_proto(m) for m in message.sites)
    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    return CatalogView(message.catalog_version, elements, sites, batch)


# -------------------------------------------------------------------------------- the follower


class CatalogFollower:
    """A local, current copy of tracking's catalog (see the module docstring).

    Run :meth:`run` as a task; read :meth:`current`, await :meth:`wait_ready` or
    :meth:`wait_for_version`, or register a listener called on the event loop with each new view.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 10.0,
        min_interval_s: float = 0.0,
        backoff: Backoff = RECONNECT_BACKOFF,
    ) -> None:
        """``timeout_s`` bounds connecting and the first response of each stream;
        ``min_interval_s`` asks tracking to space responses at least that many wall seconds."""
        self._target = target
        self._timeout_s = timeout_s
        self._min_interval_s = min_interval_s
        self._backoff = backoff
        self._rng = random.Random()
        self._view: CatalogView | None = None
        self._changed = asyncio.Condition()
        self._listeners: list[Callable[[CatalogView], None]] = []
        self._latest: pb.WatchCatalogResponse | None = None
        self._arrived = asyncio.Event()
        self._connected = False
        self.streams_opened = 0
        """How many times a catalog stream delivered its first response."""

    @property
    def target(self) -> str:
        return self._target

    @property
    def connected(self) -> bool:
        """Whether the catalog stream is open now (it delivered its first response)."""
        return self._connected

    async def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            async with self._changed:
                self._changed.notify_all()

    async def wait_connected(self, connected: bool, timeout_s: float) -> None:
        """Return once the stream is open (``True``) or down (``False``)."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self._connected is connected)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the catalog stream from {self._target} did not become "
                f"{'open' if connected else 'down'} within {timeout_s:g} s"
            ) from None

    def current(self) -> CatalogView | None:
        """The latest view (kept while tracking is unreachable); None before the first one."""
        return self._view

    def add_listener(self, callback: Callable[[CatalogView], None]) -> None:
        """Call ``callback(view)`` on the event loop after each new view."""
        self._listeners.append(callback)

    async def wait_ready(self, timeout_s: float) -> CatalogView:
        """The first view (at once when there is one)."""
        return await self.wait_for_version(-1, timeout_s)

    async def wait_for_version(self, above: int, timeout_s: float) -> CatalogView:
        """The first view whose version is greater than ``above``."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(
                    lambda: self._view is not None and self._view.version > above
                )
        except TimeoutError:
            seen = self._view.version if self._view is not None else None
            raise DeadlineExceeded(
                f"no catalog view above version {above} from tracking at {self._target} within "
                f"{timeout_s:g} s (latest: {seen}, stream {'open' if self.connected else 'down'})"
            ) from None
        assert self._view is not None
        return self._view

    async def run(self) -> None:
        """Follow the catalog until cancelled: one task reads the stream, one builds views."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read_forever(), name=f"catalog-read:{self._target}")
            tasks.create_task(self._build_forever(), name=f"catalog-build:{self._target}")

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            opened = self.streams_opened
            outcome = "ended"
            try:
                async with open_channel(self._target) as channel:
                    await self._read(pb_grpc.TrackingServiceStub(channel))
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
            except TimeoutError:
                outcome = "no first response in time"
            finally:
                await self._set_connected(False)
            if self.streams_opened != opened:
                attempt = 0  # the stream worked: start the backoff afresh
            log.warning(
                "catalog_stream_lost",
                target=self._target,
                outcome=outcome,
                attempt=attempt,
                have_view=self._view is not None,
            )
            delay_s = self._backoff.delay_s(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay_s)

    async def _read(self, stub: pb_grpc.TrackingServiceAsyncStub) -> None:
        """One stream, until it ends or fails."""
        request = pb.WatchCatalogRequest()
        if self._min_interval_s:
            request.min_interval_s = self._min_interval_s
        call = stub.WatchCatalog(request)
        responses: AsyncIterator[pb.WatchCatalogResponse] = aiter(call)
        try:
            async with asyncio.timeout(self._timeout_s):
                first = await anext(responses)
            self.streams_opened += 1
            await self._set_connected(True)
            log.info("catalog_stream_open", target=self._target, version=first.catalog_version)
            self._offer(first)
            async for message in responses:
                self._offer(message)
        except StopAsyncIteration:
            return
        finally:
            call.cancel()

    def _offer(self, message: pb.WatchCatalogResponse) -> None:
        """Keep only the newest response; the builder takes it when it is free."""
        self._latest = message
        self._arrived.set()

    async def _build_forever(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            message, self._latest = self._latest, None
            if message is None:  # pragma: no cover - set only together with a message
                continue
            if self._view is not None and message.catalog_version == self._view.version:
                continue  # the same state again (a reconnect): nothing changed
            try:
                view = await asyncio.to_thread(view_from_response, message)
            except GroundplaneError as error:
                log.error(
                    "catalog_view_unusable",
                    target=self._target,
                    version=message.catalog_version,
                    error=str(error),
                )
                continue
            self._view = view
            log.info(
                "catalog_view",
                target=self._target,
                version=view.version,
                satellites=len(view.elements),
                sites=len(view.sites),
            )
            async with self._changed:
                self._changed.notify_all()
            for callback in list(self._listeners):
                callback(view)
