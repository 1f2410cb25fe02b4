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
every other path is 404). With ``http_address`` set (``host:port``, port 0 = a free one,
:attr:`GatewayApp.http_base_url` tells which), the OpenAI-compatible HTTP front door
(:mod:`groundplane.gateway.http`) serves the same gateway core as the gRPC service, its uvicorn
server a task of the app's task group, stopped (in-flight requests drained within
``drain_grace_s``) after the gRPC server on exit.

Session turns (calls with a ``session_id``) go to the handoff manager at ``handoff_target``
(host:port of a ``HandoffService``) through
:class:`~groundplane.gateway.turns.GrpcSessionTurns`. Without it, sessions stick to their
satellite and lose their context when it sets.

**Readiness.** The gRPC server starts with liveness SERVING and readiness (and the service's
entry) NOT_SERVING. It turns SERVING once the gateway holds a route table (the source's
``current()`` is not None) and its MQTT client is connected with every subscription granted
(node directory, link states, replies), and NOT_SERVING again while either is lost: MQTT at
once, the route table feed when it has been lost for more than :data:`ROUTE_FEED_LOSS_S`. The
feed is the route table stream itself: a
:class:`~groundplane.routing.client.WatchedTableSource` counts as lost from the moment its stream
breaks until a reopened stream delivers a table (:attr:`~WatchedTableSource.connected`); a routing
server that answers health but streams no table is as lost as one that is gone. A short gap
(routing restarting, the stream reconnecting) keeps the gateway serving on its last table; a
longer one takes it out of a load balancer's rotation until a stream delivers again. A source
handed in with ``tables=`` is watched the same way when it is a ``WatchedTableSource``; any
other source (a :class:`LocalTableSource` in tests) has no feed: only the table and MQTT count.

**Start order.** Every subscription (node directory, link states, replies) is registered on the
MQTT client before it connects, so the first connect subscribes them all in one SUBSCRIBE whose
SUBACK the broker sends before any of the retained messages (thousands of node statuses, loads
and link states on a large constellation): no subscription waits behind another's retained storm.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import structlog

from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.feed import GatewayMonitorServicer, ServedFeed
from groundplane.gateway.http import HttpApi, HttpFrontDoor
from groundplane.gateway.metrics import GatewayMetrics
from groundplane.gateway.service import GatewayConfig, InferenceGateway
from groundplane.gateway.servicer import InferenceServicer
from groundplane.gateway.sources import LinkWatch, RouteTableSource, SessionRouter
from groundplane.gateway.turns import GrpcSessionTurns, SessionTurns
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.tls import open_channel
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.client import NodeDirectory, Requester
from groundplane.routing.client import WatchedTableSource

log = structlog.get_logger("groundplane.gateway.app")

