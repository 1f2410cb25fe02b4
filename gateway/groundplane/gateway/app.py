"""Assemble a running gateway: MQTT, node directory, link watch, requester, route tables, gRPC.

::

    settings = GatewaySettings(broker=broker.address, tenants=registry,
                               routing_target="127.0.0.1:50052",
                               handoff_target="127.0.0.1:50053")
    async with GatewayApp(settings, clock) as app:
        print(app.target)          # host:port of groundplane.gateway.v1.InferenceService
        await app.wait_ready(10.0) # readiness SERVING: a route table and MQTT are live
        await app.wait_closed()    # or serve until a signal

Route tables come from ``routing_target`` (host:port of a ``RoutingService``, followed through
its ``WatchRouteTable`` stream), or the caller hands a :class:`RouteTableSource` in
(``tables=``, e.g. a :class:`LocalTableSource` in tests). With ``metrics_port`` set (0 = a free
port, :attr:`GatewayApp.metrics_port` tells which), ``GET /metrics`` on ``metrics_host`` serves
the gateway's Prometheus registry (:class:`~groundplane.kernel.metrics_http.MetricsServer`;
every other path is 404).

Session turns (calls with a ``session_id``) go to the handoff manager at ``handoff_target``
(host:port of a ``HandoffService``) through
:class:`~groundplane.gateway.turns.GrpcSessionTurns`. Without it, sessions stick to their
satellite and lose their context when it sets.

**Readiness.** The gRPC server starts with liveness SERVING and readiness (and the service's
entry) NOT_SERVING. It turns SERVING once the gateway holds a route table (the source's
``current()`` is not None) and its MQTT client is connected with every subscription granted
(node directory, link states, replies), and NOT_SERVING again while either is lost: MQTT at
once, the route table feed when it has been lost for more than :data:`ROUTE_FEED_LOSS_S`. The
feed counts as lost while the routing service at ``routing_target`` cannot be reached: a gRPC
health ``Watch`` of its ``liveness`` entry is not open or says NOT_SERVING (a routing server
without that entry answers SERVICE_UNKNOWN, which counts as reachable). A short gap (routing
restarting, the table stream reconnecting) keeps the gateway serving on its last table; a longer
one takes it out of a load balancer's rotation until routing answers again. With ``tables=``
there is no feed to watch: only the table and MQTT count.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.metrics import GatewayMetrics
from groundplane.gateway.service import GatewayConfig, InferenceGateway
from groundplane.gateway.servicer import InferenceServicer
from groundplane.gateway.sources import LinkWatch, RouteTableSource, SessionRouter
from groundplane.gateway.turns import GrpcSessionTurns, SessionTurns
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import LIVENESS, GrpcServer
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.client import NodeDirectory, Requester
from groundplane.routing.client import WatchedTableSource

log = structlog.get_logger("groundplane.gateway.app")

ROUTE_FEED_LOSS_S = 3.0
"""Wall seconds the routing service may be unreachable before the gateway turns unready."""
READINESS_CHECK_S = 0.25
"""Wall seconds between two readiness checks when no new route table arrives meanwhile."""
FEED_WATCH_RENEW_S = 30.0
"""Wall seconds one health Watch of the routing service lasts before it is reopened (bounds the
wait on a connection that died without a reset)."""
FEED_BACKOFF = Backoff(base_s=0.2, factor=1.6, cap_s=2.0, jitter=0.2)
"""Delay before reopening a health Watch of the routing service that failed."""


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway connects and listens, and its tenants and limits."""

    broker: BrokerAddress
    tenants: TenantRegistry
    instance_id: str = "gw-1"
    grpc_address: str = "127.0.0.1:0"
    routing_target: str | None = None
    """host:port of a ``groundplane.routing.v1.RoutingService`` streaming the route table."""
    handoff_target: str | None = None
    """host:port of a ``groundplane.handoff.v1.HandoffService`` serving session turns."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    config: GatewayConfig = field(default_factory=GatewayConfig)
    mqtt_io_timeout_s: float = 5.0
    backoff: Backoff | None = None
    drain_grace_s: float = 5.0
    unready_delay_s: float = 1.0
    route_feed_loss_s: float = ROUTE_FEED_LOSS_S
    """Wall seconds the routing service may be unreachable before readiness goes NOT_SERVING."""


class RouteFeed:
    """Whether the routing service streaming the route table can be reached (see the module
    doc): a health ``Watch`` of its ``liveness`` entry, reopened with backoff when it fails."""

    def __init__(self, target: str, *, backoff: Backoff = FEED_BACKOFF) -> None:
        self._target = target
        self._backoff = backoff
        self._rng = random.Random()
        self._lost_since: float | None = time.monotonic()

    def lost_for_s(self) -> float:
        """Wall seconds since the feed was lost (or since start, before it was first reached);
        0 while it is up."""
        if self._lost_since is None:
            return 0.0
        return time.monotonic() - self._lost_since

    def _up(self, up: bool) -> None:
        if up:
            self._lost_since = None
        elif self._lost_since is None:
            self._lost_since = time.monotonic()
            log.warning("route_feed_lost", target=self._target)

    async def run(self) -> None:
        """Watch until cancelled."""
        failures = 0
        request = health_pb2.HealthCheckRequest(service=LIVENESS)
        async with grpc.aio.insecure_channel(self._target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                answered = False
                try:
                    async for reply in stub.Watch(request, timeout=FEED_WATCH_RENEW_S):
                        answered = True
                        failures = 0
                        self._up(reply.status != health_pb2.HealthCheckResponse.NOT_SERVING)
                except grpc.aio.AioRpcError as error:
                    if answered and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue  # the Watch outlived its deadline while routing answered
                self._up(False)
                await asyncio.sleep(self._backoff.delay_s(failures, self._rng))
                failures += 1


class GatewayApp:
    """A running gateway (an async context manager)."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Clock,
        *,
        tables: RouteTableSource | None = None,
        sessions: SessionRouter | None = None,
    ) -> None:
        if tables is None and settings.routing_target is None:
            raise InvalidArgument(
                "the gateway needs route tables: set routing_target (host:port of the routing "
                "service) or pass tables="
            )
        self.settings = settings
        self.clock = clock
        self.directory = NodeDirectory()
        self.links = LinkWatch()
        self.metrics = GatewayMetrics()
        self._tables = tables
        self._sessions = sessions
        self._feed: RouteFeed | None = None
        self._ready = asyncio.Event()
        self._client: MqttClient | None = None
        self._stack: AsyncExitStack | None = None
        self._server: GrpcServer | None = None
        self._gateway: InferenceGateway | None = None
        self._metrics_port: int | None = None

    @property
    def gateway(self) -> InferenceGateway:
        if self._gateway is None:
            raise RuntimeError("the gateway is not started; use `async with GatewayApp(...)`")
        return self._gateway

    @property
    def target(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not started; use `async with GatewayApp(...)`")
        return self._server.target

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_port

    async def __aenter__(self) -> Self:
        settings = self.settings
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            client = await stack.enter_async_context(
                MqttClient(
                    settings.broker,
                    client_id=f"gateway-{settings.instance_id}",
                    clock=self.clock,
                    io_timeout_s=settings.mqtt_io_timeout_s,
                    backoff=settings.backoff,
                )
            )
            self._client = client
            await client.wait_connected(settings.mqtt_io_timeout_s)
            await self.directory.attach(client)
            await self.links.attach(client)
            requester = await stack.enter_async_context(
                Requester(
                    client,
                    self.clock,
                    instance_id=settings.instance_id,
                    directory=self.directory,
                    publish_timeout_s=settings.mqtt_io_timeout_s,
                )
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            tables = self._tables
            if tables is None:
                assert settings.routing_target is not None
                watched = WatchedTableSource(settings.routing_target)
                watch = tasks.create_task(watched.run(), name="gateway-route-table-watch")
                stack.callback(watch.cancel)
                tables = watched
                self._feed = RouteFeed(settings.routing_target)
                feed = tasks.create_task(self._feed.run(), name="gateway-route-feed-health")
                stack.callback(feed.cancel)
            self._tables = tables
            session_turns: SessionTurns | None = None
            if settings.handoff_target is not None:
                channel = grpc.aio.insecure_channel(settings.handoff_target)
                stack.push_async_callback(channel.close, None)
                session_turns = GrpcSessionTurns(channel, self.clock)
            self._gateway = InferenceGateway(
                clock=self.clock,
                caller=requester,
                tables=tables,
                config=settings.config,
                sessions=self._sessions,
                links=self.links,
                directory=self.directory,
                metrics=self.metrics,
                session_turns=session_turns,
            )
            if settings.metrics_port is not None:
                metrics_server = await stack.enter_async_context(
                    MetricsServer(
                        self.metrics.registry,
                        host=settings.metrics_host,
                        port=settings.metrics_port,
                    )
                )
                self._metrics_port = metrics_server.port
                log.info("gateway_metrics_serving", url=metrics_server.url)
            servicer = InferenceServicer(self._gateway, settings.tenants)
            self._server = GrpcServer(
                [servicer.binding()],
                address=settings.grpc_address,
                drain_grace_s=settings.drain_grace_s,
                unready_delay_s=settings.unready_delay_s,
                ready_at_start=False,
            )
            await self._server.start()
            await self._publish_readiness(self._unready_reasons())
            readiness = tasks.create_task(self._keep_readiness(), name="gateway-readiness")
            stack.callback(readiness.cancel)
            stack.push_async_callback(self._server.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info("gateway_started", target=self.target, instance_id=settings.instance_id)
        return self

    def inputs_live(self) -> bool:
        """Whether the gateway can serve: a route table held, its feed not lost for longer than
        ``route_feed_loss_s``, MQTT connected with every subscription granted."""
        return not self._unready_reasons()

    def _unready_reasons(self) -> list[str]:
        reasons: list[str] = []
        if self._tables is None or self._tables.current() is None:
            reasons.append("no route table yet")
        if self._feed is not None and self._feed.lost_for_s() > self.settings.route_feed_loss_s:
            reasons.append(f"routing unreachable for more than {self.settings.route_feed_loss_s} s")
        client = self._client
        if client is None or not client.connected:
            reasons.append("not connected to the broker")
        elif client.refused_subscriptions:
            reasons.append(f"subscriptions refused: {sorted(client.refused_subscriptions)}")
        return reasons

    async def _keep_readiness(self) -> None:
        """Readiness follows :meth:`inputs_live`, checked on every new table and every
        :data:`READINESS_CHECK_S` between them."""
        assert self._tables is not None
        reasons = self._unready_reasons()
        while True:
            await self._tables.wait_for_update(READINESS_CHECK_S)
            now_reasons = self._unready_reasons()
            if now_reasons != reasons:
                reasons = now_reasons
                await self._publish_readiness(reasons)

    async def _publish_readiness(self, reasons: list[str]) -> None:
        assert self._server is not None
        log.info("gateway_readiness", ready=not reasons, unready_because=reasons)
        await self._server.set_ready(not reasons)
        if reasons:
            self._ready.clear()
        else:
            self._ready.set()

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once readiness is SERVING; DeadlineExceeded naming what is missing after
        ``timeout_s`` wall seconds."""
        if self._server is None:
            raise RuntimeError("the gateway is not started; use `async with GatewayApp(...)`")
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the gateway is not ready after {timeout_s} s: "
                f"{'; '.join(self._unready_reasons()) or 'readiness not published yet'}"
            ) from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def wait_closed(self) -> None:
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        await self._server.wait_stopped()
