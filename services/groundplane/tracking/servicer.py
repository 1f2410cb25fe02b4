"""``groundplane.tracking.v1.TrackingService``: protobuf in, domain objects, protobuf out.

This is the only module of the tracking service that touches protobuf messages. Heavy numeric
work runs in a worker thread (``asyncio.to_thread``) so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc
import numpy as np

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.serving import ServiceBinding
from groundplane.kernel.timestamps import from_timestamp, required_timestamp, to_timestamp
from groundplane.orbit.eclipses import find_eclipse_table
from groundplane.orbit.elements import (
    ElementFormat,
    ElementSet,
    format_elements,
    parse_elements,
)
from groundplane.orbit.geometry import (
    FloatArray,
    SatelliteBatch,
    doppler_downlink_hz,
    doppler_uplink_hz,
    error_reason,
    look_angles,
    propagate,
    utc_jd_fr,
)
from groundplane.orbit.passes import find_pass_table
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction
from groundplane.orbit.sites import Site
from groundplane.orbit.visibility import visibility
from groundplane.tracking.catalog import AgeVerdict, ElementRecord
from groundplane.tracking.client import (
    element_set_from_proto,
    element_set_to_proto,
    site_from_proto,
    site_to_proto,
)
from groundplane.tracking.core import CatalogSnapshot, Selection, TrackingCore
from groundplane.tracking.pass_columns import PassColumns, timestamp_parts
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrackingService"].full_name

_EXPORT_FORMATS = {
    pb.EXPORT_FORMAT_TLE: ElementFormat.TLE,
    pb.EXPORT_FORMAT_3LE: ElementFormat.THREE_LE,
    pb.EXPORT_FORMAT_OMM_JSON: ElementFormat.OMM_JSON,
    pb.EXPORT_FORMAT_OMM_CSV: ElementFormat.OMM_CSV,
    pb.EXPORT_FORMAT_OMM_XML: ElementFormat.OMM_XML,
}
_AGE = {
    AgeVerdict.OK: pb.ELEMENT_AGE_OK,
    AgeVerdict.WARN: pb.ELEMENT_AGE_WARN,
    AgeVerdict.REFUSE: pb.ELEMENT_AGE_REFUSED,
}


# -------------------------------------------------------------------------------- conversion


def add_passes(response: pb.ListPassesResponse, found: PassColumns, names: dict[str, str]) -> None:
    """Append one ``Pass`` per row of ``found`` to ``response``; every field is converted for
    all rows at once (times straight from integer microseconds to Timestamp parts: no datetime
    objects on the way), leaving only the message building per pass."""
    catalog_ids: list[str] = found.catalog_id.tolist()
    aos_s, aos_ns = timestamp_parts(found.aos_us)
    tca_s, tca_ns = timestamp_parts(found.tca_us)
    los_s, los_ns = timestamp_parts(found.los_us)
    add = response.passes.add
    for row, (catalog_id, site_id, max_el, aos_az, los_az, aos_clip, los_clip) in enumerate(
        zip(
            catalog_ids,
            found.site_id.tolist(),
            found.max_elevation_deg.tolist(),
            found.aos_azimuth_deg.tolist(),
            found.los_azimuth_deg.tolist(),
            found.aos_clipped.tolist(),
            found.los_clipped.tolist(),
            strict=True,
        )
    ):
        message = add(
            catalog_id=catalog_id,
            name=names.get(catalog_id, ""),
            site_id=site_id,
            max_elevation_deg=max_el,
            aos_azimuth_deg=aos_az,
            los_azimuth_deg=los_az,
            aos_clipped=aos_clip,
            los_clipped=los_clip,
        )
        message.aos.seconds, message.aos.nanos = aos_s[row], aos_ns[row]
        message.tca.seconds, message.tca.nanos = tca_s[row], tca_ns[row]
        message.los.seconds, message.los.nanos = los_s[row], los_ns[row]


def _pass_responses(  # noqa: PLR0913 - the search's inputs and filters, the stream's batching
    batch: SatelliteBatch,
    sites: Sequence[Site],
    start: datetime,
    end: datetime,
    *,
    min_culmination_deg: float | None,
    min_duration_s: float | None,
    names: dict[str, str],
    batch_size: int,
) -> list[pb.ListPassesResponse]:
    """The passes of ``batch`` (by satellite, site, AOS) as stream messages of ``batch_size``."""
    table = find_pass_table(
        batch,
        sites,
        start,
        end,
        min_max_elevation_deg=min_culmination_deg,
        min_duration_s=min_duration_s,
    )
    found = PassColumns.from_table(table)
    responses = []
    for first in range(0, len(found), batch_size):
        response = pb.ListPassesResponse()
        add_passes(
            response, found.take(np.arange(first, min(first + batch_size, len(found)))), names
        )
        responses.append(response)
    return responses


def _finite_frequency(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(
            f"frequency_hz must be a finite number ≥ 0 (0 = no Doppler), got {value}"
        )
    return value


# -------------------------------------------------------------------------------- servicer


class TrackingServicer(pb_grpc.TrackingServiceServicer):
    """The gRPC face of :class:`TrackingCore`, reading "now" from an injected clock."""

    def __init__(self, core: TrackingCore, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        # WatchCatalog: the core calls back from whichever thread changed it; each open stream
        # waits on its own event, set on the event loop the streams run on.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: set[asyncio.Event] = set()
        self._catalog_message: pb.WatchCatalogResponse | None = None
        core.add_listener(self._on_catalog_change)

    @property
    def catalog_watchers(self) -> int:
        """How many WatchCatalog streams are open."""
        return len(self._watchers)

    def _on_catalog_change(self, version: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake_watchers)

    def _wake_watchers(self) -> None:
        for changed in self._watchers:
            changed.set()

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            SERVICE_NAME, lambda server: pb_grpc.add_TrackingServiceServicer_to_server(self, server)
        )

    # ---------------------------------------------------------------------- elements

    def _record_to_proto(
        self, record: ElementRecord, active_ids: set[str], now: datetime
    ) -> pb.ElementRecord:
        judgement = self.core.settings.age_policy.judge(record.elements, now)
        message = pb.ElementRecord(
            record_id=record.record_id,
            element_set=element_set_to_proto(record.elements),
            source=record.source,
            priority=record.priority,
            enabled=record.enabled,
            active=record.record_id in active_ids,
            age_days=judgement.age_days,
            age=_AGE[judgement.verdict],
        )
        if record.expires_at is not None:
            message.expires_at.CopyFrom(to_timestamp(record.expires_at))
        return message

    def _active_ids(self, now: datetime) -> set[str]:
        return {record.record_id for record in self.core.catalog.active_all(now)}

    async def UpsertElements(
        self, request: pb.UpsertElementsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpsertElementsResponse:
        source = request.source or "api"
        sets: list[ElementSet] = []
        if request.text.strip():
            sets.extend(await asyncio.to_thread(parse_elements, request.text, source))
        sets.extend(element_set_from_proto(m) for m in request.element_sets)
        expires = (
            from_timestamp(request.expires_at, "expires_at")
            if request.HasField("expires_at")
            else None
        )
        now = self.clock.now()
        records, warnings = await asyncio.to_thread(
            self.core.upsert_elements,
            sets,
            source=source,
            priority=request.priority,
            enabled=not request.disabled,
            expires_at=expires,
            now=now,
        )
        active = self._active_ids(now)
        return pb.UpsertElementsResponse(
            records=[self._record_to_proto(r, active, now) for r in records], warnings=warnings
        )

    async def ListElements(
        self, request: pb.ListElementsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListElementsResponse:
        now = self.clock.now()
        active = self._active_ids(now)
        records = self.core.catalog.list(prefix=request.catalog_id_prefix)
        if request.active_only:
            records = [r for r in records if r.record_id in active]
        return pb.ListElementsResponse(
            records=[self._record_to_proto(r, active, now) for r in records]
        )

    async def GetElements(
        self, request: pb.GetElementsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetElementsResponse:
        if not request.catalog_id:
            raise InvalidArgument("catalog_id is required, got an empty string")
        now = self.clock.now()
        records = self.core.catalog.get(request.catalog_id)
        active = self._active_ids(now)
        active_id = next((r.record_id for r in records if r.record_id in active), "")
        return pb.GetElementsResponse(
            records=[self._record_to_proto(r, active, now) for r in records],
            active_record_id=active_id,
        )

    async def DeleteElements(
        self, request: pb.DeleteElementsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteElementsResponse:
        if not request.catalog_id:
            raise InvalidArgument("catalog_id is required, got an empty string")
        deleted = await asyncio.to_thread(
            self.core.delete_elements, request.catalog_id, request.record_id or None
        )
        return pb.DeleteElementsResponse(deleted_count=deleted)

    async def ExportElements(
        self, request: pb.ExportElementsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExportElementsResponse:
        fmt = _EXPORT_FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument(
                "format must be one of EXPORT_FORMAT_TLE, _3LE, _OMM_JSON, _OMM_CSV, _OMM_XML; "
                f"got {request.format}"
            )
        now = self.clock.now()
        if request.catalog_ids:
            sets = [self.core.catalog.active(c, now).elements for c in request.catalog_ids]
        else:
            sets = [r.elements for r in self.core.catalog.active_all(now)]
        text = await asyncio.to_thread(format_elements, sets, fmt)
        return pb.ExportElementsResponse(text=text)

    # ---------------------------------------------------------------------- sites

    async def UpsertSite(
        self, request: pb.UpsertSiteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpsertSiteResponse:
        if not request.HasField("site"):
            raise InvalidArgument("site is required")
        site = await asyncio.to_thread(self.core.upsert_site, site_from_proto(request.site))
        return pb.UpsertSiteResponse(site=site_to_proto(site))

    async def ListSites(
        self, request: pb.ListSitesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSitesResponse:
        return pb.ListSitesResponse(sites=[site_to_proto(s) for s in self.core.list_sites()])

    def _check_sizes(
        self, selector: pb.SiteSelector, catalog_ids: Sequence[str], times: int = 0
    ) -> None:
        """The cheap checks first, on the loop: every repeated field within its bound (so a
        huge request is refused before any per-item work)."""
        settings = self.core.settings
        sites = len(selector.site_ids) + len(selector.sites)
        if sites > settings.max_sites_per_request:
            raise InvalidArgument(
                f"a request may name at most {settings.max_sites_per_request} sites (site_ids "
                f"and inline sites together), got {sites}"
            )
        if len(catalog_ids) > settings.max_catalog_ids_per_request:
            raise InvalidArgument(
                f"a request may name at most {settings.max_catalog_ids_per_request} catalog "
                f"ids, got {len(catalog_ids)}"
            )
        if times > settings.max_times_per_request:
            raise InvalidArgument(
                f"a request may carry at most {settings.max_times_per_request} times, got {times}"
            )

    def _sites(self, selector: pb.SiteSelector) -> list[Site]:
        return self.core.resolve_sites(
            list(selector.site_ids), [site_from_proto(s) for s in selector.sites]
        )

    async def _sites_and_selection(
        self,
        selector: pb.SiteSelector,
        catalog_ids: Sequence[str],
        now: datetime,
        used: tuple[datetime, datetime] | None = None,
    ) -> tuple[list[Site], Selection]:
        """Sites and satellites of a request, resolved in a worker thread (per-site validation
        and building the propagation batch are proportional to the request)."""
        self._check_sizes(selector, catalog_ids)

        def resolve() -> tuple[list[Site], Selection]:
            sites = self._sites(selector)
            return sites, self.core.select(list(catalog_ids), now, used)

        return await asyncio.to_thread(resolve)

    # ---------------------------------------------------------------------- geometry

    async def GetLookAngles(
        self, request: pb.GetLookAnglesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetLookAnglesResponse:
        self._check_sizes(request.sites, request.catalog_ids, len(request.times))
        if not request.times:
            raise InvalidArgument("times: expected at least one timestamp, got none")
        times = [required_timestamp(t, f"times[{i}]") for i, t in enumerate(request.times)]
        frequency = _finite_frequency(request.frequency_hz)
        now = self.clock.now()
        sites, selection = await self._sites_and_selection(
            request.sites, request.catalog_ids, now, (min(times), max(times))
        )
        points = len(selection.batch) * len(sites) * len(times)
        if points > self.core.settings.max_look_angle_points:
            raise InvalidArgument(
                f"request asks for {points} look angles (satellites × sites × times); at most "
                f"{self.core.settings.max_look_angle_points} per call: split it or use ListPasses"
            )
        messages = await asyncio.to_thread(_look_messages, selection.batch, sites, times, frequency)
        return pb.GetLookAnglesResponse(look_angles=messages, warnings=selection.warnings)

    async def ListPasses(
        self, request: pb.ListPassesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ListPassesResponse]:
        self._check_sizes(request.sites, request.catalog_ids)
        start = required_timestamp(request.start, "start")
        end = required_timestamp(request.end, "end")
        self.core.check_window(start, end)
        for name, value in (
            ("min_culmination_deg", request.min_culmination_deg),
            ("min_duration_s", request.min_duration_s),
        ):
            if not math.isfinite(value):
                raise InvalidArgument(f"{name} must be a finite number, got {value}")
        sites, selection = await self._sites_and_selection(
            request.sites, request.catalog_ids, self.clock.now(), (start, end)
        )
        if selection.warnings:
            yield pb.ListPassesResponse(warnings=selection.warnings)
        batch_size = self.core.settings.pass_stream_batch
        chunk = 128
        for first in range(0, len(selection.batch), chunk):
            part = selection.batch.subset(range(first, min(first + chunk, len(selection.batch))))
            responses = await asyncio.to_thread(
                _pass_responses,
                part,
                sites,
                start,
                end,
                min_culmination_deg=request.min_culmination_deg or None,
                min_duration_s=request.min_duration_s or None,
                names=selection.names,
                batch_size=batch_size,
            )
            for response in responses:
                yield response

    async def GetVisibility(
        self, request: pb.GetVisibilityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetVisibilityResponse:
        self._check_sizes(request.sites, request.catalog_ids)
        at = from_timestamp(request.time, "time") if request.HasField("time") else self.clock.now()
        sites, selection = await self._sites_and_selection(request.sites, request.catalog_ids, at)
        return await asyncio.to_thread(_visibility_message, selection.batch, sites, at)

    async def WatchLookAngles(
        self, request: pb.WatchLookAnglesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchLookAnglesResponse]:
        self._check_sizes(request.sites, request.catalog_ids)
        interval_s = request.interval_s or 1.0
        minimum_s = self.core.settings.min_watch_interval_s
        if not (math.isfinite(interval_s) and minimum_s <= interval_s <= MAX_WATCH_INTERVAL_S):
            raise InvalidArgument(
                f"interval_s must be between {minimum_s} and {MAX_WATCH_INTERVAL_S:g} simulated "
                f"seconds, got {request.interval_s}"
            )
        frequency = _finite_frequency(request.frequency_hz)
        sites, selection = await self._sites_and_selection(
            request.sites, request.catalog_ids, self.clock.now()
        )
        points = len(selection.batch) * len(sites)
        if points > self.core.settings.max_watch_points:
            raise InvalidArgument(
                f"a watch of {points} satellite-site pairs is too large; at most "
                f"{self.core.settings.max_watch_points}: name fewer satellites or sites"
            )
        next_at = self.clock.now()
        while True:
            messages = await asyncio.to_thread(
                _look_messages, selection.batch, sites, [next_at], frequency
            )
            yield pb.WatchLookAnglesResponse(time=to_timestamp(next_at), look_angles=messages)
            next_at += timedelta(seconds=interval_s)
            await self.clock.sleep((next_at - self.clock.now()).total_seconds())

    async def ListEclipses(
        self, request: pb.ListEclipsesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListEclipsesResponse:
        start = required_timestamp(request.start, "start")
        end = required_timestamp(request.end, "end")
        self.core.check_window(start, end)
        selection = self.core.select(list(request.catalog_ids), self.clock.now(), (start, end))
        return await asyncio.to_thread(
            _eclipse_message, selection.batch, start, end, selection.names, selection.warnings
        )

    # ---------------------------------------------------------------------- catalog

    async def WatchCatalog(
        self, request: pb.WatchCatalogRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchCatalogResponse]:
        """The whole catalog now, then again after each change (bursts coalesce: the state
        sent is always the latest), at most one response per ``min_interval_s`` wall seconds.

        An active record that expires changes the active set by itself: the stream wakes at
        the next expiry instant (on the service clock) and sends the new state.
        """
        interval_s = request.min_interval_s if request.HasField("min_interval_s") else 0.0
        if not (math.isfinite(interval_s) and 0.0 <= interval_s <= MAX_CATALOG_INTERVAL_S):
            raise InvalidArgument(
                f"min_interval_s must be between 0 and {MAX_CATALOG_INTERVAL_S:g} wall seconds, "
                f"got {interval_s}"
            )
        self._loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        self._watchers.add(changed)
        try:
            sent: int | None = None
            while True:
                changed.clear()
                snapshot = await asyncio.to_thread(self.core.snapshot, self.clock.now())
                if snapshot.version != sent:
                    yield await self._catalog_response(snapshot)
                    sent = snapshot.version
                    if interval_s > 0:
                        await asyncio.sleep(interval_s)
                if self.core.version != sent:
                    continue  # changed while sending or pausing
                await self._until_change_or_expiry(changed, snapshot)
        finally:
            self._watchers.discard(changed)

    async def _catalog_response(self, snapshot: CatalogSnapshot) -> pb.WatchCatalogResponse:
        """The response for ``snapshot``, built once per version for every stream."""
        cached = self._catalog_message
        if cached is not None and cached.catalog_version == snapshot.version:
            return cached
        message = await asyncio.to_thread(_catalog_message, snapshot)
        self._catalog_message = message
        return message

    async def _until_change_or_expiry(
        self, changed: asyncio.Event, snapshot: CatalogSnapshot
    ) -> None:
        expiry = self.core.next_expiry(snapshot.at)
        if expiry is None:
            await changed.wait()
            return
        simulated_s = (expiry - self.clock.now()).total_seconds()
        # Just past the instant: a record is usable strictly before its expiry.
        wall_s = max(0.0, simulated_s) / self.clock.speed + EXPIRY_MARGIN_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wall_s):
                await changed.wait()


MAX_WATCH_INTERVAL_S = 86_400.0
"""The longest ``interval_s`` a WatchLookAngles request may ask for (one simulated day)."""
MAX_CATALOG_INTERVAL_S = 3600.0
"""The longest ``min_interval_s`` a WatchCatalog request may ask for."""
EXPIRY_MARGIN_S = 0.001
"""Wall seconds a catalog stream waits past a record's expiry before looking again."""


