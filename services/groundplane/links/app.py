"""The link emulator as a service of its own: it follows tracking and carries MQTT traffic.

:class:`LinksApp` puts together

* a :class:`~groundplane.tracking.client.CatalogFollower` on tracking's ``WatchCatalog``: each
  new view (elements or sites changed) swaps the emulator's geometry
  (:class:`~groundplane.links.geometry.SwitchableGroundGeometry` over the view's batch and sites)
  and its known ids, so an element replaced through tracking moves the links at the next tick;
* an :class:`~groundplane.mqtt.client.MqttClient` (client id ``groundplane-links``);
* the :class:`~groundplane.links.emulator.LinkEmulator` on that client and the shared clock;
* a :class:`~groundplane.kernel.serving.GrpcServer` with no service of its own, for health:
  readiness is NOT_SERVING until the first catalog view is in, the broker connected and the
  emulator's first tick done. When tracking goes away the emulator keeps the last view (the
  follower reconnects) and stays ready: the satellites do not stop moving.

:attr:`LinksApp.registry` holds ``groundplane_links_*`` metrics: links up, messages delivered and
dropped by reason, transmissions to unknown ids, the catalog version in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self, TypeVar

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, Unavailable
from groundplane.kernel.serving import GrpcServer
from groundplane.links.emulator import STATE_INTERVAL_S, LinkEmulator
from groundplane.links.geometry import SwitchableGroundGeometry
from groundplane.links.model import LinkConfig
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import MqttClient
from groundplane.tracking.client import CatalogFollower, CatalogView

log = structlog.get_logger("groundplane.links.app")

CLIENT_ID = "groundplane-links"
WAIT_STEP_S = 30.0
"""How long each wait for an input (the first catalog view, the broker) lasts before it is
logged and begun again: the service waits for its inputs as long as it takes."""
READY_TIMEOUT_S = 30.0
"""Wall seconds the emulator may take to subscribe and finish its first tick."""


class LinksApp:
    """The links service: ``async with LinksApp(...) as app:`` serves until the block ends."""

    def __init__(  # noqa: PLR0913 - the service's inputs and tunables, by keyword
        self,
        *,
        tracking: str,
        broker: BrokerAddress,
        clock: Clock,
        address: str = "127.0.0.1:0",
        link_tick_s: float = 1.0,
        link_config: LinkConfig | None = None,
        state_interval_s: float = STATE_INTERVAL_S,
        unready_delay_s: float = 1.0,
        drain_grace_s: float = 5.0,
    ) -> None:
        self._clock = clock
        self._broker = broker
        self.follower = CatalogFollower(tracking)
        self.geometry = SwitchableGroundGeometry()
        self.server = GrpcServer(
            [],
            address=address,
            unready_delay_s=unready_delay_s,
            drain_grace_s=drain_grace_s,
            ready_at_start=False,
        )
        self._link_tick_s = link_tick_s
        self._link_config = link_config or LinkConfig()
        self._state_interval_s = state_interval_s
        self._view: CatalogView | None = None
        self.client: MqttClient | None = None
        self.emulator: LinkEmulator | None = None
        self._stack: AsyncExitStack | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_LinksCollector(self))
        self.follower.add_listener(self._use_view)

    @property
    def target(self) -> str:
        """``host:port`` of the health server."""
        return self.server.target

    @property
    def view(self) -> CatalogView | None:
        """The catalog view the links run on."""
        return self._view

    def _use_view(self, view: CatalogView) -> None:
        """A new catalog: the next tick samples its satellites and sites."""
        self.geometry.use(view.batch, view.sites)
        if self.emulator is not None:
            self.emulator.update_known([site.id for site in view.sites], view.batch.ids)
        self._view = view
        log.info(
            "links_catalog",
            version=view.version,
            satellites=len(view.batch),
            stations=len(view.sites),
        )

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.server.start()
            stack.push_async_callback(self.server.stop)
            self.client = await stack.enter_async_context(
                MqttClient(self._broker, client_id=CLIENT_ID, clock=self._clock)
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            running = [
                tasks.create_task(self.follower.run(), name="links-catalog-follower"),
                tasks.create_task(self._serve(self.client), name="links-serve"),
            ]
            stack.callback(lambda: [task.cancel() for task in running])
            # Exit order: unready and drain first, then stop the emulator, then the client.
            stack.push_async_callback(self.server.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, traceback)

    async def _serve(self, client: MqttClient) -> None:
        """Wait for the inputs, run the emulator, and be ready once its first tick is done."""
        view = await _patiently(
            "first catalog view from tracking",
            lambda: self.follower.wait_ready(WAIT_STEP_S),
        )
        await _patiently("broker connection", lambda: client.wait_connected(WAIT_STEP_S))
        emulator = LinkEmulator(
            client,
            self._clock,
            self.geometry,
            config=self._link_config,
            tick_s=self._link_tick_s,
            state_interval_s=self._state_interval_s,
            # Known ids: a message to a satellite out of view counts as link-down on its own
            # link, not as addressed to an unknown id.
            stations=[site.id for site in view.sites],
            satellites=view.batch.ids,
        )
        self.emulator = emulator
        if self._view is not None:  # a newer view may have come meanwhile
            emulator.update_known([site.id for site in self._view.sites], self._view.batch.ids)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(emulator.run(), name="links-emulator")
            await emulator.wait_ready(READY_TIMEOUT_S)
            await self.server.set_ready(True)
            log.info("links_ready", target=self.target, satellites=len(view.batch))


T = TypeVar("T")


async def _patiently(what: str, wait: Callable[[], Awaitable[T]]) -> T:
    """``await wait()`` again after each timeout, logging each: an input comes when it comes."""
    attempts = 0
    while True:
        try:
            return await wait()
        except (DeadlineExceeded, Unavailable) as error:
            attempts += 1
            log.warning("links_waiting", input=what, attempts=attempts, error=str(error))


class _LinksCollector(Collector):
    """Reads the emulator when scraped (from the metrics thread: reads only)."""

    def __init__(self, app: LinksApp) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        app = self._app
        emulator = app.emulator
        view = app.view
        up = GaugeMetricFamily("groundplane_links_up", "Links up now (ground and inter-satellite)")
        up.add_metric([], float(emulator.links_up()) if emulator is not None else 0.0)
        yield up
        satellites = GaugeMetricFamily(
            "groundplane_links_catalog_satellites", "Satellites in the catalog view the links use"
        )
        satellites.add_metric([], float(len(view.batch)) if view is not None else 0.0)
        yield satellites
        traffic = emulator.traffic() if emulator is not None else None
        delivered = CounterMetricFamily(
            "groundplane_links_messages_delivered", "Messages carried across a link"
        )
        delivered.add_metric([], float(traffic.delivered_messages) if traffic else 0.0)
        yield delivered
        dropped = CounterMetricFamily(
            "groundplane_links_messages_dropped", "Messages a link dropped", labels=["reason"]
        )
        for reason in ("loss", "link_down", "in_flight", "expired"):
            value = getattr(traffic, f"dropped_{reason}") if traffic else 0
            dropped.add_metric([reason], float(value))
        yield dropped
        unknown = CounterMetricFamily(
            "groundplane_links_unknown_endpoint_messages",
            "Transmissions naming a station or satellite the catalog does not know",
        )
        unknown.add_metric([], float(emulator.dropped_unknown_messages) if emulator else 0.0)
        yield unknown
