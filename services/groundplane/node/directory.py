"""Who is alive, at which incarnation, and how loaded: the ground's view of the nodes.

:class:`NodeDirectory` is pure bookkeeping fed with :class:`NodeStatus` and :class:`LoadReport`
messages (from ``gp/v1/node/+/status`` and ``gp/v1/node/+/load``; :meth:`NodeDirectory.attach`
subscribes an :class:`~groundplane.mqtt.client.MqttClient` to both). The rules (docs/topics.md,
"Liveness and epochs"):

* per satellite the **highest epoch wins**: a status with a lower epoch than the one held is a
  late Will (or an echo of a dead incarnation) and is ignored;
* within one epoch the state only moves forward: ONLINE → DRAINING → OFFLINE. An epoch once
  OFFLINE stays dead, so a redelivered birth cannot revive it;
* a reply envelope from satellite ``s`` stamped with epoch ``e`` is **accepted** only if ``e`` is
  not lower than the held epoch and epoch ``e`` did not die (OFFLINE from its Will, as opposed
  to OFFLINE ``drained`` after a graceful stop) (:meth:`NodeDirectory.accepts`); work done by an
  incarnation the ground declared dead is rejected;
* load reports count only for the epoch they were measured in;
* **shards** (``gp/v1/shard/+/status``, :class:`ShardStatus`): a node whose status names a shard
  and shard epoch ``k`` shares that shard's one connection and Will. Per shard the highest epoch
  wins as for nodes; while the shard's held status is OFFLINE at epoch ``k``, or names a later
  epoch than ``k``, the node's incarnation counts as OFFLINE (``drained`` only when the shard
  stopped gracefully at ``k``), whatever order the retained messages arrive in. A new shard
  birth brings its nodes back through their own new births (higher node epochs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog
from google.protobuf.message import DecodeError

from groundplane.kernel.errors import DeadlineExceeded, InvalidArgument
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node.v1 import node_pb2

log = structlog.get_logger("groundplane.node.directory")

ONLINE = node_pb2.NODE_STATE_ONLINE
DRAINING = node_pb2.NODE_STATE_DRAINING
OFFLINE = node_pb2.NODE_STATE_OFFLINE
_RANK = {ONLINE: 1, DRAINING: 2, OFFLINE: 3}


@dataclass(frozen=True)
class NodeView:
    """What the ground knows about one satellite's current incarnation."""

    satellite_id: str
    epoch: int
    state: node_pb2.NodeState.ValueType
    served_models: tuple[str, ...]
    slots: int
    load: node_pb2.LoadReport | None
    """The latest load report of this epoch, if any arrived."""
    drained: bool = False
    """OFFLINE after a graceful drain: its replies still crossing a link remain valid."""
    shard_id: str = ""
    """The nodes shard carrying this incarnation ("" when the node has its own connection)."""
    shard_epoch: int = 0
    """The shard incarnation this node incarnation was born under."""

    @property
    def died(self) -> bool:
        """OFFLINE without a drain (the Will fired): this epoch's replies are stale."""
        return self.state == OFFLINE and not self.drained

    @property
    def alive(self) -> bool:
        """ONLINE or DRAINING: replies from this epoch are still accepted."""
        return self.state in (ONLINE, DRAINING)

    @property
    def accepting(self) -> bool:
        """ONLINE and (as far as the last load report says) admitting new work."""
        return self.state == ONLINE and (self.load is None or self.load.accepting)

    def serves(self, model: str) -> bool:
        return model in self.served_models


@dataclass(frozen=True)
class ShardView:
    """What the ground knows about one nodes shard's current incarnation."""

    shard_id: str
    epoch: int
    state: node_pb2.NodeState.ValueType
    members: tuple[str, ...]
    drained: bool = False

    def ends(self, view: NodeView) -> bool:
        """Whether this shard status ends node incarnation ``view`` (which names this shard)."""
        return self.epoch > view.shard_epoch or (
            self.epoch == view.shard_epoch and self.state == OFFLINE
        )


Listener = Callable[[NodeView], None]


