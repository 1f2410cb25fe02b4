"""The live dashboard: a web page over the services' contracts (``groundplane serve dashboard``).

::

    settings = DashboardSettings(tracking_target=..., routing_target=..., handoff_target=...,
                                 gateway_target=..., broker=broker.address, web_port=8080)
    async with DashboardApp(settings, clock) as app:
        print(app.url)             # http://127.0.0.1:8080/
        await app.wait_ready(10.0) # a catalog view is in and the page is served

What it follows, each only through its contract and each reconnecting on its own:

* tracking's catalog (``WatchCatalog``, :class:`~groundplane.tracking.client.CatalogFollower`):
  the satellites (placed with SGP4 at the shared clock's time for every snapshot) and stations;
* routing's table (``WatchRouteTable``, :class:`~groundplane.routing.client.WatchedTableSource`):
  which satellite each station's own terminal is routed to now;
* handoff's events (``HandoffService.WatchHandoffs``): the handoff feed;
* the gateway's finished calls (``GatewayMonitorService.WatchRequests``): the request feed and
  the rate and latency chart;
* the broker (a service account): the node directory
  (:class:`~groundplane.node.client.NodeDirectory`) for node health and the retained link states
  for links up.

The page (``static/``: HTML, JavaScript, CSS and the coastlines, no CDN) is served by a
Starlette app on uvicorn, in this process's task group; ``GET /events`` streams one JSON
snapshot (:func:`~groundplane.dashboard.state.snapshot`) per ``snapshot_interval_s`` as
Server-Sent Events (sse-starlette), ``GET /api/snapshot`` answers one. A gRPC server carries
only health (``liveness``, ``readiness``: SERVING once a catalog view is in and the web server
listens), so ``groundplane up`` supervises the dashboard like every other child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import structlog
import uvicorn
from google.protobuf.message import DecodeError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from groundplane.dashboard.metrics import DashboardMetrics
from groundplane.dashboard.state import Inputs, NodeHealth, RequestWindow, snapshot
from groundplane.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from groundplane.handoff.v1 import handoff_pb2, handoff_pb2_grpc
from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import DeadlineExceeded, Unavailable
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.timestamps import from_timestamp
from groundplane.kernel.tls import open_channel
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, MqttClient, ReceivedMessage
from groundplane.node.client import DRAINING, OFFLINE, ONLINE, NodeDirectory
from groundplane.routing.client import WatchedTableSource
from groundplane.tracking.client import CatalogFollower

log = structlog.get_logger("groundplane.dashboard.app")

STATIC_DIR = Path(__file__).parent / "static"
FEED_KEPT = 200
"""Newest handoff events and finished calls kept in memory."""
STREAM_BACKOFF = Backoff(base_s=0.2, factor=1.6, cap_s=3.0, jitter=0.2)
"""Between attempts to reopen a handoff or request stream."""
_STATE_NAMES = {ONLINE: "online", DRAINING: "draining", OFFLINE: "offline"}


@dataclass(frozen=True)
class DashboardSettings:
    """Where the dashboard's inputs are and where it listens."""

    tracking_target: str
    routing_target: str | None = None
    handoff_target: str | None = None
    gateway_target: str | None = None
    broker: BrokerAddress | None = None
    """A service account on the broker (node health, link states); None: neither shown."""
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    """The page's HTTP port (0 = a free one, :attr:`DashboardApp.url` tells which)."""
    grpc_address: str = "127.0.0.1:0"
    """The health-only gRPC server's address."""
    model: str = "synthetic"
    """The model whose routes the map shows per station."""
    snapshot_interval_s: float = 1.0
    """Wall seconds between two snapshots on the event stream."""
    unready_delay_s: float = 1.0
    drain_grace_s: float = 1.0


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's owner (``run_service``) handles
    SIGTERM and stops the server through :attr:`should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DashboardApp:
    """A running dashboard (an async context manager; see the module docstring)."""

    def __init__(self, settings: DashboardSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.catalog = CatalogFollower(settings.tracking_target)
        self.tables = (
            WatchedTableSource(settings.routing_target) if settings.routing_target else None
        )
        self.directory = NodeDirectory()
        self.links_up: set[tuple[str, str]] = set()
        self.handoffs: deque[dict[str, Any]] = deque(maxlen=FEED_KEPT)
        self.requests: deque[dict[str, Any]] = deque(maxlen=FEED_KEPT)
        self.window = RequestWindow()
        self.metrics = DashboardMetrics()
        self.connected = {"handoff": False, "gateway": False}
        self._rng = random.Random()
        self._mqtt: MqttClient | None = None
        self._web: _QuietServer | None = None
        self._web_port: int | None = None
        self._grpc: GrpcServer | None = None
        self._stack: AsyncExitStack | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._snapshot: tuple[float, dict[str, Any]] | None = None
        self._snapshot_lock = asyncio.Lock()

    # -- where it serves --------------------------------------------------------------------

    @property
    def web_port(self) -> int:
        if self._web_port is None:
            raise RuntimeError("the dashboard is not started; use `async with DashboardApp(...)`")
        return self._web_port

    @property
    def url(self) -> str:
        host = self.settings.web_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.web_port}/"

    @property
    def target(self) -> str:
        """The health server's host:port (what ``run_service`` prints)."""
        if self._grpc is None:
            raise RuntimeError("the dashboard is not started")
        return self._grpc.target

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        settings = self.settings
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            background: list[asyncio.Task[None]] = []
            stack.callback(lambda: [task.cancel() for task in background])

            def start(name: str, work: Coroutine[Any, Any, None]) -> None:
                background.append(tasks.create_task(work, name=f"dashboard-{name}"))

            start("catalog", self.catalog.run())
            if self.tables is not None:
                start("route-table", self.tables.run())
            if settings.handoff_target is not None:
                start("handoffs", self._follow("handoff", self._read_handoffs))
            if settings.gateway_target is not None:
                start("requests", self._follow("gateway", self._read_requests))
            if settings.broker is not None:
                client = MqttClient(
                    settings.broker,
                    client_id=f"groundplane-dashboard-{self._rng.getrandbits(32):08x}",
                    clock=self.clock,
                )
                await self.directory.attach(client)
                await client.subscribe(topics.LINK_STATE_FILTER, self._on_link_state)
                await stack.enter_async_context(client)
                self._mqtt = client

            # Bound here (not by uvicorn, which exits the process when a bind fails).
            try:
                listener = socket.create_server(
                    (settings.web_host, settings.web_port),
                    family=socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET,
                )
            except OSError as error:
                raise Unavailable(
                    f"the dashboard cannot listen on {settings.web_host}:{settings.web_port} "
                    f"({error.strerror}): choose another port, or 0 for a free one"
                ) from None
            stack.callback(listener.close)
            self._web_port = listener.getsockname()[1]
            self._grpc = GrpcServer(
                [],
                address=settings.grpc_address,
                drain_grace_s=settings.drain_grace_s,
                unready_delay_s=settings.unready_delay_s,
                ready_at_start=False,
            )
            await self._grpc.start()
            stack.push_async_callback(self._grpc.stop)

            config = uvicorn.Config(
                self._starlette(),
                host=settings.web_host,
                port=settings.web_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
            web = _QuietServer(config)
            self._web = web
            serving = tasks.create_task(web.serve(sockets=[listener]), name="dashboard-web")
            stack.push_async_callback(self._stop_web, web, serving)
            while not web.started:
                if serving.done():
                    serving.result()  # the bind failed: raise why
                    raise RuntimeError("the dashboard's web server stopped while starting")
                await asyncio.sleep(0.02)
            start("readiness", self._become_ready())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info("dashboard_started", url=self.url, health=self.target)
        return self

    async def _stop_web(self, web: _QuietServer, serving: asyncio.Task[None]) -> None:
        self._closing.set()
        web.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _become_ready(self) -> None:
        while True:
            try:
                await self.catalog.wait_ready(timeout_s=60.0)
                break
            except DeadlineExceeded as error:
                log.warning("dashboard_waiting_for_catalog", error=str(error))
        assert self._grpc is not None
        await self._grpc.set_ready(True)
        self._ready.set()
        log.info("dashboard_ready", url=self.url)

    async def wait_ready(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the dashboard has no catalog view from tracking at "
                f"{self.settings.tracking_target} after {timeout_s:g} s"
            ) from None

    # -- inputs -------------------------------------------------------------------------------

    async def _follow(self, name: str, read: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
        """Run one stream reader, reopening it after :data:`STREAM_BACKOFF` when it breaks."""
        target = getattr(self.settings, f"{name}_target")
        attempt = 0
        while True:
            try:
                async with open_channel(target) as channel:
                    await read(channel)
            except grpc.aio.AioRpcError as error:
                log.info("dashboard_stream_lost", source=name, code=error.code().name)
            finally:
                if self.connected[name]:
                    attempt = 0
                self.connected[name] = False
            await asyncio.sleep(STREAM_BACKOFF.delay_s(attempt, self._rng))
            attempt += 1

    async def _read_handoffs(self, channel: grpc.aio.Channel) -> None:
        stub = handoff_pb2_grpc.HandoffServiceStub(channel)
        after = self.handoffs[-1]["event_id"] if self.handoffs else 0
        # Replays what this dashboard missed (the last few on a first connect), then live.
        if after == 0:
            listed = await stub.ListHandoffs(handoff_pb2.ListHandoffsRequest(limit=0), timeout=10)
            while listed.events:
                after = listed.events[-1].event_id
                listed = await stub.ListHandoffs(
                    handoff_pb2.ListHandoffsRequest(after_event_id=after, limit=0), timeout=10
                )
            after = max(0, after - 20)
        call = stub.WatchHandoffs(
            handoff_pb2.WatchHandoffsRequest(after_event_id=after, replay=True)
        )
        self.connected["handoff"] = True
        async for response in call:
            self.handoffs.append(_handoff_json(response.event))
            self.metrics.feed_events.labels(feed="handoff").inc()

    async def _read_requests(self, channel: grpc.aio.Channel) -> None:
        stub = gateway_pb2_grpc.GatewayMonitorServiceStub(channel)
        call = stub.WatchRequests(gateway_pb2.WatchRequestsRequest())
        self.connected["gateway"] = True
        async for response in call:
            served = response.request
            self.window.add(time.time(), served.latency_s, served.code == "OK")
            self.requests.append(_request_json(served))
            self.metrics.feed_events.labels(feed="request").inc()

    async def _on_link_state(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        state = link_pb2.LinkState()
        try:
            state.ParseFromString(message.payload)
        except DecodeError:
            return
        if state.link_id.startswith("isl:"):
            return
        key = (state.station_id, state.satellite_id)
        if state.up:
            self.links_up.add(key)
        else:
            self.links_up.discard(key)

    # -- output -------------------------------------------------------------------------------

    def _inputs(self) -> Inputs:
        view = self.catalog.current()
        nodes = [
            NodeHealth(
                id=node.satellite_id,
                state=_STATE_NAMES.get(node.state, "unknown"),
                queue_depth=node.load.queue_depth if node.load is not None else 0,
                in_flight=node.load.in_flight if node.load is not None else 0,
            )
            for node in self.directory.nodes()
        ]
        return Inputs(
            now=self.clock.now(),
            wall_s=time.time(),
            catalog_version=view.version if view is not None else None,
            batch=view.batch if view is not None else None,
            sites=view.sites if view is not None else (),
            table=self.tables.current() if self.tables is not None else None,
            model=self.settings.model,
            links_up=tuple(self.links_up),
            nodes=nodes,
            handoffs=tuple(self.handoffs),
            requests=tuple(self.requests),
            window=self.window,
            sources={
                "tracking": self.catalog.connected,
                "routing": self.tables is not None and self.tables.connected,
                "handoff": self.connected["handoff"],
                "gateway": self.connected["gateway"],
                "broker": self._mqtt is not None and self._mqtt.connected,
            },
        )

    async def snapshot(self) -> dict[str, Any]:
        """The page's document now (SGP4 and the route decisions off the event loop). Pages
        open at the same time share one: a document younger than half the snapshot interval
        is served again."""
        async with self._snapshot_lock:
            now = time.monotonic()
            cached = self._snapshot
            if cached is not None and now - cached[0] < self.settings.snapshot_interval_s / 2:
                return cached[1]
            document = await asyncio.to_thread(snapshot, self._inputs())
            self._snapshot = (now, document)
            self.metrics.snapshots.inc()
            self.metrics.snapshot_seconds.observe(time.monotonic() - now)
            return document

    def _starlette(self) -> Starlette:
        async def index(_request: Request) -> Response:
            return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

        async def one(_request: Request) -> Response:
            return JSONResponse(await self.snapshot())

        async def events(_request: Request) -> Response:
            return EventSourceResponse(self._events(), ping=15)

        return Starlette(
            routes=[
                Route("/", index),
                Route("/api/snapshot", one),
                Route("/events", events),
                Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
            ]
        )

    async def _events(self) -> AsyncIterator[dict[str, str]]:
        interval_s = self.settings.snapshot_interval_s
        self.metrics.event_streams.inc()
        try:
            while not self._closing.is_set():
                document = await self.snapshot()
                yield {"event": "snapshot", "data": json.dumps(document, separators=(",", ":"))}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await self._closing.wait()
        finally:
            self.metrics.event_streams.dec()


def _handoff_json(event: handoff_pb2.HandoffEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "time": format_utc(from_timestamp(event.time)) if event.HasField("time") else None,
        "kind": event.subject_kind,
        "subject": event.subject_id,
        "state": event.state,
        "from": f"{event.from_satellite_id}@{event.from_station_id}",
        "to": f"{event.to_satellite_id}@{event.to_station_id}",
        "path": event.path,
    }


def _request_json(served: gateway_pb2.ServedRequest) -> dict[str, Any]:
    return {
        "request_id": served.request_id,
        "tenant": served.tenant_id,
        "model": served.model,
        "satellite": served.satellite_id,
        "station": served.station_id,
        "code": served.code,
        "latency_ms": round(served.latency_s * 1e3, 1),
        "tokens": served.output_tokens,
        "streamed": served.streamed,
        "time": format_utc(from_timestamp(served.finished_at))
        if served.HasField("finished_at")
        else None,
    }
