"""The link emulator: carries MQTT messages across emulated space links on the simulated clock.

It subscribes to every transmission topic (``gp/v1/ground/+/tx/#`` and ``gp/v1/node/+/tx/#``,
see :mod:`groundplane.mqtt.topics`), hands each message to the :class:`~.model.Link` of its
(station, satellite) pair, and republishes it on the matching ``rx`` topic when the model says it
arrives; dropped messages are only counted. Every ``tick_s`` of simulated time it asks the
geometry provider where everything is, updates the links, and publishes the retained
``LinkState`` of a link only when what its consumers read of it changed: it went up or down, or
(while up) its one-way delay moved by more than ``delay_threshold_s`` (:data:`DELAY_THRESHOLD_S`,
1 ms: about 300 km of range) from the delay last published; plus a slow refresh of every link
that is **up** each ``state_interval_s`` (:data:`STATE_INTERVAL_S`, 300 simulated s) so that a
retained state's range and elevation are never much older than that. A down link's retained
state stays on the broker, unchanged, until it comes up again. Rate and loss come from the
link's configuration and do not change while it is held (a carrier switched with
:meth:`LinkEmulator.set_real` is published on the next tick). Consumers (routing's link
qualities, the gateway's ``LinkWatch``) read ``up``, the delay, rate and loss; the range and
elevation in a state are those of the instant it was published. The retained ``LinkCounters``
of a ground link go out with its state when they changed, and at most every
``state_interval_s`` otherwise.

What the emulator keeps in memory is bounded by what is in view, not by history:

* a link exists while the geometry reports it (up, or down but still reported), while it has a
  message in flight, and until its final down state was published; then it is forgotten (its
  retained state stays on the broker). Its traffic counters are kept (only for links that ever
  carried traffic) so the retained counters stay cumulative when it comes back;
* a link that comes back after being forgotten is an acquisition like any other: the handover
  outage applies (only links already in view at the first tick are taken as acquired);
* a transmission naming a station or satellite id that the geometry has never reported (nor the
  ``stations`` / ``satellites`` given up front) is dropped without creating a link: it is counted
  in :attr:`LinkEmulator.dropped_unknown_messages`, one emulator-wide count (unknown ids are
  unbounded, so there is no per-id breakdown), and logged at 1, 2, 4, 8, … such drops.

Sampling the geometry runs on the event loop while it is cheap and in a worker thread
(``asyncio.to_thread``) once a sample took :data:`OFFLOAD_SAMPLE_S` or more (a large
constellation): the thread hop costs ~50–90 µs, which cheap providers should not pay. Providers
must therefore tolerate being called from a worker thread (never two calls at once).

A link marked real (:meth:`LinkEmulator.set_real`) is left alone: a radio link in the loop
carries its traffic and the emulator neither forwards nor drops nor counts its messages (also when
its ids are unknown to the geometry).

Messages are acknowledged to the broker once they are in flight on the model: like a real link,
a message in flight is lost if the emulator process dies.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime

import structlog

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.kernel.timestamps import to_timestamp
from groundplane.link.v1 import link_pb2
from groundplane.links.model import (
    Admission,
    Counters,
    Direction,
    Fate,
    Link,
    LinkConfig,
    LinkGeometry,
)
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage

log = structlog.get_logger("groundplane.links.emulator")

GroundKey = tuple[str, str]
"""(station id, satellite id)."""
GroundGeometryProvider = Callable[[datetime], Mapping[GroundKey, LinkGeometry]]
"""Geometry of every (station, satellite) pair in view at an instant; pairs absent are down."""
IslGeometryProvider = Callable[[datetime], Mapping[tuple[str, str], LinkGeometry]]
"""Geometry of inter-satellite pairs (ids sorted) at an instant; pairs absent are down."""
ConfigProvider = Callable[[str], LinkConfig]
"""Configuration of a link by link id (``<station>/<sat>`` or ``isl:<a>/<b>``)."""

PUBLISH_TIMEOUT_S = 5.0
STATE_INTERVAL_S = 300.0
"""Simulated seconds between two refreshes of an up link's unchanged retained state."""
DELAY_THRESHOLD_S = 0.001
"""One-way delay change (seconds) that republishes an up link's state before its refresh."""
OFFLOAD_SAMPLE_S = 0.001
"""CPU seconds a geometry sample may take on the event loop; a provider that took this long or
more is called in a worker thread from the next tick on (``asyncio.to_thread`` costs ~50–90 µs
per call, so cheaper samples stay on the loop)."""
_DOWN = LinkGeometry(up=False, range_km=0.0)
_COUNTER_FIELDS = tuple(f.name for f in fields(Counters))


