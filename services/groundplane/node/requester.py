"""The ground side of a node call: send a request through a station, await the streamed reply.

::

    async with Requester(client, clock, instance_id="gw-1", directory=directory) as requester:
        outcome = await requester.infer(
            "25544", "svalbard", InferRequest(model="synth-7b", prompt="hi", max_tokens=16),
            request_id="r-1", deadline=clock.now() + timedelta(seconds=5),
        )

A request is published on ``gp/v1/ground/<station>/tx/<sat>/<channel>`` (the link carries it up)
with ``reply_topic = gp/v1/ground/<station>/rx/<sat>/resp/<instance_id>``, where the requester
listens. Every outcome is exactly one of: the answer, the node's error (as the matching
:class:`~groundplane.kernel.errors.GroundplaneError`), :class:`DeadlineExceeded`, or
:class:`Unavailable` when the :class:`NodeDirectory` sees the addressed incarnation die (Will) or
be replaced by a newer one. In the last two cases the request may or may not have run: retry with
the **same request id** and a node that ran it returns its stored result instead of running it
again.

Fencing: the request envelope carries the node epoch the directory held when it was sent (0 when
unknown) and the node refuses work addressed to an older incarnation. Reply envelopes are
accepted only from the epoch the directory accepts (:meth:`NodeDirectory.accepts`) and never
from an epoch lower than the one addressed; the rest are counted in
``stale_rejected_total`` and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import structlog
from google.protobuf.message import Message

from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    AlreadyExists,
    DeadlineExceeded,
    GroundplaneError,
    InvalidArgument,
    Unavailable,
)
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node import wire
from groundplane.node.directory import OFFLINE, NodeDirectory, NodeView
from groundplane.node.v1 import node_pb2

log = structlog.get_logger("groundplane.node.requester")

_M = TypeVar("_M", bound=Message)
ReplyEvent = node_pb2.InferChunk | node_pb2.InferResult
"""What :meth:`Requester.stream` yields: pieces, then the final result."""


@dataclass(frozen=True)
class InferOutcome:
    """A finished call: the final result, the pieces streamed before it and who answered."""

    satellite_id: str
    station_id: str
    request_id: str
    epoch: int
    """The node incarnation that answered."""
    pieces: tuple[str, ...]
    """Pieces in order as they streamed (a lost piece is missing here; ``text`` is complete)."""
    result: node_pb2.InferResult

    @property
    def text(self) -> str:
        return self.result.text


@dataclass
class _Pending:
    satellite_id: str
    addressed_epoch: int
    replies: asyncio.Queue[link_pb2.Envelope | GroundplaneError] = field(
        default_factory=asyncio.Queue
    )


class Requester:
    """Sends node requests and matches replies by request id (one instance per process)."""

    def __init__(
        self,
        client: MqttClient,
        clock: Clock,
        *,
        instance_id: str,
        directory: NodeDirectory | None = None,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._instance = topics.check_id("requester instance id", instance_id)
        self._directory = directory
        self._publish_timeout_s = publish_timeout_s
        self._pending: dict[str, _Pending] = {}
        self._remove_listener: Callable[[], None] | None = None
        self.stale_rejected_total = 0
        """Replies dropped because their epoch is fenced (a dead or replaced incarnation)."""
        self.unmatched_total = 0
        """Replies for no pending request (late, duplicate, or after a failure was reported)."""
        self.duplicate_replies_total = 0
        """Repeated pieces or results of a pending request (QoS 1 redelivery), dropped."""

    @property
    def instance_id(self) -> str:
        return self._instance

    @property
    def reply_filter(self) -> str:
        return f"{topics.PREFIX}/ground/+/rx/+/{wire.REPLY_CHANNEL_PREFIX}/{self._instance}"

    def reply_topic(self, satellite_id: str, station_id: str) -> str:
        return topics.ground_rx(
            station_id, satellite_id, f"{wire.REPLY_CHANNEL_PREFIX}/{self._instance}"
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Subscribe to this instance's replies and follow the directory's liveness changes."""
        await self._client.subscribe(self.reply_filter, self._on_reply)
        if self._directory is not None and self._remove_listener is None:
            self._remove_listener = self._directory.add_listener(self._on_node_change)

    async def close(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for pending in self._pending.values():
            pending.replies.put_nowait(Unavailable("the requester closed"))
        await self._client.unsubscribe(self.reply_filter)

    # -- inference -------------------------------------------------------------------------------

    async def infer(  # noqa: PLR0913 - the node, the request, its wire fields and a piece callback
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
        on_piece: Callable[[str], None] | None = None,
    ) -> InferOutcome:
        """Send ``request`` and return the outcome (see the module doc for the failure modes)."""
        pieces: list[str] = []
        exchange = self._exchange(
            satellite_id,
            station_id,
            wire.INFER_CHANNEL,
            request,
            request_id=request_id,
            deadline=deadline,
            traceparent=traceparent,
        )
        async with contextlib.aclosing(exchange) as events:
            async for event, epoch in events:
                if isinstance(event, node_pb2.InferChunk):
                    pieces.append(event.text)
                    if on_piece is not None:
                        on_piece(event.text)
                elif isinstance(event, node_pb2.InferResult):
                    return InferOutcome(
                        satellite_id, station_id, request_id, epoch, tuple(pieces), event
                    )
        raise AssertionError("unreachable: the exchange ends with a result or an error")

    async def stream(  # noqa: PLR0913 - the node, the request and its wire fields
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
    ) -> AsyncIterator[ReplyEvent]:
        """Yield each :class:`InferChunk` as it arrives, then the :class:`InferResult`."""
        exchange = self._exchange(
            satellite_id,
            station_id,
            wire.INFER_CHANNEL,
            request,
            request_id=request_id,
            deadline=deadline,
            traceparent=traceparent,
        )
        async with contextlib.aclosing(exchange) as events:
            async for event, _epoch in events:
                if isinstance(event, node_pb2.InferChunk | node_pb2.InferResult):
                    yield event

    # -- sessions --------------------------------------------------------------------------------

    async def export_session(  # noqa: PLR0913 - the node, the session and the export RPC's fields
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        *,
        deadline: datetime,
        fence_epoch: int | None = None,
        request_id: str | None = None,
    ) -> node_pb2.SessionExportResult:
        """Snapshot a session on a node (fencing it there at ``fence_epoch`` when given)."""
        message = node_pb2.SessionExportRequest(session_id=session_id)
        if fence_epoch is not None:
            message.fence_epoch = fence_epoch
        return await self._unary(
            satellite_id,
            station_id,
            wire.SESSION_EXPORT_CHANNEL,
            message,
            kind=node_pb2.SessionExportResult,
            deadline=deadline,
            request_id=request_id,
        )

    async def import_session(  # noqa: PLR0913 - the node, the snapshot and the import RPC's fields
        self,
        satellite_id: str,
        station_id: str,
        snapshot: bytes,
        *,
        deadline: datetime,
        session_epoch: int | None = None,
        request_id: str | None = None,
    ) -> node_pb2.SessionImportResult:
        """Install a snapshot on a node (under ``session_epoch`` when given)."""
        message = node_pb2.SessionImportRequest(snapshot=snapshot)
        if session_epoch is not None:
            message.session_epoch = session_epoch
        return await self._unary(
            satellite_id,
            station_id,
            wire.SESSION_IMPORT_CHANNEL,
            message,
            kind=node_pb2.SessionImportResult,
            deadline=deadline,
            request_id=request_id,
        )

    async def fence_session(  # noqa: PLR0913 - the node, the session, its epoch and the RPC's fields
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        session_epoch: int,
        *,
        deadline: datetime,
        request_id: str | None = None,
    ) -> node_pb2.SessionFenceResult:
        """Tell a node the session moved elsewhere at ``session_epoch``."""
        message = node_pb2.SessionFenceRequest(session_id=session_id, session_epoch=session_epoch)
        return await self._unary(
            satellite_id,
            station_id,
            wire.SESSION_FENCE_CHANNEL,
            message,
            kind=node_pb2.SessionFenceResult,
            deadline=deadline,
            request_id=request_id,
        )

    async def _unary(  # noqa: PLR0913 - one unary exchange: node, channel, message, reply kind, fields
        self,
        satellite_id: str,
        station_id: str,
        channel: str,
        message: Message,
        *,
        kind: type[_M],
        deadline: datetime,
        request_id: str | None,
    ) -> _M:
        exchange = self._exchange(
            satellite_id,
            station_id,
            channel,
            message,
            request_id=request_id or uuid.uuid4().hex,
            deadline=deadline,
            expect=kind,
        )
        async with contextlib.aclosing(exchange) as events:
            async for event, _epoch in events:
                assert isinstance(event, kind)
                return event
        raise AssertionError("unreachable: the exchange ends with a result or an error")

    # -- the exchange ----------------------------------------------------------------------------

    async def _exchange(  # noqa: PLR0913 - every envelope field of one exchange, explicit
        self,
        satellite_id: str,
        station_id: str,
        channel: str,
        message: Message,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
        expect: type[Message] | None = None,
    ) -> AsyncGenerator[tuple[Message, int], None]:
        if not request_id:
            raise InvalidArgument("expected a non-empty request id, got ''")
        if request_id in self._pending:
            raise AlreadyExists(
                f"request {request_id!r} is still pending on this requester; wait for its "
                "outcome before retrying it"
            )
        addressed = (self._directory.epoch(satellite_id) if self._directory else None) or 0
        view = self._directory.get(satellite_id) if self._directory else None
        if view is not None and view.state == OFFLINE:
            raise Unavailable(
                f"node {satellite_id!r} is offline (epoch {view.epoch}); pick another node"
            )
        pending = _Pending(satellite_id, addressed)
        self._pending[request_id] = pending
        where = f"node {satellite_id!r} via {station_id!r}"
        try:
            request = wire.envelope(
                message,
                request_id=request_id,
                sender_id=self._instance,
                epoch=addressed,
                reply_topic=self.reply_topic(satellite_id, station_id),
                deadline=deadline,
                traceparent=traceparent,
            )
            await self._client.publish(
                topics.ground_tx(station_id, satellite_id, channel),
                request.SerializeToString(),
                deadline=deadline,
                timeout_s=self._publish_timeout_s,
                user_properties=tracing.mqtt_properties(traceparent),
            )
            next_index = 0
            held: dict[int, node_pb2.InferChunk] = {}  # pieces that arrived ahead of their turn
            while True:
                reply = await self._next(pending, deadline, request_id, where)
                if reply.payload_type == wire.type_name(node_pb2.InferError()):
                    raise wire.error_from_message(
                        wire.unpack(reply, node_pb2.InferError), where=where
                    )
                if expect is not None:
                    yield wire.unpack(reply, expect), reply.epoch
                    return
                if reply.payload_type == wire.type_name(node_pb2.InferChunk()):
                    chunk = wire.unpack(reply, node_pb2.InferChunk)
                    # A chunk may carry several consecutive pieces; callers see one per piece.
                    for offset, text in enumerate([chunk.text, *chunk.more_pieces]):
                        index = chunk.index + offset
                        if index < next_index or index in held:
                            self.duplicate_replies_total += 1
                            continue
                        held[index] = node_pb2.InferChunk(index=index, text=text)
                    while next_index in held:
                        yield held.pop(next_index), reply.epoch
                        next_index += 1
                    continue
                result = wire.unpack(reply, node_pb2.InferResult)
                for index in sorted(held):  # a lost piece leaves a gap; the result is whole
                    yield held[index], reply.epoch
                yield result, reply.epoch
                return
        finally:
            self._pending.pop(request_id, None)

    async def _next(
        self, pending: _Pending, deadline: datetime, request_id: str, where: str
    ) -> link_pb2.Envelope:
        left_wall_s = (deadline - self._clock.now()).total_seconds() / self._clock.speed
        try:
            async with asyncio.timeout(max(0.0, left_wall_s)):
                item = await pending.replies.get()
        except TimeoutError:
            raise DeadlineExceeded(
                f"no complete reply to request {request_id!r} from {where} before its deadline "
                f"{deadline.isoformat()}; it may or may not have run: retry with the same id"
            ) from None
        if isinstance(item, GroundplaneError):
            raise item
        return item

    # -- incoming --------------------------------------------------------------------------------

    async def _on_reply(self, message: ReceivedMessage) -> None:
        try:
            reply = wire.parse_envelope(message.payload)
            satellite_id = topics.parse_delivery(message.topic).source
        except InvalidArgument as error:
            log.warning("node_reply_rejected", topic=message.topic, error=str(error))
            return
        if reply.sender_id != satellite_id:
            log.warning(
                "node_reply_rejected",
                topic=message.topic,
                error=f"sender {reply.sender_id!r} is not the satellite of the topic",
            )
            return
        pending = self._pending.get(reply.request_id)
        fenced = self._directory is not None and not self._directory.accepts(
            satellite_id, reply.epoch
        )
        if fenced or (pending is not None and reply.epoch < pending.addressed_epoch):
            self.stale_rejected_total += 1
            log.info(
                "node_reply_stale",
                satellite_id=satellite_id,
                request_id=reply.request_id,
                epoch=reply.epoch,
                current_epoch=self._directory.epoch(satellite_id) if self._directory else None,
            )
            return
        if pending is None or pending.satellite_id != satellite_id:
            self.unmatched_total += 1
            return
        pending.replies.put_nowait(reply)

    def _on_node_change(self, view: NodeView) -> None:
        for request_id, pending in self._pending.items():
            if pending.satellite_id != view.satellite_id:
                continue
            if view.died and view.epoch >= pending.addressed_epoch:
                reason = f"went offline (incarnation {view.epoch} died)"
            elif pending.addressed_epoch and view.epoch > pending.addressed_epoch:
                reason = (
                    f"was replaced by incarnation {view.epoch} (the request was addressed to "
                    f"{pending.addressed_epoch})"
                )
            else:
                continue
            pending.replies.put_nowait(
                Unavailable(
                    f"node {view.satellite_id!r} {reason} while request {request_id!r} was "
                    "pending; it may or may not have run: retry with the same request id"
                )
            )