def _catalog_message(snapshot: CatalogSnapshot) -> pb.WatchCatalogResponse:
    return pb.WatchCatalogResponse(
        catalog_version=snapshot.version,
        time=to_timestamp(snapshot.at),
        element_sets=[element_set_to_proto(r.elements) for r in snapshot.records],
        sites=[site_to_proto(s) for s in snapshot.sites],
    )


def _eclipse_message(
    batch: SatelliteBatch,
    start: datetime,
    end: datetime,
    names: dict[str, str],
    warnings: Sequence[str],
) -> pb.ListEclipsesResponse:
    response = pb.ListEclipsesResponse(warnings=list(warnings))
    if not len(batch):
        return response
    table = find_eclipse_table(batch, start, end)
    for sat_id, (code, reason) in table.errors.items():
        response.warnings.append(f"{sat_id}: {reason} (sgp4 error {code}); eclipses stop there")
    eclipses = sorted(table.eclipses(), key=lambda e: (e.penumbra_entry, e.catalog_id))
    for eclipse in eclipses:
        message = response.eclipses.add(
            catalog_id=eclipse.catalog_id,
            name=names.get(eclipse.catalog_id, ""),
            penumbra_entry=to_timestamp(eclipse.penumbra_entry),
            penumbra_exit=to_timestamp(eclipse.penumbra_exit),
            duration_s=eclipse.duration_s,
            entry_clipped=eclipse.entry_clipped,
            exit_clipped=eclipse.exit_clipped,
        )
        if eclipse.umbra_entry is not None and eclipse.umbra_exit is not None:
            message.umbra_entry.CopyFrom(to_timestamp(eclipse.umbra_entry))
            message.umbra_exit.CopyFrom(to_timestamp(eclipse.umbra_exit))
    return response