ROUTE_FEED_LOSS_S = 3.0
"""Wall seconds the route table stream may be lost before the gateway turns unready."""
READINESS_CHECK_S = 0.25
"""Wall seconds between two readiness checks when no new route table arrives meanwhile."""


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
    http_address: str | None = None
    """host:port of the OpenAI-compatible HTTP front door (port 0: a free one); None: not served."""
    config: GatewayConfig = field(default_factory=GatewayConfig)
    mqtt_io_timeout_s: float = 5.0
    backoff: Backoff | None = None
    drain_grace_s: float = 5.0
    unready_delay_s: float = 1.0
    route_feed_loss_s: float = ROUTE_FEED_LOSS_S
    """Wall seconds the route table stream may be lost before readiness goes NOT_SERVING."""


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
        self.served = ServedFeed()
        """Every finished call, for ``GatewayMonitorService.WatchRequests`` (the dashboard)."""
        self._tables = tables
        self._sessions = sessions
        self._feed: WatchedTableSource | None = None
        self._ready = asyncio.Event()
        self._published_reasons: list[str] | None = None
        """What readiness was last published with (None: nothing published yet)."""
        self._client: MqttClient | None = None
        self._stack: AsyncExitStack | None = None
        self._server: GrpcServer | None = None
        self._gateway: InferenceGateway | None = None
        self._metrics_port: int | None = None
        self._http: HttpFrontDoor | None = None

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
    def mqtt(self) -> MqttClient:
        """The gateway's MQTT client (a service account)."""
        if self._client is None:
            raise RuntimeError("the gateway is not started; use `async with GatewayApp(...)`")
        return self._client

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_port

    @property
    def http_base_url(self) -> str | None:
        """``http://HOST:PORT/v1`` of the HTTP front door (an OpenAI client's ``base_url``);
        None when ``http_address`` is not set."""
        return None if self._http is None else self._http.base_url

    async def __aenter__(self) -> Self:
        settings = self.settings
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            client = MqttClient(
                settings.broker,
                client_id=f"gateway-{settings.instance_id}",
                clock=self.clock,
                io_timeout_s=settings.mqtt_io_timeout_s,
                backoff=settings.backoff,
            )
            requester = Requester(
                client,
                self.clock,
                instance_id=settings.instance_id,
                directory=self.directory,
                publish_timeout_s=settings.mqtt_io_timeout_s,
            )
            # Registered before the client connects (nothing is sent yet): the first connect
            # subscribes every filter in one request (see "Start order" in the module doc).
            await self.directory.attach(client)
            await self.links.attach(client)
            await stack.enter_async_context(requester)
            await stack.enter_async_context(client)
            self._client = client
            await client.wait_connected(settings.mqtt_io_timeout_s)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            tables = self._tables
            if tables is None:
                assert settings.routing_target is not None
                watched = WatchedTableSource(settings.routing_target)
                watch = tasks.create_task(watched.run(), name="gateway-route-table-watch")
                stack.callback(watch.cancel)
                tables = watched
            self._tables = tables
            self._feed = tables if isinstance(tables, WatchedTableSource) else None
            session_turns: SessionTurns | None = None
            if settings.handoff_target is not None:
                channel = open_channel(settings.handoff_target)
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
            servicer = InferenceServicer(self._gateway, settings.tenants, self.served)
            self._server = GrpcServer(
                [servicer.binding(), GatewayMonitorServicer(self.served).binding()],
                address=settings.grpc_address,
                drain_grace_s=settings.drain_grace_s,
                unready_delay_s=settings.unready_delay_s,
                ready_at_start=False,
            )
            await self._server.start()
            if settings.http_address is not None:
                front = HttpFrontDoor(
                    HttpApi(
                        self._gateway,
                        settings.tenants,
                        tables,
                        links=self.links,
                        directory=self.directory,
                    ),
                    settings.http_address,
                    drain_grace_s=settings.drain_grace_s,
                )
                front.bind()
                tasks.create_task(front.serve(), name="gateway-http")
                stack.push_async_callback(front.stop)
                self._http = front
            await self._publish_readiness(self._unready_reasons())
            readiness = tasks.create_task(self._keep_readiness(), name="gateway-readiness")
            stack.callback(readiness.cancel)
            stack.push_async_callback(self._server.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info(
            "gateway_started",
            target=self.target,
            http_base_url=self.http_base_url,
            instance_id=settings.instance_id,
        )
        return self

    def inputs_live(self) -> bool:
        """Whether the gateway can serve: a route table held, its stream not lost for longer than
        ``route_feed_loss_s``, MQTT connected with every subscription granted."""
        return not self._unready_reasons()

    def _unready_reasons(self) -> list[str]:
        reasons: list[str] = []
        if self._tables is None or self._tables.current() is None:
            reasons.append("no route table yet")
        loss_s = self.settings.route_feed_loss_s
        if self._feed is not None and self._feed.disconnected_for_s() > loss_s:
            reasons.append(f"no route table stream from routing for more than {loss_s} s")
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
        while True:
            # Compared with what was last published, not with a value read when this task
            # began: a table arriving between the first publish and this task's start must
            # still turn readiness SERVING.
            now_reasons = self._unready_reasons()
            if now_reasons != self._published_reasons:
                await self._publish_readiness(now_reasons)
            await self._tables.wait_for_update(READINESS_CHECK_S)

    async def _publish_readiness(self, reasons: list[str]) -> None:
        assert self._server is not None
        log.info("gateway_readiness", ready=not reasons, unready_because=reasons)
        self._published_reasons = list(reasons)
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
