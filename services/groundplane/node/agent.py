"""The node agent: one satellite's compute engine on MQTT.

A :class:`NodeAgent` connects with its own node account (username = satellite id, so it may only
use ``gp/v1/node/<sat>/#``) and

* serves inference: an :class:`~groundplane.node.v1.node_pb2.InferRequest` arriving on
  ``gp/v1/node/<sat>/rx/gs/<station>/infer/req`` is admitted into the :class:`Engine` and the
  MQTT message is acknowledged only then (a crash before admission makes the broker redeliver it
  to the persistent session); the answer streams back as ``InferChunk`` envelopes (one per
  piece, or several pieces in one when the model outpaces the link's publishing) and a final
  ``InferResult`` (or one ``InferError``) on the downlink topic
  ``topics.reply_via_downlink(sat, envelope.reply_topic)``. A retried request id is answered from
  the engine's de-duplication (never executed twice);
* exports, imports and fences sessions (channels ``session/export|import|fence``), answering a
  retried request id with the stored reply;
* announces liveness: at every connect a retained ``NodeStatus`` ONLINE with a **new incarnation
  epoch** on ``gp/v1/node/<sat>/status``, and a Will (OFFLINE, the same epoch) set in that same
  CONNECT. Every reply carries the epoch its request was admitted under, so after the broker
  declared an incarnation dead, whatever it still sends is recognisably stale;
* publishes a retained ``LoadReport`` on ``gp/v1/node/<sat>/load`` at each birth, then checks
  every ``load_interval_s`` and publishes when the load changed, or at least every
  ``load_refresh_every`` intervals (an idle node costs the broker and its subscribers little);
* drains on :meth:`NodeAgent.stop`: status DRAINING, finish admitted work, then OFFLINE (the Will
  does not fire on a clean disconnect, so OFFLINE is published explicitly).

**Alone or in a shard.** :meth:`NodeAgent.run` gives the agent its own connection (client id
``node-<sat>``, its own Will): real hardware, ``python -m groundplane.node.host``.
:meth:`NodeAgent.run_shared` serves over a connection a :class:`~groundplane.node.shard.NodeShard`
owns for many agents: the shard subscribes the agent's filters (:meth:`NodeAgent.request_filters`)
and, at every connect of its own, starts a new incarnation of each agent
(:meth:`NodeAgent.begin_incarnation`, whose status names the shard and the shard's epoch) and
publishes its birth (:meth:`NodeAgent.announce`). The shard's one Will declares every such
incarnation dead at once (docs/topics.md, "Nodes shards").

Epochs come from an :class:`EpochSource`: ``max(last + 1, now_ns())``, persisted in a counter
file when one is given. The time term keeps epochs increasing across restarts without a file; the
file keeps them increasing when the wall clock steps back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from google.protobuf.message import DecodeError, Message

from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    Unavailable,
)
from groundplane.kernel.timestamps import to_timestamp
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, Handler, LastWill, MqttClient, ReceivedMessage
from groundplane.node import wire
from groundplane.node.engine import Engine, InferenceRequest, Ticket
from groundplane.node.engine import LoadReport as EngineLoad
from groundplane.node.sessions import decode_session
from groundplane.node.v1 import node_pb2

log = structlog.get_logger("groundplane.node.agent")

ONLINE = node_pb2.NODE_STATE_ONLINE
DRAINING = node_pb2.NODE_STATE_DRAINING
OFFLINE = node_pb2.NODE_STATE_OFFLINE
_SESSION_REPLIES_KEPT = 1024
_REPLY_RETRY_PAUSE_S = 0.1


class EpochSource:
    """Strictly increasing incarnation numbers: ``max(last + 1, now_ns())``.

    ``now_ns`` is injected (the host passes ``time.time_ns``); with ``path`` each allocation is
    written to that counter file (atomically, fsynced) and read back at construction, so epochs
    keep increasing even if the wall clock steps back between runs.
    """

    def __init__(self, now_ns: Callable[[], int], path: Path | None = None) -> None:
        self._now_ns = now_ns
        self._path = path
        self._last = 0
        if path is not None and path.exists():
            text = path.read_text().strip()
            try:
                self._last = int(text)
            except ValueError:
                raise InvalidArgument(
                    f"epoch counter file {path} must hold one integer, got {text[:40]!r}"
                ) from None

    @property
    def last(self) -> int:
        """The last epoch handed out (or read from the file); 0 before any."""
        return self._last

    def next(self) -> int:
        epoch = max(self._last + 1, self._now_ns())
        if self._path is not None:
            temporary = self._path.with_suffix(".tmp")
            with temporary.open("w") as handle:
                handle.write(f"{epoch}\n")
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self._path)
        self._last = epoch
        return epoch


@dataclass(frozen=True)
class AgentConfig:
    """Connection and behaviour settings of one node agent.

    ``keepalive_s`` bounds failure detection: the broker fires the Will after about
    1.5 × keepalive of silence. ``load_interval_s`` is wall seconds between load reports.
    ``reply_patience_s`` is how long a reply without a deadline is retried while the broker is
    unreachable. ``drain_timeout_s`` bounds the wait for admitted work on stop. An unchanged load
    is re-published every ``load_refresh_every`` × ``load_interval_s`` (a changed one at the next
    interval).
    """

    keepalive_s: int = 30
    load_interval_s: float = 1.0
    io_timeout_s: float = 5.0
    reply_patience_s: float = 30.0
    drain_timeout_s: float = 60.0
    backoff: Backoff | None = None
    session_expiry_s: int = 3600
    load_refresh_every: int = 10

    def __post_init__(self) -> None:
        if self.load_refresh_every < 1:
            raise InvalidArgument(
                f"load_refresh_every must be ≥ 1 interval, got {self.load_refresh_every}"
            )
        if self.keepalive_s < 1:
            raise InvalidArgument(f"keepalive_s must be ≥ 1 s, got {self.keepalive_s}")
        if not self.load_interval_s > 0:
            raise InvalidArgument(f"load_interval_s must be > 0 s, got {self.load_interval_s}")
        if not (self.io_timeout_s > 0 and self.reply_patience_s > 0 and self.drain_timeout_s > 0):
            raise InvalidArgument(
                "io_timeout_s, reply_patience_s and drain_timeout_s must be > 0 s, got "
                f"{self.io_timeout_s}, {self.reply_patience_s}, {self.drain_timeout_s}"
            )


def client_id_for(satellite_id: str) -> str:
    """The MQTT client id of a node agent (fixed, so its persistent session is resumed)."""
    return f"node-{topics.check_node_id(satellite_id)}"


class NodeAgent:
    """One satellite's agent; ``await agent.run()`` serves until :meth:`stop` (or cancellation).

    Cancellation skips the drain: admitted work is abandoned by this agent (the engine's owner
    decides its fate) and OFFLINE is published best-effort before the clean disconnect.
    """

    def __init__(  # noqa: PLR0913 - the node's id, broker, engine, clock and epoch source
        self,
        satellite_id: str,
        address: BrokerAddress,
        engine: Engine,
        clock: Clock,
        *,
        epochs: EpochSource,
        config: AgentConfig | None = None,
    ) -> None:
        self._sat = topics.check_node_id(satellite_id)
        self._address = address
        self._engine = engine
        self._clock = clock
        self._epochs = epochs
        self._config = config or AgentConfig()
        self._epoch = 0
        self._state: node_pb2.NodeState.ValueType = ONLINE
        self._client: MqttClient | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._reply_tasks: set[asyncio.Task[None]] = set()
        self._session_ops: OrderedDict[str, asyncio.Future[Message]] = OrderedDict()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._log = log.bind(satellite_id=self._sat)
        self._shard: tuple[str, int] | None = None
        self._publish_slots: asyncio.Semaphore | None = None
        self._drained = False
        self._load_sent: tuple[object, ...] | None = None
        self.energy: node_pb2.NodeEnergy | None = None
        """Power and heat to report with the load (set by the shard's energy model), if any."""
        self.energy_key: tuple[object, ...] = ()
        """A coarse digest of ``energy``: a change re-publishes the load report."""
        self._load_sent_at_s = 0.0
        self.load_reports_total = 0
        """Load reports published (births, changes and refreshes)."""
        self.stale_requests_total = 0
        """Requests refused because they were addressed to an older incarnation."""

    # -- state -----------------------------------------------------------------------------------

    @property
    def satellite_id(self) -> str:
        return self._sat

    @property
    def epoch(self) -> int:
        """The incarnation of the current (or latest attempted) broker connection."""
        return self._epoch

    @property
    def state(self) -> node_pb2.NodeState.ValueType:
        return self._state

    @property
    def drained(self) -> bool:
        """Whether the last stop finished every admitted request (and its replies) in time."""
        return self._drained

    @property
    def client(self) -> MqttClient | None:
        return self._client

    @property
    def engine(self) -> Engine:
        return self._engine

    async def wait_ready(self, timeout_s: float = 10.0) -> int:
        """Return the epoch once the first birth is published; Unavailable after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            raise Unavailable(
                f"node agent {self._sat!r} did not come online within {timeout_s} s"
            ) from None
        return self._epoch

    def stop(self) -> None:
        """Ask :meth:`run` to drain and return."""
        self._stop.set()

    def status_message(
        self, state: node_pb2.NodeState.ValueType | None = None, *, drained: bool = False
    ) -> node_pb2.NodeStatus:
        load = self._engine.load()
        return node_pb2.NodeStatus(
            satellite_id=self._sat,
            epoch=self._epoch,
            state=self._state if state is None else state,
            served_models=list(load.served_models),
            slots=load.slots,
            updated_at=to_timestamp(self._clock.now()),
            drained=drained,
            shard_id=self._shard[0] if self._shard is not None else "",
            shard_epoch=self._shard[1] if self._shard is not None else 0,
        )

    def load_message(self, load: EngineLoad | None = None) -> node_pb2.LoadReport:
        """The load report of the current epoch (``load``: the engine's snapshot, taken now when
        not given)."""
        load = self._engine.load() if load is None else load
        return node_pb2.LoadReport(
            satellite_id=self._sat,
            epoch=self._epoch,
            slots=load.slots,
            in_flight=load.in_flight,
            free_slots=load.free_slots,
            queue_depth=load.queue_depth,
            queue_limit=load.queue_limit,
            served_models=list(load.served_models),
            accepting=load.accepting and self._state == ONLINE,
            sessions=load.sessions,
            session_bytes=load.session_bytes,
            executed_total=load.executed_total,
            deduplicated_total=load.deduplicated_total,
            rejected_total=load.rejected_total,
            updated_at=to_timestamp(self._clock.now()),
            energy=self.energy,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def request_filters(self) -> list[tuple[str, Handler]]:
        """The filters this agent serves requests on, with their handlers."""
        return [
            (f"{topics.PREFIX}/node/{self._sat}/rx/gs/+/{wire.INFER_CHANNEL}", self._on_infer),
            (f"{topics.PREFIX}/node/{self._sat}/rx/gs/+/session/+", self._on_session),
        ]

    async def run(self) -> None:
        """Connect on an own connection, serve, and on :meth:`stop` drain and go OFFLINE."""
        config = self._config
        client = MqttClient(
            self._address,
            client_id=client_id_for(self._sat),
            clock=self._clock,
            persistent_session=True,
            session_expiry_s=config.session_expiry_s,
            keepalive_s=config.keepalive_s,
            io_timeout_s=config.io_timeout_s,
            backoff=config.backoff,
            will=self._next_will,
            on_connect=self._on_connect,
        )
        async with client:
            for topic_filter, handler in self.request_filters():
                await client.subscribe(topic_filter, handler)
            await client.subscribe(topics.node_status(self._sat), self._on_own_status)
            await self._serve(client, own_load_loop=True)

    async def run_shared(self, client: MqttClient) -> None:
        """Serve over a shard's connection until :meth:`stop` (then drain, go OFFLINE).

        The shard subscribed :meth:`request_filters`, starts each incarnation
        (:meth:`begin_incarnation`, :meth:`announce`) and publishes the load
        (:meth:`publish_load_if_due`). Cancellation publishes nothing: the shard's own OFFLINE
        declares every member's incarnation dead.
        """
        await self._serve(client, own_load_loop=False)

    def attach(self, client: MqttClient, publish_slots: asyncio.Semaphore | None = None) -> None:
        """Publish through ``client`` (a shard's connection) from now on, before :meth:`run_shared`
        starts: the shard may announce a birth as soon as it connects. ``publish_slots`` bounds
        the status publishes in flight across the shard (a drain of every member at once must
        not time them out)."""
        self._client = client
        self._publish_slots = publish_slots

    def begin_incarnation(self, shard_id: str, shard_epoch: int) -> int:
        """A new epoch of this agent, born under incarnation ``shard_epoch`` of the shard."""
        self._epoch = self._epochs.next()
        self._shard = (topics.check_id("shard id", shard_id), shard_epoch)
        self._load_sent = None
        return self._epoch

    async def announce(self) -> bool:
        """Publish the current incarnation's status and load; True once the birth is out."""
        published = await self._publish_status_best_effort()
        if published:
            self._ready.set()
            await self.publish_load_if_due(asyncio.get_running_loop().time())
        return published

    async def _serve(self, client: MqttClient, *, own_load_loop: bool) -> None:
        request_filters = [topic_filter for topic_filter, _ in self.request_filters()]
        if self._shard is not None:  # the shard unsubscribes every member at once
            request_filters = []
        self._client = client
        offline_published = False
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                loader = (
                    tasks.create_task(self._load_loop(), name=f"node-load:{self._sat}")
                    if own_load_loop
                    else None
                )
                await self._stop.wait()
                drained = await self._drain(request_filters)
                self._drained = drained
                offline_published = await self._go_offline(drained=drained)
                if loader is not None:
                    loader.cancel()
        finally:
            self._tasks = None
            if not offline_published and self._shard is None:
                self._state = OFFLINE
                await self._publish_status_best_effort()
            self._client = None

    async def _drain(self, request_filters: list[str]) -> bool:
        """DRAINING, then wait for admitted work and its replies; True when all were sent."""
        drained = True
        self._state = DRAINING
        self._log.info("node_draining", epoch=self._epoch)
        await self._publish_status_best_effort()
        try:
            async with asyncio.timeout(self._config.drain_timeout_s):
                await self._engine.drain()
                while self._reply_tasks:
                    await asyncio.gather(*list(self._reply_tasks), return_exceptions=True)
        except TimeoutError:
            drained = False
            self._log.warning(
                "node_drain_timeout",
                drain_timeout_s=self._config.drain_timeout_s,
                replies_left=len(self._reply_tasks),
            )
        client = self._client
        if client is not None and request_filters:
            await client.unsubscribe_many(request_filters)
        return drained

    async def _go_offline(self, *, drained: bool) -> bool:
        self._state = OFFLINE
        published = await self._publish_status_best_effort(drained=drained)
        client = self._client
        if client is not None:
            with contextlib.suppress(GroundplaneError):  # clear the retained load report
                async with self._slot():
                    await client.publish(
                        topics.node_load(self._sat),
                        b"",
                        retain=True,
                        timeout_s=self._config.io_timeout_s,
                    )
        self._log.info("node_offline", epoch=self._epoch, drained=drained)
        return published

    async def _publish_status_best_effort(self, *, drained: bool = False) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            async with self._slot():
                await client.publish(
                    topics.node_status(self._sat),
                    self.status_message(drained=drained).SerializeToString(),
                    retain=True,
                    timeout_s=min(self._config.io_timeout_s, 2.0),
                )
        except GroundplaneError as error:
            self._log.warning("node_status_publish_failed", error=str(error))
            return False
        return True

    def _slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """A slot of the shard's bounded status publishes (none alone)."""
        slots = self._publish_slots
        return slots if slots is not None else contextlib.nullcontext()

    # -- liveness --------------------------------------------------------------------------------

    def _next_will(self) -> LastWill:
        """Called by the client before every CONNECT: a new incarnation and its Will."""
        self._epoch = self._epochs.next()
        will = self.status_message(OFFLINE)
        return LastWill(topics.node_status(self._sat), will.SerializeToString(), qos=1, retain=True)

    async def _on_connect(self, connection: int) -> None:
        published = await self.announce()
        self._log.info(
            "node_birth",
            epoch=self._epoch,
            connection=connection,
            state=node_pb2.NodeState.Name(self._state),
            published=published,
        )

    async def _on_own_status(self, message: ReceivedMessage) -> None:
        """Re-announce when an older incarnation's Will overwrote the retained status."""
        if not message.payload:
            return
        seen = node_pb2.NodeStatus()
        try:
            seen.ParseFromString(message.payload)
        except DecodeError:
            self._log.warning("node_status_unreadable", topic=message.topic)
            return
        if seen.epoch < self._epoch and self._state != OFFLINE and self._tasks is not None:
            self._log.info("node_rebirth", stale_epoch=seen.epoch, epoch=self._epoch)
            self._spawn(self._publish_status_best_effort(), f"node-rebirth:{self._sat}")

    async def _load_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.load_interval_s)
            await self.publish_load_if_due(asyncio.get_running_loop().time())

    async def publish_load_if_due(self, now_s: float) -> bool:
        """Publish the load report if it changed since the last one, or that one is older than
        ``load_refresh_every`` intervals (``now_s``: event-loop time); True when published."""
        client = self._client
        if client is None or not client.connected or self._ready_epoch_unset():
            return False
        load = self._engine.load()
        key = (self._epoch, self._state, load, self.energy_key)
        refresh_s = self._config.load_interval_s * self._config.load_refresh_every
        if key == self._load_sent and now_s - self._load_sent_at_s < refresh_s:
            return False
        try:
            await client.publish(
                topics.node_load(self._sat),
                self.load_message(load).SerializeToString(),
                qos=0,
                retain=True,
                timeout_s=self._config.io_timeout_s,
            )
        except GroundplaneError as error:
            self._log.debug("node_load_publish_failed", error=str(error))
            return False
        self._load_sent = key
        self._load_sent_at_s = now_s
        self.load_reports_total += 1
        return True

    def _ready_epoch_unset(self) -> bool:
        return self._epoch == 0

    # -- requests --------------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[object], name: str) -> None:
        tasks = self._tasks
        if tasks is None:
            raise Unavailable(f"node {self._sat!r} is shutting down")

        async def wrapped() -> None:
            await work

        task = tasks.create_task(wrapped(), name=name)
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)

    def _open(self, message: ReceivedMessage) -> tuple[link_pb2.Envelope, str, datetime | None]:
        """Parse a request: its envelope, the downlink topic for replies and its deadline."""
        envelope = wire.parse_envelope(message.payload)
        if not envelope.request_id:
            raise InvalidArgument(f"request on {message.topic!r} has no request id")
        reply_topic = topics.reply_via_downlink(self._sat, envelope.reply_topic)
        return envelope, reply_topic, wire.deadline_of(envelope)

    def _check_addressed(self, envelope: link_pb2.Envelope) -> None:
        if envelope.epoch and envelope.epoch < self._epoch:
            self.stale_requests_total += 1
            raise FailedPrecondition(
                f"request {envelope.request_id!r} was addressed to incarnation {envelope.epoch} of "
                f"node {self._sat!r}, which the ground saw die; this is incarnation {self._epoch}. "
                "Re-resolve the node and retry with the same request id"
            )

    async def _on_infer(self, message: ReceivedMessage) -> None:
        try:
            envelope, reply_topic, deadline = self._open(message)
        except InvalidArgument as error:
            self._log.warning("node_request_unanswerable", topic=message.topic, error=error.message)
            return
        if deadline is not None and deadline <= self._clock.now():
            self._log.info("node_request_expired", request_id=envelope.request_id)
            return
        epoch = self._epoch
        traced = tracing.start_span(  # None unless tracing is on
            "groundplane.node",
            "node.infer",
            parent=tracing.remote_context(message.user_properties, envelope.traceparent),
            attributes={"groundplane.satellite_id": self._sat, "groundplane.epoch": epoch},
        )
        try:
            self._check_addressed(envelope)
            request = wire.unpack(envelope, node_pb2.InferRequest)
            ticket = self._engine.start(
                InferenceRequest(
                    request_id=envelope.request_id,
                    model=request.model,
                    prompt=request.prompt,
                    max_tokens=request.max_tokens,
                    session_id=request.session_id or None,
                    session_epoch=(
                        request.session_epoch if request.HasField("session_epoch") else None
                    ),
                    deadline=deadline,
                )
            )
        except GroundplaneError as error:
            self._log.info(
                "node_request_refused",
                request_id=envelope.request_id,
                code=error.code.name,
                error=error.message,
            )
            tracing.end(traced, error)
            self._spawn(
                self._reply(reply_topic, envelope, wire.error_message(error), epoch, deadline),
                f"node-refuse:{envelope.request_id}",
            )
            return
        # Admitted: the handler returns now and the client acknowledges the message.
        self._spawn(
            tracing.within(
                traced,
                self._stream(
                    ticket, reply_topic, envelope, epoch, deadline, result_only=request.result_only
                ),
            ),
            f"node-reply:{envelope.request_id}",
        )

    async def _stream(  # noqa: PLR0913 - the ticket, where the reply goes, and whether to stream
        self,
        ticket: Ticket,
        reply_topic: str,
        envelope: link_pb2.Envelope,
        epoch: int,
        deadline: datetime | None,
        *,
        result_only: bool = False,
    ) -> None:
        try:
            # A unary caller takes the InferResult alone: no chunks.
            if not result_only and not await self._stream_chunks(
                ticket, reply_topic, envelope, epoch, deadline
            ):
                return
            result = await ticket.result()
        except GroundplaneError as error:
            await self._reply(reply_topic, envelope, wire.error_message(error), epoch, deadline)
            return
        final = node_pb2.InferResult(
            text=result.text,
            output_tokens=result.output_tokens,
            context_tokens=result.context_tokens,
            session_id=result.session_id or "",
            session_applied=result.session_applied,
            queued_s=result.queued_s,
            service_s=result.service_s,
            deduplicated=ticket.deduplicated,
            model=result.model,
        )
        if result.session_epoch is not None:
            final.session_epoch = result.session_epoch
        if result_only:
            final.pieces.extend(result.pieces)
        await self._reply(reply_topic, envelope, final, epoch, deadline)
        self._log.info(
            "node_request",
            request_id=envelope.request_id,
            epoch=epoch,
            deduplicated=ticket.deduplicated,
            output_tokens=result.output_tokens,
            queued_s=round(result.queued_s, 4),
            service_s=round(result.service_s, 4),
        )

    async def _stream_chunks(
        self,
        ticket: Ticket,
        reply_topic: str,
        envelope: link_pb2.Envelope,
        epoch: int,
        deadline: datetime | None,
    ) -> bool:
        """Send the pieces as InferChunks while the model makes them (those produced while a
        chunk was in transit go together in the next); False when a chunk could not be sent.
        Raises the execution's error after the pieces produced before it."""
        index = 0
        produced: asyncio.Queue[str | None] = asyncio.Queue()
        failure: list[BaseException] = []
        self._spawn(_pump_pieces(ticket, produced, failure), f"node-pieces:{envelope.request_id}")
        finished = False
        while not finished:
            first = await produced.get()
            if first is None:
                break
            batch = [first]
            while not produced.empty():  # everything produced while the last chunk went out
                more = produced.get_nowait()
                if more is None:
                    finished = True
                    break
                batch.append(more)
            chunk = node_pb2.InferChunk(index=index, text=batch[0], more_pieces=batch[1:])
            if not await self._reply(reply_topic, envelope, chunk, epoch, deadline):
                return False
            index += len(batch)
        if failure:
            raise failure[0]
        return True

    async def _reply(
        self,
        reply_topic: str,
        request: link_pb2.Envelope,
        payload: Message,
        epoch: int,
        deadline: datetime | None,
    ) -> bool:
        """Publish one reply; retry while the broker is unreachable, until the deadline."""
        client = self._client
        if client is None:
            return False
        data = wire.envelope(
            payload,
            request_id=request.request_id,
            sender_id=self._sat,
            epoch=epoch,
            deadline=deadline,
            traceparent=request.traceparent,
        ).SerializeToString()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._config.reply_patience_s
        while True:
            try:
                await client.publish(
                    reply_topic, data, deadline=deadline, timeout_s=self._config.io_timeout_s
                )
                return True
            except DeadlineExceeded:
                self._log.info("node_reply_expired", request_id=request.request_id)
                return False
            except Unavailable as error:
                left_s = give_up - loop.time()
                if deadline is None and left_s <= 0:
                    self._log.warning(
                        "node_reply_abandoned", request_id=request.request_id, error=error.message
                    )
                    return False
                # Pause first: the client may still look connected while paho already knows
                # the connection is gone, and retrying at once would starve the event loop.
                await asyncio.sleep(_REPLY_RETRY_PAUSE_S)
                with contextlib.suppress(Unavailable):
                    await client.wait_connected(self._config.io_timeout_s)

    # -- sessions --------------------------------------------------------------------------------

    async def _on_session(self, message: ReceivedMessage) -> None:
        try:
            envelope, reply_topic, deadline = self._open(message)
            channel = topics.parse_delivery(message.topic).channel
        except InvalidArgument as error:
            self._log.warning("node_request_unanswerable", topic=message.topic, error=error.message)
            return
        operation = channel.removeprefix("session/")
        epoch = self._epoch
        future = self._session_ops.get(envelope.request_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._session_ops[envelope.request_id] = future
            while len(self._session_ops) > _SESSION_REPLIES_KEPT:
                oldest = next(iter(self._session_ops))
                if not self._session_ops[oldest].done():
                    break
                del self._session_ops[oldest]
            try:
                self._check_addressed(envelope)
                work = self._session_operation(operation, envelope)
            except GroundplaneError as error:
                future.set_exception(error)
            else:
                self._spawn(
                    self._settle(future, work), f"node-session-{operation}:{envelope.request_id}"
                )
        self._spawn(
            self._answer_session(future, reply_topic, envelope, epoch, deadline),
            f"node-session-reply:{envelope.request_id}",
        )

    def _session_operation(self, operation: str, envelope: link_pb2.Envelope) -> Awaitable[Message]:
        engine = self._engine
        if operation == "export":
            export = wire.unpack(envelope, node_pb2.SessionExportRequest)
            fence = export.fence_epoch if export.HasField("fence_epoch") else None

            before = engine.session(export.session_id)  # NotFound / moved away: refuse now
            bytes_per_token = (
                engine.session_size_bytes(export.session_id) // before.context_tokens
                if before.context_tokens
                else 0
            )

            async def do_export() -> Message:
                snapshot = await engine.export_session(export.session_id, fence_epoch=fence)
                state = decode_session(snapshot)
                return node_pb2.SessionExportResult(
                    session_id=state.session_id,
                    snapshot=snapshot,
                    snapshot_bytes=len(snapshot),
                    state_bytes=state.size_bytes(bytes_per_token),
                    session_epoch=state.epoch,
                    context_tokens=state.context_tokens,
                )

            return do_export()
        if operation == "import":
            request = wire.unpack(envelope, node_pb2.SessionImportRequest)
            epoch = request.session_epoch if request.HasField("session_epoch") else None
            state = engine.import_session(request.snapshot, epoch=epoch)
            return _ready(
                node_pb2.SessionImportResult(
                    session_id=state.session_id,
                    session_epoch=state.epoch,
                    state_bytes=engine.session_size_bytes(state.session_id),
                    context_tokens=state.context_tokens,
                )
            )
        if operation == "fence":
            fencing = wire.unpack(envelope, node_pb2.SessionFenceRequest)
            engine.fence_session(fencing.session_id, fencing.session_epoch)
            return _ready(
                node_pb2.SessionFenceResult(
                    session_id=fencing.session_id, session_epoch=fencing.session_epoch
                )
            )
        raise InvalidArgument(
            f"unknown session operation {operation!r}; expected session/export, session/import "
            "or session/fence"
        )

    @staticmethod
    async def _settle(future: asyncio.Future[Message], work: Awaitable[Message]) -> None:
        try:
            future.set_result(await work)
        except GroundplaneError as error:
            future.set_exception(error)

    async def _answer_session(
        self,
        future: asyncio.Future[Message],
        reply_topic: str,
        envelope: link_pb2.Envelope,
        epoch: int,
        deadline: datetime | None,
    ) -> None:
        try:
            reply = await asyncio.shield(future)
        except GroundplaneError as error:
            reply = wire.error_message(error)
        await self._reply(reply_topic, envelope, reply, epoch, deadline)


async def _ready(message: Message) -> Message:
    return message


async def _pump_pieces(
    ticket: Ticket, produced: asyncio.Queue[str | None], failure: list[BaseException]
) -> None:
    """Move a ticket's pieces into ``produced`` as the model makes them; ``None`` ends it.

    An error of the execution is left in ``failure`` for the sender, which reports it.
    """
    try:
        async for piece in ticket.pieces():
            produced.put_nowait(piece)
    except GroundplaneError as error:
        failure.append(error)
    finally:
        produced.put_nowait(None)
