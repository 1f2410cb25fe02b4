"""What the gateway decides from: the route table, session assignments and link state.

* :class:`RouteTableSource` gives the latest :class:`RouteTable`. In production it is
  :class:`~groundplane.routing.client.WatchedTableSource` (the routing service's
  ``WatchRouteTable`` stream, turned back into tables by routing's client module); tests use
  :class:`LocalTableSource`.
* :class:`SessionRouter` is the session assignment hook: which satellites a session's turn may
  go to. The default :class:`StickySessionRouter` keeps a session on its satellite through the
  table's stickiness (``StickyMemory`` keyed by session id); the handoff manager will supply the
  current assignment instead.
* :class:`LinkWatch` follows the retained link states (``gp/v1/link/<station>/<sat>/state``) so
  an attempt whose link goes down fails over at once instead of waiting for its deadline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import structlog
from google.protobuf.message import DecodeError

from groundplane.kernel.errors import InvalidArgument
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.routing.client import (
    Assignment,
    LatestTable,
    RouteDecision,
    RouteRequest,
    RouteTable,
    StickyMemory,
)

log = structlog.get_logger("groundplane.gateway.sources")


class RouteTableSource(Protocol):
    """The latest route table, and a way to wait for the next one."""

    def current(self) -> RouteTable | None: ...

    async def wait_for_update(self, timeout_s: float) -> bool:
        """True when a new table arrived within ``timeout_s`` wall seconds."""
        ...


class LocalTableSource(LatestTable):
    """A table handed in by the owner (tests, or a routing service in the same process)."""

    def __init__(self, table: RouteTable | None = None) -> None:
        super().__init__()
        if table is not None:
            self.publish(table)


class SessionRouter(Protocol):
    """The session assignment hook: the ordered candidates for one request."""

    def decide(
        self,
        table: RouteTable,
        request: RouteRequest,
        now: datetime,
        *,
        local_in_flight: Mapping[str, int],
    ) -> RouteDecision: ...

    def assigned(self, session_id: str, satellite_id: str, station_id: str, now: datetime) -> None:
        """The turn of ``session_id`` was answered by ``satellite_id`` via ``station_id``."""
        ...


class StickySessionRouter:
    """Sessions stay on their satellite (the table's stickiness), keyed by session id."""

    def __init__(self, memory: StickyMemory | None = None) -> None:
        self.memory = memory if memory is not None else StickyMemory()

    def decide(
        self,
        table: RouteTable,
        request: RouteRequest,
        now: datetime,
        *,
        local_in_flight: Mapping[str, int],
    ) -> RouteDecision:
        if not request.session_key:
            return table.decide(request, now, local_in_flight=local_in_flight)
        return table.decide(request, now, local_in_flight=local_in_flight, memory=self.memory)

    def assigned(self, session_id: str, satellite_id: str, station_id: str, now: datetime) -> None:
        current = self.memory.get(session_id)
        if current is not None and current.satellite_id == satellite_id:
            if current.station_id != station_id:
                self.memory.put(session_id, Assignment(satellite_id, station_id, current.since))
            return
        self.memory.put(session_id, Assignment(satellite_id, station_id, now))


class LinkWatch:
    """Up/down of every ground link, with callbacks when one goes down."""

    def __init__(self) -> None:
        self._down: set[tuple[str, str]] = set()
        self._listeners: defaultdict[tuple[str, str], list[Callable[[], None]]] = defaultdict(list)

    def is_down(self, station_id: str, satellite_id: str) -> bool:
        return (station_id, satellite_id) in self._down

    def observe(self, station_id: str, satellite_id: str, up: bool) -> None:
        key = (station_id, satellite_id)
        if up:
            self._down.discard(key)
            return
        if key in self._down:
            return
        self._down.add(key)
        for listener in list(self._listeners.get(key, ())):
            listener()

    def on_down(
        self, station_id: str, satellite_id: str, listener: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``listener`` when the link goes down; returns the remover."""
        key = (station_id, satellite_id)
        self._listeners[key].append(listener)

        def remove() -> None:
            listeners = self._listeners.get(key)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[key]

        return remove

    async def attach(self, client: MqttClient) -> None:
        await client.subscribe(topics.LINK_STATE_FILTER, self._on_state)

    async def _on_state(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        state = link_pb2.LinkState()
        try:
            state.ParseFromString(message.payload)
        except DecodeError:
            log.warning("link_state_rejected", topic=message.topic)
            return
        try:
            station_id, satellite_id = topics.parse_link_state(message.topic)
        except InvalidArgument:
            log.warning("link_state_rejected", topic=message.topic)
            return
        self.observe(station_id, satellite_id, state.up)