def _sunlit(batch: SatelliteBatch, jd: FloatArray, fr: FloatArray) -> FloatArray:
    """``(S, T)`` sunlit fraction of every satellite at every time (NaN where SGP4 fails)."""
    return sunlit_fraction(propagate(batch, jd, fr).r_teme_km, sun_position_teme_km(jd, fr))


def _visibility_message(
    batch: SatelliteBatch, sites: Sequence[Site], at: datetime
) -> pb.GetVisibilityResponse:
    jd, fr = utc_jd_fr([at])
    result = visibility(batch, sites, float(jd[0]), float(fr[0]))
    lit = _sunlit(batch, jd, fr)[:, 0] if len(batch) else np.zeros(0)
    response = pb.GetVisibilityResponse(time=to_timestamp(at))
    entries = [response.sites.add(site_id=site.id) for site in sites]
    for row in range(len(result)):
        los_in_s = float(result.los_in_s[row])
        item = entries[int(result.site_index[row])].satellites.add(
            catalog_id=batch.ids[int(result.sat_index[row])],
            azimuth_deg=float(result.azimuth_deg[row]),
            elevation_deg=float(result.elevation_deg[row]),
            range_km=float(result.range_km[row]),
            range_rate_km_s=float(result.range_rate_km_s[row]),
        )
        fraction = float(lit[int(result.sat_index[row])])
        if math.isfinite(fraction):
            item.sunlit_fraction = fraction
        if math.isfinite(los_in_s):
            item.los.CopyFrom(to_timestamp(at + timedelta(seconds=los_in_s)))
            item.remaining_s = los_in_s
    return response