@dataclass
class _Endpoint:
    """A link plus what is needed to name and publish it."""

    link: Link
    first: str  # station id, or the first satellite of an inter-satellite link
    second: str  # satellite id, or the second satellite
    isl: bool
    real: bool = False
    published_up: bool | None = None
    """The ``up`` of the last state the broker acknowledged (None: not published yet)."""
    published_state_s: float = float("-inf")
    published_delay_s: float = 0.0
    """The one-way delay in the last state the broker acknowledged."""
    published_counters: tuple[int, ...] = ()
    published_counters_s: float = float("-inf")

    @property
    def state_topic(self) -> str:
        if self.isl:
            return topics.isl_state(self.first, self.second)
        return topics.link_state(self.first, self.second)


@dataclass(frozen=True)
class _Order:
    """Where a delivery stands in its link direction's FIFO."""

    key: tuple[str, Direction]
    previous: asyncio.Event | None
    """Set once the delivery before this one was handed to the broker (or dropped)."""
    handed: asyncio.Event
    """Set once this delivery was handed to the broker (or dropped)."""


def _snapshot(counters: Counters) -> tuple[int, ...]:
    return (counters.sent_messages, counters.delivered_messages, counters.dropped)


def ground_link_id(station_id: str, sat_id: str) -> str:
    return f"{station_id}/{sat_id}"


def isl_link_id(sat_a: str, sat_b: str) -> str:
    first, second = sorted((sat_a, sat_b))
    return f"isl:{first}/{second}"


