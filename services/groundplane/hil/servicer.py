"""``groundplane.hil.v1.StationControlService``: protobuf in, station controller, protobuf out."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc

from groundplane.hil.controller import StationController
from groundplane.hil.tracker import RadioPlan, TrackerStatus
from groundplane.hil.v1 import hil_pb2 as pb
from groundplane.hil.v1 import hil_pb2_grpc as pb_grpc
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.serving import ServiceBinding
from groundplane.kernel.timestamps import from_timestamp, to_timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StationControlService"].full_name

_PHASES = {
    "idle": pb.PHASE_IDLE,
    "prepositioning": pb.PHASE_PREPOSITIONING,
    "tracking": pb.PHASE_TRACKING,
    "parking": pb.PHASE_PARKING,
    "parked": pb.PHASE_PARKED,
    "failed": pb.PHASE_FAILED,
}


def status_to_proto(status: TrackerStatus) -> pb.StationStatus:
    message = pb.StationStatus(
        time=to_timestamp(status.at),
        catalog_id=status.satellite_id,
        phase=_PHASES.get(status.phase, pb.PHASE_UNSPECIFIED),
        plan_mode=status.plan_mode or "",
        rotator_connected=status.rotator_connected,
        radio_connected=status.radio_connected,
        rotator_error_replies=status.rotator_error_replies,
        radio_error_replies=status.radio_error_replies,
        rotator_reconnects=status.rotator_reconnects,
        radio_reconnects=status.radio_reconnects,
        stalled=status.stalled,
        stalls=status.stalls,
        last_fault=status.last_fault or "",
    )
    for field in (
        "predicted_azimuth_deg",
        "predicted_elevation_deg",
        "range_rate_km_s",
        "commanded_azimuth_deg",
        "commanded_elevation_deg",
        "reported_azimuth_deg",
        "reported_elevation_deg",
        "downlink_hz",
        "uplink_hz",
    ):
        value = getattr(status, field)
        if value is not None:
            setattr(message, field, value)
    return message


def _frequency(name: str, value: float) -> float | None:
    if value == 0:
        return None
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"{name} must be a positive frequency in Hz (0 = none), got {value}")
    return value


class StationControlServicer(pb_grpc.StationControlServiceServicer):
    """The gRPC face of one :class:`StationController`."""

    def __init__(self, controller: StationController) -> None:
        self.controller = controller

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            SERVICE_NAME,
            lambda server: pb_grpc.add_StationControlServiceServicer_to_server(self, server),
        )

    async def StartTracking(
        self, request: pb.StartTrackingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StartTrackingResponse:
        if not request.catalog_id:
            raise InvalidArgument("catalog_id is required, got an empty string")
        downlink = _frequency("downlink_hz", request.downlink_hz)
        uplink = _frequency("uplink_hz", request.uplink_hz)
        if (downlink or uplink) and self.controller.radio is None:
            raise InvalidArgument(
                "this station has no radio (rigctld) configured; send frequencies of 0"
            )
        pass_time = (
            from_timestamp(request.pass_time, "pass_time")
            if request.HasField("pass_time")
            else None
        )
        planned = await self.controller.plan(request.catalog_id, pass_time)
        radio = RadioPlan(downlink, uplink) if (downlink or uplink) else None
        self.controller.start(planned, radio)
        found = planned.found
        return pb.StartTrackingResponse(
            tracked_pass=pb.TrackedPass(
                catalog_id=found.catalog_id,
                aos=to_timestamp(found.aos),
                tca=to_timestamp(found.tca),
                los=to_timestamp(found.los),
                max_elevation_deg=found.max_elevation_deg,
                aos_azimuth_deg=found.aos_azimuth_deg,
                los_azimuth_deg=found.los_azimuth_deg,
            )
        )

    async def StopTracking(
        self, request: pb.StopTrackingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StopTrackingResponse:
        status = await self.controller.stop()
        return pb.StopTrackingResponse(status=status_to_proto(status))

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStatusResponse:
        return pb.GetStatusResponse(status=status_to_proto(self.controller.status))

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        async for status in self.controller.hub.watch():
            yield pb.WatchStatusResponse(status=status_to_proto(status))