def _look_messages(
    batch: SatelliteBatch, sites: Sequence[Site], times: Sequence[datetime], frequency_hz: float
) -> list[pb.LookAngle]:
    jd, fr = utc_jd_fr(times)
    angles = look_angles(batch, sites, jd, fr)
    thresholds = np.stack(
        [
            site.threshold_deg(np.asarray(angles.azimuth_deg[:, k, :], dtype=np.float64))
            for k, site in enumerate(sites)
        ],
        axis=1,
    )
    visible = angles.elevation_deg > thresholds
    lit = _sunlit(batch, jd, fr) if len(batch) else np.zeros((0, len(times)))
    stamps = [to_timestamp(t) for t in times]
    messages: list[pb.LookAngle] = []
    downlink = doppler_downlink_hz(frequency_hz, angles.range_rate_km_s) if frequency_hz else None
    uplink = doppler_uplink_hz(frequency_hz, angles.range_rate_km_s) if frequency_hz else None
    for s, catalog_id in enumerate(batch.ids):
        for k, site in enumerate(sites):
            for t, stamp in enumerate(stamps):
                code = int(angles.error_code[s, t])
                message = pb.LookAngle(catalog_id=catalog_id, site_id=site.id, time=stamp)
                if code:
                    message.sgp4_error = code
                    message.error = error_reason(code)
                else:
                    message.azimuth_deg = float(angles.azimuth_deg[s, k, t])
                    message.elevation_deg = float(angles.elevation_deg[s, k, t])
                    message.range_km = float(angles.range_km[s, k, t])
                    message.range_rate_km_s = float(angles.range_rate_km_s[s, k, t])
                    message.visible = bool(visible[s, k, t])
                    message.sunlit_fraction = float(lit[s, t])
                    if downlink is not None and uplink is not None:
                        message.downlink_hz = float(downlink[s, k, t])
                        message.uplink_hz = float(uplink[s, k, t])
                messages.append(message)
    return messages
