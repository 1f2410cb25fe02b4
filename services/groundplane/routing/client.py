"""The client side of the routing contract: what other services import from ``groundplane.routing``.

Routing is served as ``groundplane.routing.v1.RoutingService`` (``groundplane serve routing``).
A caller that decides per request itself (the gateway) follows the whole route table with
:class:`WatchedTableSource` (the ``WatchRouteTable`` stream, each table decoded back into a
:class:`RouteTable` by :func:`~groundplane.routing.convert.table_from_proto`) and decides on it
locally with the pure decision types re-exported here (:class:`RouteRequest`,
:class:`RouteDecision`, :class:`StickyMemory`, :class:`InFlightCounter`, …). The handoff planner
scores successors with the same pure policy (:func:`score`, :func:`rank_order`).

Nothing here imports routing's runtime (service, servicer, app): a client never runs routing.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import structlog

from groundplane.kernel.errors import GroundplaneError
from groundplane.kernel.tls import open_channel
from groundplane.mqtt.client import Backoff
from groundplane.routing.backhaul import BackhaulModel
from groundplane.routing.convert import (
    SERVICE_NAME,
    policy_from_proto,
    policy_to_proto,
    table_from_proto,
)
from groundplane.routing.policy import (
    Assignment,
    Candidate,
    InFlightCounter,
    PolicyKind,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    StickyMemory,
    rank_order,
    score,
)
from groundplane.routing.table import RouteTable
from groundplane.routing.v1 import routing_pb2, routing_pb2_grpc

__all__ = [
    "SERVICE_NAME",
    "WATCH_BACKOFF",
    "Assignment",
    "BackhaulModel",
    "Candidate",
    "InFlightCounter",
    "LatestTable",
    "PolicyKind",
    "RouteDecision",
    "RouteRequest",
    "RouteTable",
    "RoutingPolicy",
    "StickyMemory",
    "WatchedTableSource",
    "policy_from_proto",
    "policy_to_proto",
    "rank_order",
    "score",
    "table_from_proto",
]

log = structlog.get_logger("groundplane.routing.client")

WATCH_BACKOFF = Backoff(base_s=0.1, factor=1.6, cap_s=1.0, jitter=0.2)
"""Reopening a broken table stream: quickly, and at least every 1.2 s while routing stays away,
so a restarted routing process is followed again about a second after it is back (one stream
per gateway: cheap to retry)."""


class LatestTable:
    """The latest route table, and a way to wait for the next one."""

    def __init__(self) -> None:
        self._table: RouteTable | None = None
        self._changed = asyncio.Event()

    def current(self) -> RouteTable | None:
        return self._table

    def publish(self, table: RouteTable) -> None:
        self._table = table
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_update(self, timeout_s: float) -> bool:
        """True when a new table arrived within ``timeout_s`` wall seconds."""
        changed = self._changed
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await changed.wait()
        except TimeoutError:
            return False
        return True


class WatchedTableSource(LatestTable):
    """Follows ``RoutingService.WatchRouteTable`` on ``target``, reconnecting after failures.

    A broken stream, or one silent for ``idle_timeout_s`` wall seconds, is reopened after a
    jittered exponential ``backoff`` (reset by every table received). The last table stays
    :meth:`current` while the stream is down.
    """

    def __init__(
        self,
        target: str,
        *,
        backhaul: BackhaulModel | None = None,
        backoff: Backoff = WATCH_BACKOFF,
        idle_timeout_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._target = target
        self._backhaul = backhaul
        self._backoff = backoff
        self._idle_timeout_s = idle_timeout_s
        self._rng = rng or random.Random()
        self._connected = False
        self._lost_since: float | None = time.monotonic()
        self.tables_received_total = 0

    @property
    def connected(self) -> bool:
        """Whether a stream is open now (it delivered a table and has not broken since)."""
        return self._connected

    def disconnected_for_s(self) -> float:
        """Wall seconds since the stream last broke (or since this source was made, before a
        stream first delivered a table); 0 while :attr:`connected`."""
        if self._connected or self._lost_since is None:
            return 0.0
        return time.monotonic() - self._lost_since

    async def run(self) -> None:
        """Watch until cancelled."""
        attempt = 0
        while True:
            try:
                async with open_channel(self._target) as channel:
                    stub = routing_pb2_grpc.RoutingServiceStub(channel)
                    call = stub.WatchRouteTable(routing_pb2.WatchRouteTableRequest())
                    iterator = call.__aiter__()
                    while True:
                        async with asyncio.timeout(self._idle_timeout_s):
                            response = await anext(iterator)
                        table = await asyncio.to_thread(
                            table_from_proto, response.table, self._backhaul
                        )
                        self._connected = True
                        self._lost_since = None
                        self.publish(table)
                        self.tables_received_total += 1
                        attempt = 0
            except (grpc.aio.AioRpcError, TimeoutError, StopAsyncIteration, GroundplaneError) as e:
                log.warning("route_table_watch_broken", target=self._target, error=str(e))
            finally:
                self._connected = False
                if self._lost_since is None:
                    self._lost_since = time.monotonic()
            await asyncio.sleep(self._backoff.delay_s(attempt, self._rng))
            attempt += 1
