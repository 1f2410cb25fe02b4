"""``groundplane.handoff.v1.HandoffService``: protobuf in, :class:`HandoffManager` calls, out.

The only module of handoff that touches the gRPC contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.handoff.manager import HandoffManager, JobInfo, SessionInfo
from groundplane.handoff.store import HandoffEvent
from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.handoff.v1 import handoff_pb2_grpc as pb_grpc
from groundplane.kernel.clock import Clock
from groundplane.kernel.serving import ServiceBinding
from groundplane.kernel.timestamps import from_timestamp, to_timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HandoffService"].full_name
DEFAULT_TURN_S = 60.0
DEFAULT_MAX_TOKENS = 32


def _stamp(value: datetime | None) -> Timestamp | None:
    return None if value is None else to_timestamp(value)


def default_turn_s(time_remaining_wall_s: float | None, speed: float) -> float:
    """A turn's budget in simulated seconds when the request names no deadline: the default,
    or less when the call's own gRPC deadline (wall seconds left) comes sooner."""
    if time_remaining_wall_s is None:
        return DEFAULT_TURN_S
    return max(0.0, min(DEFAULT_TURN_S, time_remaining_wall_s * speed))


def session_to_proto(info: SessionInfo) -> pb.Session:
    return pb.Session(
        session_id=info.session_id,
        model=info.model,
        state=info.state,
        satellite_id=info.satellite_id,
        station_id=info.station_id,
        session_epoch=info.session_epoch,
        turns=info.turns,
        context_tokens=info.context_tokens,
        state_bytes=info.state_bytes,
        los=_stamp(info.los),
        resume_at=_stamp(info.resume_at),
    )


def job_to_proto(info: JobInfo) -> pb.Job:
    return pb.Job(
        job_id=info.job_id,
        model=info.model,
        state=info.state,
        item_count=info.item_count,
        done_count=info.done_count,
        results=info.results,
    )


def event_to_proto(event: HandoffEvent) -> pb.HandoffEvent:
    return pb.HandoffEvent(
        event_id=event.event_id,
        subject_kind=event.subject_kind,
        subject_id=event.subject_id,
        state=event.state,
        time=_stamp(event.at),
        planned_time=_stamp(event.planned_at),
        los=_stamp(event.los),
        from_satellite_id=event.from_satellite,
        from_station_id=event.from_station,
        to_satellite_id=event.to_satellite,
        to_station_id=event.to_station,
        path=event.path,
        bytes_moved=event.bytes_moved,
        interruption_s=event.interruption_s,
        detail=event.detail,
    )


class HandoffServicer(pb_grpc.HandoffServiceServicer):
    """The gRPC face of :class:`HandoffManager`."""

    def __init__(self, manager: HandoffManager, clock: Clock) -> None:
        self.manager = manager
        self._clock = clock

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            SERVICE_NAME, lambda server: pb_grpc.add_HandoffServiceServicer_to_server(self, server)
        )

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateSessionResponse:
        info = await self.manager.create_session(
            request.model, session_id=request.session_id or None
        )
        return pb.CreateSessionResponse(session=session_to_proto(info))

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(
            session=session_to_proto(self.manager.get_session(request.session_id))
        )

    async def CloseSession(
        self, request: pb.CloseSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CloseSessionResponse:
        info = await self.manager.close_session(request.session_id)
        return pb.CloseSessionResponse(session=session_to_proto(info))

    async def SendTurn(
        self, request: pb.SendTurnRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendTurnResponse:
        if request.HasField("deadline"):
            deadline = from_timestamp(request.deadline, "deadline")
        else:
            deadline = self._clock.now() + timedelta(
                seconds=default_turn_s(context.time_remaining(), self._clock.speed)
            )
        result = await self.manager.send_turn(
            request.session_id,
            request.prompt,
            deadline=deadline,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            turn_id=request.turn_id,
        )
        return pb.SendTurnResponse(
            turn_index=result.turn_index,
            turn_id=result.turn_id,
            text=result.text,
            satellite_id=result.satellite_id,
            session_epoch=result.session_epoch,
            attempts=result.attempts,
            replayed=result.replayed,
        )

    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SubmitJobResponse:
        info = await self.manager.submit_job(
            request.model,
            list(request.prompts),
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            job_id=request.job_id or None,
        )
        return pb.SubmitJobResponse(job=job_to_proto(info))

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobResponse:
        info = self.manager.get_job(request.job_id, include_results=request.include_results)
        return pb.GetJobResponse(job=job_to_proto(info))

    async def WatchHandoffs(
        self, request: pb.WatchHandoffsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchHandoffsResponse]:
        async for event in self.manager.watch(
            subject_id=request.subject_id or None,
            after_id=request.after_event_id if request.replay else None,
        ):
            yield pb.WatchHandoffsResponse(event=event_to_proto(event))

    async def ListHandoffs(
        self, request: pb.ListHandoffsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListHandoffsResponse:
        events = self.manager.list_handoffs(
            subject_id=request.subject_id or None,
            after_id=request.after_event_id,
            limit=min(request.limit or 1000, 10_000),
        )
        return pb.ListHandoffsResponse(events=[event_to_proto(e) for e in events])
