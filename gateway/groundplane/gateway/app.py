"""Assemble a running gateway: MQTT, node directory, link watch, requester, route tables, gRPC.

::

    settings = GatewaySettings(broker=broker.address, tenants=registry,
                               routing_target="127.0.0.1:50052")
    async with GatewayApp(settings, clock) as app:
        print(app.target)          # host:port of groundplane.gateway.v1.InferenceService
        await app.wait_closed()    # or serve until a signal

Without ``routing_target`` the caller hands a :class:`RouteTableSource` in (``tables=``), e.g. a
:class:`LocalTableSource` fed by a routing service in the same process. With ``metrics_port``
set (0 = a free port, :attr:`GatewayApp.metrics_port` tells which), ``GET /metrics`` on
``metrics_host`` serves the gateway's Prometheus registry
(:class:`~groundplane.kernel.metrics_http.MetricsServer`; every other path is 404).

Session turns (calls with a ``session_id``) go to the handoff manager when one is given: an
in-process :class:`~groundplane.gateway.turns.SessionTurns` (``session_turns=``, as
``groundplane up`` does) or ``handoff_target`` (host:port of a ``HandoffService``). Without
either, sessions stick to their satellite and lose their context when it sets.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import grpc
import structlog

from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.metrics import GatewayMetrics
from groundplane.gateway.service import GatewayConfig, InferenceGateway
from groundplane.gateway.servicer import InferenceServicer
from groundplane.gateway.sources import (
    LinkWatch,
    RouteTableSource,
    SessionRouter,
    WatchedTableSource,
)
from groundplane.gateway.turns import GrpcSessionTurns, SessionTurns
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.client import NodeDirectory, Requester

log = structlog.get_logger("groundplane.gateway.app")


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway connects and listens, and its tenants and limits."""

    broker: BrokerAddress
    tenants: TenantRegistry
    instance_id: str = "gw-1"
    grpc_address: str = "127.0.0.1:0"
    routing_target: str | None = None
    handoff_target: str | None = None
    """host:port of a ``groundplane.handoff.v1.HandoffService`` serving session turns."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    config: GatewayConfig = field(default_factory=GatewayConfig)
    mqtt_io_timeout_s: float = 5.0
    backoff: Backoff | None = None
    drain_grace_s: float = 5.0
    unready_delay_s: float = 1.0


class GatewayApp:
    """A running gateway (an async context manager)."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Clock,
        *,
        tables: RouteTableSource | None = None,
        sessions: SessionRouter | None = None,
        session_turns: SessionTurns | None = None,
    ) -> None:
        if tables is None and settings.routing_target is None:
            raise InvalidArgument(
                "the gateway needs route tables: set routing_target (host:port of the routing "
                "service) or pass tables="
            )
        if session_turns is not None and settings.handoff_target is not None:
            raise InvalidArgument(
                "the gateway takes session turns from one handoff manager: set handoff_target "
                "or pass session_turns=, not both"
            )
        self.settings = settings
        self.clock = clock
        self.directory = NodeDirectory()
        self.links = LinkWatch()
        self.metrics = GatewayMetrics()
        self._tables = tables
        self._sessions = sessions
        self._session_turns = session_turns
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
            session_turns = self._session_turns
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
            )
            await self._server.start()
            stack.push_async_callback(self._server.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info("gateway_ready", target=self.target, instance_id=settings.instance_id)
        return self

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