class NodeDirectory:
    """Liveness and load of every node seen, by satellite id."""

    def __init__(self) -> None:
        self._views: dict[str, NodeView] = {}
        self._shards: dict[str, ShardView] = {}
        self._shard_nodes: dict[str, set[str]] = {}
        self._early_loads: dict[str, node_pb2.LoadReport] = {}
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self.ignored_statuses_total = 0
        """Statuses dropped by the epoch rules (late Wills, stale echoes)."""

    # -- pure bookkeeping ------------------------------------------------------------------------

    def observe_status(self, status: node_pb2.NodeStatus) -> bool:
        """Apply a status message; True when it changed the view (epoch or state)."""
        sat = topics.check_node_id(status.satellite_id)
        if status.state not in _RANK:
            raise InvalidArgument(
                f"node status of {sat!r} must be ONLINE, DRAINING or OFFLINE, got state "
                f"{status.state}"
            )
        current = self._views.get(sat)
        if current is not None and (
            status.epoch < current.epoch
            or (status.epoch == current.epoch and _RANK[status.state] <= _RANK[current.state])
        ):
            if status.epoch < current.epoch or status.state != current.state:
                self.ignored_statuses_total += 1
            return False
        load = current.load if current is not None and current.epoch == status.epoch else None
        early = self._early_loads.get(sat)
        if early is not None and early.epoch == status.epoch:
            load = early
        if early is not None and early.epoch <= status.epoch:
            del self._early_loads[sat]
        view = NodeView(
            satellite_id=sat,
            epoch=status.epoch,
            state=status.state,
            served_models=tuple(status.served_models),
            slots=status.slots,
            load=load,
            drained=status.state == OFFLINE and status.drained,
            shard_id=status.shard_id,
            shard_epoch=status.shard_epoch if status.shard_id else 0,
        )
        if current is not None and current.shard_id and current.shard_id != view.shard_id:
            self._shard_nodes.get(current.shard_id, set()).discard(sat)
        if view.shard_id:
            self._shard_nodes.setdefault(view.shard_id, set()).add(sat)
            view = self._ended_by_shard(view)
        self._views[sat] = view
        self._notify(view)
        return True

    def observe_shard(self, status: node_pb2.ShardStatus) -> bool:
        """Apply a shard status; True when it changed the shard's view (epoch or state).

        Every node incarnation of this shard that the new status ends becomes OFFLINE (each
        listener is told, as for a node's own status).
        """
        shard_id = topics.check_id("shard id", status.shard_id)
        if status.state not in _RANK:
            raise InvalidArgument(
                f"shard status of {shard_id!r} must be ONLINE, DRAINING or OFFLINE, got state "
                f"{status.state}"
            )
        current = self._shards.get(shard_id)
        if current is not None and (
            status.epoch < current.epoch
            or (status.epoch == current.epoch and _RANK[status.state] <= _RANK[current.state])
        ):
            if status.epoch < current.epoch or status.state != current.state:
                self.ignored_statuses_total += 1
            return False
        self._shards[shard_id] = ShardView(
            shard_id=shard_id,
            epoch=status.epoch,
            state=status.state,
            members=tuple(sorted(status.members))
            or (current.members if current is not None else ()),
            drained=status.state == OFFLINE and status.drained,
        )
        changed = False
        for sat in sorted(self._shard_nodes.get(shard_id, ())):
            view = self._views[sat]
            ended = self._ended_by_shard(view)
            if ended is not view:
                self._views[sat] = ended
                self._notify(ended)
                changed = True
        if not changed:
            self._wake()
        return True

    def _ended_by_shard(self, view: NodeView) -> NodeView:
        """``view`` as OFFLINE when its shard's held status ends it; else ``view`` itself."""
        shard = self._shards.get(view.shard_id)
        if shard is None or view.state == OFFLINE or not shard.ends(view):
            return view
        drained = shard.epoch == view.shard_epoch and shard.drained
        return replace(view, state=OFFLINE, drained=drained)

    def shard(self, shard_id: str) -> ShardView | None:
        return self._shards.get(shard_id)

    def shards(self) -> list[ShardView]:
        """Every shard seen, sorted by shard id."""
        return [self._shards[shard_id] for shard_id in sorted(self._shards)]

    def observe_load(self, report: node_pb2.LoadReport) -> bool:
        """Apply a load report; True when it is the current epoch's (older ones are dropped)."""
        sat = topics.check_node_id(report.satellite_id)
        current = self._views.get(sat)
        if current is None or report.epoch > current.epoch:
            self._early_loads[sat] = report  # its birth has not arrived yet
            return False
        if report.epoch < current.epoch:
            return False
        self._views[sat] = replace(
            current,
            served_models=tuple(report.served_models) or current.served_models,
            load=report,
        )
        self._wake()
        return True

    def get(self, satellite_id: str) -> NodeView | None:
        return self._views.get(satellite_id)

    def nodes(self) -> list[NodeView]:
        """Every node seen, sorted by satellite id."""
        return [self._views[sat] for sat in sorted(self._views)]

    def epoch(self, satellite_id: str) -> int | None:
        """The highest epoch seen for the satellite, or None."""
        view = self._views.get(satellite_id)
        return view.epoch if view is not None else None

    def accepts(self, satellite_id: str, epoch: int) -> bool:
        """Whether a reply of ``satellite_id`` stamped ``epoch`` may be used.

        Unknown satellites are accepted (nothing to fence with); a lower epoch than the held one,
        or the held epoch once it died (OFFLINE by its Will, not drained), is rejected; a higher
        epoch is accepted (its birth may simply not have arrived yet). Replies of an epoch that
        drained gracefully are accepted: they were sent before its OFFLINE and are crossing a
        link.
        """
        view = self._views.get(satellite_id)
        if view is None:
            return True
        if epoch < view.epoch:
            return False
        return not (epoch == view.epoch and view.died)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with the new view after every status change; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_for(
        self, satellite_id: str, predicate: Callable[[NodeView], bool], timeout_s: float
    ) -> NodeView:
        """The satellite's view once ``predicate`` holds; DeadlineExceeded after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    view = self._views.get(satellite_id)
                    if view is not None and predicate(view):
                        return view
                    await self._changed.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"node {satellite_id!r} did not reach the awaited state within {timeout_s} s; "
                f"last seen: {self._views.get(satellite_id)}"
            ) from None

    async def wait_for_shard(
        self, shard_id: str, predicate: Callable[[ShardView], bool], timeout_s: float
    ) -> ShardView:
        """The shard's view once ``predicate`` holds; DeadlineExceeded after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    view = self._shards.get(shard_id)
                    if view is not None and predicate(view):
                        return view
                    await self._changed.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"shard {shard_id!r} did not reach the awaited state within {timeout_s} s; "
                f"last seen: {self._shards.get(shard_id)}"
            ) from None

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify(self, view: NodeView) -> None:
        self._wake()
        for listener in list(self._listeners):
            try:
                listener(view)
            except Exception:  # a broken listener must not stop the directory
                log.exception("node_directory_listener_failed", satellite_id=view.satellite_id)

    # -- MQTT ------------------------------------------------------------------------------------

    async def attach(self, client: MqttClient) -> None:
        """Subscribe ``client`` (a service account) to every node's status and load and every
        shard's status, in one SUBSCRIBE (one SUBACK, ahead of the filters' retained messages)."""
        await client.subscribe_many(
            [
                (topics.SHARD_STATUS_FILTER, self._on_shard),
                (topics.NODE_STATUS_FILTER, self._on_status),
                (topics.NODE_LOAD_FILTER, self._on_load),
            ]
        )

    async def _on_shard(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        status = node_pb2.ShardStatus()
        try:
            status.ParseFromString(message.payload)
            if status.shard_id != topics.shard_of(message.topic):
                raise InvalidArgument(
                    f"shard status on {message.topic!r} names shard {status.shard_id!r}"
                )
            changed = self.observe_shard(status)
        except (DecodeError, InvalidArgument) as error:
            log.warning("shard_status_rejected", topic=message.topic, error=str(error))
            return
        log.info(
            "shard_status",
            shard_id=status.shard_id,
            epoch=status.epoch,
            state=node_pb2.NodeState.Name(status.state),
            members=len(status.members),
            applied=changed,
        )

    async def _on_status(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return  # a cleared retained message
        status = node_pb2.NodeStatus()
        try:
            status.ParseFromString(message.payload)
            if status.satellite_id != topics.node_of(message.topic):
                raise InvalidArgument(
                    f"status on {message.topic!r} names satellite {status.satellite_id!r}"
                )
            changed = self.observe_status(status)
        except (DecodeError, InvalidArgument) as error:
            log.warning("node_status_rejected", topic=message.topic, error=str(error))
            return
        log.info(
            "node_status",
            satellite_id=status.satellite_id,
            epoch=status.epoch,
            state=node_pb2.NodeState.Name(status.state),
            applied=changed,
        )

    async def _on_load(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        report = node_pb2.LoadReport()
        try:
            report.ParseFromString(message.payload)
            if report.satellite_id != topics.node_of(message.topic):
                raise InvalidArgument(
                    f"load report on {message.topic!r} names satellite {report.satellite_id!r}"
                )
            self.observe_load(report)
        except (DecodeError, InvalidArgument) as error:
            log.warning("node_load_rejected", topic=message.topic, error=str(error))