class LinkEmulator:
    """Emulated links between ground stations and satellites (and between satellites)."""

    def __init__(  # noqa: PLR0913 - three required ports; the tunables and known ids are keywords
        self,
        client: MqttClient,
        clock: Clock,
        ground_geometry: GroundGeometryProvider,
        *,
        config: LinkConfig | ConfigProvider | None = None,
        isl_geometry: IslGeometryProvider | None = None,
        tick_s: float = 1.0,
        state_interval_s: float = STATE_INTERVAL_S,
        delay_threshold_s: float = DELAY_THRESHOLD_S,
        seed: int = 0,
        stations: Iterable[str] = (),
        satellites: Iterable[str] = (),
    ) -> None:
        """``stations`` and ``satellites`` are ids known up front (for example the whole
        catalog), in addition to every id the geometry reports: a transmission to a known id out
        of view is a link-down drop on its link; one to an unknown id is not a link at all."""
        if not tick_s > 0:
            raise InvalidArgument(f"tick_s must be > 0 simulated seconds, got {tick_s}")
        self._client = client
        self._clock = clock
        self._ground_geometry = ground_geometry
        self._isl_geometry = isl_geometry
        default = config if isinstance(config, LinkConfig) else LinkConfig()
        self._config: ConfigProvider = (
            config if callable(config) and not isinstance(config, LinkConfig) else lambda _: default
        )
        self._tick_s = tick_s
        self._state_interval_s = state_interval_s
        self._delay_threshold_s = delay_threshold_s
        self._seed = seed
        self._epoch = clock.now()
        self._links: dict[str, _Endpoint] = {}
        self._retired: dict[str, tuple[Counters, tuple[int, ...]]] = {}
        """Counters of forgotten links that carried traffic (and what was published of them)."""
        self._known_stations: set[str] = set(stations)
        self._known_satellites: set[str] = set(satellites)
        self._dropped_unknown = 0
        self._sample_cost_s = 0.0
        self._started = False
        self._real: set[str] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        self._last_delivery: dict[tuple[str, Direction], asyncio.Event] = {}

    # -- queries and controls --------------------------------------------------------------------

    def sim_s(self) -> float:
        """Seconds of simulated time since the emulator was created (the model's time line)."""
        return (self._clock.now() - self._epoch).total_seconds()

    def link(self, link_id: str) -> Link:
        """The model of a link by id (``<station>/<sat>`` or ``isl:<a>/<b>``)."""
        endpoint = self._links.get(link_id)
        if endpoint is None:
            raise InvalidArgument(
                f"no link {link_id!r} now (a link exists while the geometry reports it or it "
                f"carries traffic, and is forgotten once down and published); known: "
                f"{sorted(self._links)[:20]}"
            )
        return endpoint.link

    def link_ids(self) -> frozenset[str]:
        """Ids of the links the emulator holds right now."""
        return frozenset(self._links)

    @property
    def dropped_unknown_messages(self) -> int:
        """Transmissions dropped because they named a station or satellite the geometry never
        reported (nor the ids given up front); no link is created for them."""
        return self._dropped_unknown

    def set_real(self, station_id: str, sat_id: str, real: bool = True) -> None:
        """Leave the link (station, satellite) to a real radio link, or take it back."""
        link_id = ground_link_id(topics.check_id("station id", station_id), sat_id)
        if real:
            self._real.add(link_id)
        else:
            self._real.discard(link_id)
        endpoint = self._links.get(link_id)
        if endpoint is not None:
            endpoint.real = real
            endpoint.published_up = None  # publish the new carrier on the next tick

    def update_known(self, stations: Iterable[str], satellites: Iterable[str]) -> None:
        """Replace the ids known up front (the catalog changed): from now on a transmission to a
        satellite no longer known and without a link is dropped as unknown. Ids the geometry
        reports later are added again as usual."""
        self._known_stations = set(stations)
        self._known_satellites = set(satellites)

    def links_up(self) -> int:
        """How many links are up now."""
        at_s = self.sim_s()
        return sum(1 for endpoint in list(self._links.values()) if endpoint.link.is_up(at_s))

    def traffic(self) -> Counters:
        """The traffic of every link the emulator has carried, summed (links held now and links
        forgotten since)."""
        total = Counters()
        every = [e.link.counters for e in list(self._links.values())]
        every.extend(counters for counters, _ in list(self._retired.values()))
        for counters in every:
            for name in _COUNTER_FIELDS:
                setattr(total, name, getattr(total, name) + getattr(counters, name))
        return total

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Return once subscribed and the first geometry tick is done."""
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    # -- service loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                await self.tick()
                await self._client.subscribe(topics.EMULATOR_UPLINK_FILTER, self._on_transmit)
                await self._client.subscribe(topics.EMULATOR_NODE_TX_FILTER, self._on_transmit)
                self._ready.set()
                while True:
                    await self._clock.sleep(self._tick_s)
                    await self.tick()
            finally:
                self._tasks = None

    def _endpoint(
        self, link_id: str, first: str, second: str, *, isl: bool, at_s: float
    ) -> _Endpoint:
        endpoint = self._links.get(link_id)
        if endpoint is None:
            retired = self._retired.pop(link_id, None)
            counters, published_counters = retired if retired is not None else (Counters(), ())
            # A link that carried traffic before draws a fresh loss sequence, not a replay.
            generation = f":{counters.sent_messages}" if counters.sent_messages else ""
            seed = zlib.crc32(f"{self._seed}:{link_id}{generation}".encode())
            link = Link(link_id, self._config(link_id), seed=seed, counters=counters)
            if self._started:
                # Heard of after the first tick: coming up is an acquisition (handover outage).
                link.update(at_s, _DOWN)
            endpoint = _Endpoint(
                link,
                first,
                second,
                isl,
                real=link_id in self._real,
                published_counters=published_counters,
            )
            self._links[link_id] = endpoint
        return endpoint

    def _forget(self, link_id: str) -> None:
        endpoint = self._links.pop(link_id)
        counters = endpoint.link.counters
        if counters.sent_messages:
            self._retired[link_id] = (counters, endpoint.published_counters)

    def _sample(
        self, at: datetime
    ) -> tuple[
        Mapping[GroundKey, LinkGeometry], Mapping[tuple[str, str], LinkGeometry] | None, float
    ]:
        """Both providers at ``at`` and the CPU seconds they took on this thread (runs on a
        worker thread when the providers are expensive). CPU time, not wall time: a cheap sample
        preempted on a busy machine must not count as expensive."""
        started = time.thread_time()
        ground = self._ground_geometry(at)
        isl = self._isl_geometry(at) if self._isl_geometry is not None else None
        return ground, isl, time.thread_time() - started

    async def tick(self) -> None:
        """One step: sample the geometry now, update every link, publish what is due (:meth:`run`
        calls it every ``tick_s``; tests call it to step the emulator themselves)."""
        now = self._clock.now()
        if self._sample_cost_s >= OFFLOAD_SAMPLE_S:
            ground, isl, cost_s = await asyncio.to_thread(self._sample, now)
            # Transmissions went on meanwhile: apply the sample now, never before their times.
            now = self._clock.now()
        else:
            ground, isl, cost_s = self._sample(now)
        self._sample_cost_s = cost_s
        at_s = (now - self._epoch).total_seconds()
        samples: dict[str, LinkGeometry] = {}
        for (station, sat), geometry in ground.items():
            self._known_stations.add(station)
            self._known_satellites.add(sat)
            link_id = ground_link_id(station, sat)
            self._endpoint(link_id, station, sat, isl=False, at_s=at_s)
            samples[link_id] = geometry
        if isl is not None:
            for (sat_a, sat_b), geometry in isl.items():
                first, second = sorted((sat_a, sat_b))
                self._known_satellites.add(first)
                self._known_satellites.add(second)
                link_id = isl_link_id(first, second)
                self._endpoint(link_id, first, second, isl=True, at_s=at_s)
                samples[link_id] = geometry
        self._started = True
        due: list[tuple[_Endpoint, bool, bool]] = []
        forgotten: list[str] = []
        for link_id, endpoint in self._links.items():
            sampled = samples.get(link_id)
            dropped = endpoint.link.update(at_s, sampled or _DOWN)
            if dropped:
                log.info("link_down_dropped_in_flight", link_id=link_id, messages=len(dropped))
            up = endpoint.link.is_up(at_s)
            state_due = up != endpoint.published_up or (
                up
                and (
                    at_s - endpoint.published_state_s >= self._state_interval_s
                    or abs(endpoint.link.delay_s() - endpoint.published_delay_s)
                    > self._delay_threshold_s
                )
            )
            # Down, out of the geometry, nothing in flight, and the broker holds its down state.
            done = (
                not up
                and sampled is None
                and endpoint.published_up is False
                and endpoint.link.in_flight == 0
            )
            counters_due = (
                not endpoint.isl
                and _snapshot(endpoint.link.counters) != endpoint.published_counters
                and (
                    state_due
                    or done
                    or at_s - endpoint.published_counters_s >= self._state_interval_s
                )
            )
            if state_due or counters_due:
                due.append((endpoint, state_due, counters_due))
            elif done:
                forgotten.append(link_id)
        for link_id in forgotten:
            self._forget(link_id)
        if due:
            await asyncio.gather(
                *(self._publish(e, now, at_s, state=s, counters=c) for e, s, c in due)
            )

    def _state(self, endpoint: _Endpoint, now: datetime, at_s: float) -> link_pb2.LinkState:
        link = endpoint.link
        geometry = link.geometry or _DOWN
        return link_pb2.LinkState(
            link_id=link.link_id,
            station_id=endpoint.first,
            satellite_id=endpoint.second,
            up=link.is_up(at_s),
            delay_s=link.delay_s(),
            rate_bps=link.config.rate_bps,
            loss_rate=link.config.loss_rate,
            updated_at=to_timestamp(now),
            range_km=geometry.range_km,
            elevation_deg=geometry.elevation_deg,
            carrier=link_pb2.LINK_CARRIER_REAL if endpoint.real else link_pb2.LINK_CARRIER_EMULATED,
        )

    def counters_message(self, link_id: str) -> link_pb2.LinkCounters:
        """The counters of one link as the protobuf message published on the counters topic."""
        counters = self.link(link_id).counters
        return link_pb2.LinkCounters(
            link_id=link_id,
            sent_messages=counters.sent_messages,
            sent_bytes=counters.sent_bytes,
            delivered_messages=counters.delivered_messages,
            delivered_bytes=counters.delivered_bytes,
            dropped_loss_messages=counters.dropped_loss,
            dropped_link_down_messages=counters.dropped_link_down,
            dropped_in_flight_messages=counters.dropped_in_flight,
            dropped_expired_messages=counters.dropped_expired,
            updated_at=to_timestamp(self._clock.now()),
        )

    async def _publish(
        self, endpoint: _Endpoint, now: datetime, at_s: float, *, state: bool, counters: bool
    ) -> None:
        """Publish the retained state and/or counters; record only what the broker acknowledged,
        so a failed publish is tried again on the next tick."""
        link_id = endpoint.link.link_id
        if state:
            message = self._state(endpoint, now, at_s)
            try:
                await self._client.publish(
                    endpoint.state_topic,
                    message.SerializeToString(),
                    retain=True,
                    timeout_s=PUBLISH_TIMEOUT_S,
                )
            except GroundplaneError as error:
                endpoint.published_up = None
                log.warning("link_state_publish_failed", link_id=link_id, error=str(error))
                return
            endpoint.published_up = message.up
            endpoint.published_state_s = at_s
            endpoint.published_delay_s = message.delay_s
        if counters and link_id in self._links:
            snapshot = _snapshot(endpoint.link.counters)
            try:
                await self._client.publish(
                    topics.link_counters(endpoint.first, endpoint.second),
                    self.counters_message(link_id).SerializeToString(),
                    retain=True,
                    timeout_s=PUBLISH_TIMEOUT_S,
                )
            except GroundplaneError as error:
                log.warning("link_counters_publish_failed", link_id=link_id, error=str(error))
                return
            endpoint.published_counters = snapshot
            endpoint.published_counters_s = at_s

    # -- forwarding ------------------------------------------------------------------------------

    async def _on_transmit(self, message: ReceivedMessage) -> None:
        try:
            transmission = topics.parse_transmission(message.topic)
        except InvalidArgument as error:
            log.warning("link_bad_topic", topic=message.topic, error=error.message)
            return
        at_s = self.sim_s()
        if transmission.hop is topics.Hop.ISL:
            first, second = sorted((transmission.source, transmission.destination))
            link_id, isl = isl_link_id(first, second), True
            known = first in self._known_satellites and second in self._known_satellites
            direction = Direction.FORWARD if transmission.source == first else Direction.REVERSE
        else:
            uplink = transmission.hop is topics.Hop.UPLINK
            first, second = (
                (transmission.source, transmission.destination)
                if uplink
                else (transmission.destination, transmission.source)
            )
            link_id, isl = ground_link_id(first, second), False
            known = first in self._known_stations and second in self._known_satellites
            direction = Direction.UPLINK if uplink else Direction.DOWNLINK
        if link_id in self._real:
            return
        if not known and link_id not in self._links:
            self._dropped_unknown += 1
            count = self._dropped_unknown
            if count & (count - 1) == 0:  # 1, 2, 4, 8, …: visible without flooding the log
                log.warning(
                    "link_unknown_endpoint_dropped",
                    topic=message.topic,
                    dropped_unknown_messages=count,
                )
            return
        endpoint = self._endpoint(link_id, first, second, isl=isl, at_s=at_s)
        if endpoint.link.geometry is None:
            endpoint.link.update(at_s, _DOWN)
        admission = endpoint.link.send(at_s, direction, len(message.payload))
        if admission.fate is not Fate.IN_FLIGHT:
            log.debug("link_dropped", link_id=endpoint.link.link_id, fate=admission.fate.value)
            return
        if self._tasks is None:
            return
        # A link is FIFO per direction: each delivery waits until the one before it on the same
        # link and direction has been handed to the broker, so messages sent close together
        # cannot overtake each other when timers fire out of order under CPU load.
        order_key = (endpoint.link.link_id, direction)
        previous = self._last_delivery.get(order_key)
        handed = asyncio.Event()
        self._last_delivery[order_key] = handed
        self._tasks.create_task(
            self._deliver(
                endpoint.link,
                admission,
                transmission.delivery_topic,
                message,
                _Order(order_key, previous, handed),
            ),
            name=f"link-deliver:{endpoint.link.link_id}#{admission.message_id}",
        )

    async def _deliver(
        self,
        link: Link,
        admission: Admission,
        topic: str,
        message: ReceivedMessage,
        order: _Order,
    ) -> None:
        try:
            await self._clock.sleep(admission.arrival_s - self.sim_s())
            if order.previous is not None:
                await order.previous.wait()
            expiry_left_s: float | None = None
            if message.message_expiry_s is not None:
                waited_s = asyncio.get_running_loop().time() - message.received_monotonic_s
                expiry_left_s = message.message_expiry_s - waited_s
            fate = link.complete(
                admission.message_id, expired=expiry_left_s is not None and expiry_left_s <= 0
            )
            if fate is not Fate.DELIVERED:
                log.debug("link_dropped", link_id=link.link_id, fate=fate.value)
                return
            if self._tasks is None:
                return
            # Tasks take their first step in creation order, and that first step hands the
            # message to the broker connection: creating the task fixes the order.
            self._tasks.create_task(
                self._forward(link, topic, message, expiry_left_s),
                name=f"link-forward:{link.link_id}#{admission.message_id}",
            )
        finally:
            order.handed.set()
            if self._last_delivery.get(order.key) is order.handed:
                del self._last_delivery[order.key]

    async def _forward(
        self, link: Link, topic: str, message: ReceivedMessage, expiry_left_s: float | None
    ) -> None:
        try:
            await self._client.publish(
                topic,
                message.payload,
                qos=message.qos,
                expiry_s=expiry_left_s,
                timeout_s=PUBLISH_TIMEOUT_S,
                # Unchanged, so a traced request's traceparent crosses the link.
                user_properties=message.user_properties,
            )
        except GroundplaneError as error:
            log.warning("link_forward_failed", link_id=link.link_id, error=str(error))
