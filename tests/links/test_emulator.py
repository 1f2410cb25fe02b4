"""The link emulator over a real Mosquitto: delays, serialisation, outages, loss, link state."""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.link.v1 import link_pb2
from groundplane.links.emulator import OFFLOAD_SAMPLE_S, GroundKey, LinkEmulator, isl_link_id
from groundplane.links.model import SPEED_OF_LIGHT_KM_S, LinkConfig, LinkGeometry
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient, ReceivedMessage

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = "svalbard"
DELAY_TOLERANCE_S = 0.004
"""Simulated seconds a delivery may lag the model at speed 0.25: two broker hops and asyncio
scheduling take up to ~16 ms of wall time on a loaded 2-core machine."""
RATE_TOLERANCE_S = 0.015
"""Wall (= simulated, speed 1) seconds an inter-arrival gap may differ from the serialisation
time."""
SETTLE_S = 5.0
"""Wall seconds a test waits for the emulator to reach a state it must reach within a few ticks
(generous: a loaded 2-core machine)."""


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A private broker for one test."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(workdir=tmp_path / "broker") as running:
        yield running


class Geometry:
    """A synthetic geometry provider the test changes at will."""

    def __init__(self, links: Mapping[GroundKey, LinkGeometry]) -> None:
        self.links = dict(links)

    def __call__(self, at: datetime) -> Mapping[GroundKey, LinkGeometry]:
        return dict(self.links)


@dataclass
class Arrival:
    topic: str
    payload: bytes
    at: datetime
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass
class Harness:
    clock: SimulatedClock
    emulator: LinkEmulator
    ground: MqttClient
    arrivals: asyncio.Queue[Arrival]

    async def next(self, timeout_s: float = 5.0) -> Arrival:
        return await asyncio.wait_for(self.arrivals.get(), timeout_s)


@asynccontextmanager
async def running(
    broker: PrivateBroker,
    geometry: Geometry,
    config: LinkConfig,
    *,
    speed: float = 1.0,
    tick_s: float = 0.05,
    state_interval_s: float = 10.0,
    satellites: tuple[str, ...] = (),
) -> AsyncIterator[Harness]:
    """An emulator plus a ground client that records every delivery to any satellite."""
    clock = SimulatedClock(EPOCH, speed=speed)
    arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    async def record(message: ReceivedMessage) -> None:
        await arrivals.put(
            Arrival(message.topic, message.payload, clock.now(), message.user_properties)
        )

    async with (
        MqttClient(broker.address, client_id="links", clock=clock) as emulator_client,
        MqttClient(broker.address, client_id="ground", clock=clock) as ground,
        asyncio.TaskGroup() as tasks,
    ):
        emulator = LinkEmulator(
            emulator_client,
            clock,
            geometry,
            config=config,
            tick_s=tick_s,
            state_interval_s=state_interval_s,
            satellites=satellites,
        )
        service = tasks.create_task(emulator.run(), name="link-emulator")
        await ground.subscribe("gp/v1/node/+/rx/#", record)
        await ground.wait_connected()
        await emulator.wait_ready()
        try:
            yield Harness(clock, emulator, ground, arrivals)
        finally:
            service.cancel()


async def test_delivery_after_range_over_c_plus_processing(broker: PrivateBroker) -> None:
    """For several slant ranges (LEO overhead to GEO) a message arrives range/c + processing
    after it was published, in simulated time, never earlier and within DELAY_TOLERANCE_S."""
    ranges_km = {"1001": 550.0, "1002": 2_000.0, "1003": 12_000.0, "1004": 38_000.0}
    processing_s = 0.010
    geometry = Geometry(
        {(STATION, sat): LinkGeometry(True, range_km, 30.0) for sat, range_km in ranges_km.items()}
    )
    async with running(
        broker, geometry, LinkConfig(processing_delay_s=processing_s), speed=0.25
    ) as h:
        for sat, range_km in ranges_km.items():
            sent = h.clock.now()
            await h.ground.publish(topics.ground_tx(STATION, sat, "ping"), sat.encode())
            arrival = await h.next()
            assert arrival.topic == topics.node_rx_ground(sat, STATION, "ping")
            measured_s = (arrival.at - sent).total_seconds()
            expected_s = range_km / SPEED_OF_LIGHT_KM_S + processing_s
            print(
                f"{range_km:>8.0f} km: expected {expected_s * 1e3:.2f} ms, "
                f"measured {measured_s * 1e3:.2f} ms"
            )
            assert expected_s - 1e-4 <= measured_s <= expected_s + DELAY_TOLERANCE_S


async def test_user_properties_cross_the_link_unchanged(broker: PrivateBroker) -> None:
    """A message's MQTT v5 user properties (a traced request's traceparent, and any other, in
    order, repeated names included) arrive on the rx topic exactly as they were published up,
    on the uplink and on the downlink; a message without any arrives without any."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = (("traceparent", traceparent), ("tenant", "demo"), ("tenant", "second"))
    geometry = Geometry({(STATION, "1501"): LinkGeometry(True, 800.0, 40.0)})
    async with running(broker, geometry, LinkConfig()) as h:
        down: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

        async def record_down(message: ReceivedMessage) -> None:
            await down.put(message)

        await h.ground.subscribe("gp/v1/ground/+/rx/#", record_down)
        await h.ground.publish(
            topics.ground_tx(STATION, "1501", "infer/req"), b"up", user_properties=sent
        )
        await h.ground.publish(topics.ground_tx(STATION, "1501", "infer/req"), b"bare")
        traced, bare = await h.next(), await h.next()
        await h.ground.publish(
            topics.node_tx_ground("1501", STATION, "resp/gw-up"), b"down", user_properties=sent
        )
        replied = await asyncio.wait_for(down.get(), SETTLE_S)
    assert (traced.payload, traced.user_properties) == (b"up", sent)
    assert (bare.payload, bare.user_properties) == (b"bare", ())
    assert (replied.payload, replied.user_properties) == (b"down", sent)


async def test_serialisation_delay_matches_the_rate(broker: PrivateBroker) -> None:
    """Messages sent back to back leave one per size×8/rate: arrivals are that far apart."""
    rate_bps = 80_000.0
    size_bytes = 1_000  # 0.1 s each at 80 kbit/s
    geometry = Geometry({(STATION, "2001"): LinkGeometry(True, 1_000.0, 45.0)})
    # Slowed to 0.25×: scheduling jitter of a loaded machine (tens of wall milliseconds) shrinks
    # fourfold in simulated time, well inside the tolerance.
    async with running(broker, geometry, LinkConfig(rate_bps=rate_bps), speed=0.25) as h:
        sent = h.clock.now()
        for index in range(4):
            payload = bytes([index]) * size_bytes
            await h.ground.publish(topics.ground_tx(STATION, "2001", "bulk"), payload)
        arrivals = [await h.next() for _ in range(4)]
    serialisation_s = size_bytes * 8 / rate_bps
    assert [a.payload[0] for a in arrivals] == [0, 1, 2, 3]
    first_s = (arrivals[0].at - sent).total_seconds()
    assert first_s >= serialisation_s
    for earlier, later in itertools.pairwise(arrivals):
        gap_s = (later.at - earlier.at).total_seconds()
        assert gap_s == pytest.approx(serialisation_s, abs=RATE_TOLERANCE_S)


async def test_link_below_threshold_delivers_nothing(broker: PrivateBroker) -> None:
    """A satellite below the mask gets nothing (counted as link-down) while one above it does;
    the retained link state says which is up."""
    geometry = Geometry(
        {
            (STATION, "3001"): LinkGeometry(False, 3_000.0, -4.0),
            (STATION, "3002"): LinkGeometry(True, 900.0, 50.0),
        }
    )
    async with running(broker, geometry, LinkConfig()) as h:
        await h.ground.publish(topics.ground_tx(STATION, "3001", "cmd"), b"hidden")
        await h.ground.publish(topics.ground_tx(STATION, "3002", "cmd"), b"visible")
        arrival = await h.next()
        assert arrival.payload == b"visible"
        await asyncio.sleep(0.3)
        assert h.arrivals.empty()
        counters = h.emulator.link(f"{STATION}/3001").counters
        assert (counters.dropped_link_down, counters.delivered_messages) == (1, 0)

        states: asyncio.Queue[link_pb2.LinkState] = asyncio.Queue()

        async def record_state(message: ReceivedMessage) -> None:
            state = link_pb2.LinkState()
            state.ParseFromString(message.payload)
            await states.put(state)

        async with MqttClient(broker.address, client_id="watcher", clock=h.clock) as watcher:
            await watcher.subscribe(f"gp/v1/link/{STATION}/+/state", record_state)
            received = [await asyncio.wait_for(states.get(), 5) for _ in range(2)]
        by_sat = {state.satellite_id: state for state in received}
        assert not by_sat["3001"].up
        assert by_sat["3002"].up
        assert by_sat["3002"].delay_s == pytest.approx(900.0 / SPEED_OF_LIGHT_KM_S, rel=1e-9)
        assert by_sat["3002"].carrier == link_pb2.LINK_CARRIER_EMULATED


async def test_link_setting_mid_flight_drops_and_counts(broker: PrivateBroker) -> None:
    """A message in flight when its link goes down never arrives and is counted as dropped
    in flight; the same message arrives when the link stays up."""
    processing_s = 1.0
    geometry = Geometry({(STATION, "4001"): LinkGeometry(True, 1_200.0, 10.0)})
    async with running(
        broker, geometry, LinkConfig(processing_delay_s=processing_s), speed=4.0, tick_s=0.05
    ) as h:
        topic = topics.ground_tx(STATION, "4001", "job")
        await h.ground.publish(topic, b"survives")
        assert (await h.next()).payload == b"survives"
        await h.ground.publish(topic, b"doomed")
        await h.clock.sleep(0.3)
        geometry.links[(STATION, "4001")] = LinkGeometry(False, 2_900.0, -0.5)
        await h.clock.sleep(processing_s + 0.5)
        assert h.arrivals.empty()
        counters = h.emulator.link(f"{STATION}/4001").counters
        assert counters.dropped_in_flight == 1
        assert counters.delivered_messages == 1


async def test_loss_fraction_matches_the_configured_rate(broker: PrivateBroker) -> None:
    """Over the broker, the fraction of messages lost stays within 5 binomial standard
    deviations of the configured loss rate, and counters add up."""
    loss_rate = 0.25
    messages = 400
    geometry = Geometry({(STATION, "5001"): LinkGeometry(True, 700.0, 60.0)})
    async with running(broker, geometry, LinkConfig(loss_rate=loss_rate)) as h:
        topic = topics.ground_tx(STATION, "5001", "telemetry")
        for index in range(messages):
            await h.ground.publish(topic, index.to_bytes(2, "big"))
        await h.ground.publish(topics.ground_tx(STATION, "5001", "end"), b"")
        await asyncio.sleep(0.5)
        delivered = h.arrivals.qsize()
        counters = h.emulator.link(f"{STATION}/5001").counters
    lost = messages + 1 - delivered
    sigma = math.sqrt(messages * loss_rate * (1 - loss_rate))
    assert abs(lost - messages * loss_rate) < 5 * sigma
    assert counters.dropped_loss == lost
    assert counters.delivered_messages == delivered


async def test_real_link_is_left_alone(broker: PrivateBroker) -> None:
    """A link handed to a real radio is neither forwarded nor counted by the emulator."""
    geometry = Geometry({(STATION, "6001"): LinkGeometry(True, 800.0, 70.0)})
    async with running(broker, geometry, LinkConfig()) as h:
        h.emulator.set_real(STATION, "6001")
        await h.ground.publish(topics.ground_tx(STATION, "6001", "cmd"), b"over the air")
        await asyncio.sleep(0.3)
        assert h.arrivals.empty()
        assert h.emulator.link(f"{STATION}/6001").counters.sent_messages == 0
        h.emulator.set_real(STATION, "6001", real=False)
        await h.ground.publish(topics.ground_tx(STATION, "6001", "cmd"), b"emulated again")
        assert (await h.next()).payload == b"emulated again"


async def eventually(condition: Callable[[], bool], timeout_s: float = SETTLE_S) -> None:
    """Wait until ``condition()`` holds, polling every 10 ms; fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (emulator state has no event to wait on)
            await asyncio.sleep(0.01)


def forgotten(emulator: LinkEmulator, link_id: str) -> bool:
    try:
        emulator.link(link_id)
    except InvalidArgument:
        return True
    return False


async def retained_counters(
    broker: PrivateBroker, clock: SimulatedClock, sat: str
) -> link_pb2.LinkCounters:
    """The LinkCounters of (STATION, sat) that the broker holds retained (waits for them)."""
    received: asyncio.Queue[link_pb2.LinkCounters] = asyncio.Queue()

    async def record(message: ReceivedMessage) -> None:
        await received.put(link_pb2.LinkCounters.FromString(message.payload))

    async with MqttClient(broker.address, client_id=f"counters-{sat}", clock=clock) as client:
        await client.subscribe(topics.link_counters(STATION, sat), record)
        return await asyncio.wait_for(received.get(), SETTLE_S)


class StateWatcher:
    """A client recording every LinkState published under gp/v1/link/<STATION>/+/state."""

    def __init__(self) -> None:
        self.states: list[link_pb2.LinkState] = []

    async def __call__(self, message: ReceivedMessage) -> None:
        state = link_pb2.LinkState()
        state.ParseFromString(message.payload)
        self.states.append(state)

    def of(self, sat: str) -> list[link_pb2.LinkState]:
        return [state for state in self.states if state.satellite_id == sat]


async def test_heartbeat_only_for_links_that_are_up(broker: PrivateBroker) -> None:
    """Every state_interval_s the state of an up link is published again, but a link that is
    down (and stays down) is published once and then left alone; a change of state is
    published at once."""
    interval_s = 0.2
    watch_s = 1.2
    geometry = Geometry(
        {
            (STATION, "7001"): LinkGeometry(True, 900.0, 40.0),
            (STATION, "7002"): LinkGeometry(False, 3_000.0, -3.0),
        }
    )
    async with running(broker, geometry, LinkConfig(), state_interval_s=interval_s) as h:
        watcher = StateWatcher()
        async with MqttClient(broker.address, client_id="watcher", clock=h.clock) as client:
            await client.subscribe(f"gp/v1/link/{STATION}/+/state", watcher)
            await client.wait_connected()
            await asyncio.sleep(watch_s)
            up_states, down_states = len(watcher.of("7001")), len(watcher.of("7002"))
            geometry.links[(STATION, "7002")] = LinkGeometry(True, 1_500.0, 12.0)
            await eventually(lambda: any(state.up for state in watcher.of("7002")))
    # The retained state plus ~watch_s / interval_s heartbeats; half of them is plenty.
    assert up_states >= 1 + watch_s / interval_s / 2
    assert all(state.up for state in watcher.of("7001"))
    assert down_states == 1  # the retained state, never republished
    assert not watcher.of("7002")[0].up


async def test_link_out_of_view_is_forgotten_and_comes_back(broker: PrivateBroker) -> None:
    """A link that leaves the geometry is forgotten once its down state is published (the
    broker keeps that retained state and the counters); when it comes back it is a new
    acquisition (the handover outage applies) and its counters carry on from before."""
    outage_s = 1.0
    link_id = f"{STATION}/8001"
    geometry = Geometry({(STATION, "8001"): LinkGeometry(True, 1_000.0, 30.0)})
    config = LinkConfig(handover_outage_s=outage_s)
    async with running(broker, geometry, config) as h:
        topic = topics.ground_tx(STATION, "8001", "cmd")
        await h.ground.publish(topic, b"first pass")
        assert (await h.next()).payload == b"first pass"

        del geometry.links[(STATION, "8001")]
        await eventually(lambda: forgotten(h.emulator, link_id))
        assert link_id not in h.emulator.link_ids()
        watcher = StateWatcher()
        async with MqttClient(broker.address, client_id="watcher", clock=h.clock) as client:
            await client.subscribe(f"gp/v1/link/{STATION}/8001/state", watcher)
            await eventually(lambda: bool(watcher.states))
        assert [state.up for state in watcher.states] == [False]
        counters = await retained_counters(broker, h.clock, "8001")
        assert (counters.sent_messages, counters.delivered_messages) == (1, 1)

        geometry.links[(STATION, "8001")] = LinkGeometry(True, 1_100.0, 25.0)
        await eventually(lambda: not forgotten(h.emulator, link_id))
        reacquired = h.emulator.link(link_id)
        assert not reacquired.is_up(h.emulator.sim_s())  # in the handover outage
        await h.ground.publish(topic, b"during the outage")
        await eventually(lambda: reacquired.is_up(h.emulator.sim_s()), outage_s + SETTLE_S)
        await h.ground.publish(topic, b"second pass")
        assert (await h.next()).payload == b"second pass"
        assert h.arrivals.empty()
        totals = h.emulator.link(link_id).counters
    assert (totals.sent_messages, totals.delivered_messages) == (3, 2)
    assert totals.dropped_link_down == 1


async def test_transmission_to_unknown_id_is_dropped_and_counted(broker: PrivateBroker) -> None:
    """Transmissions naming a station or satellite the geometry never reported are dropped,
    counted once each in dropped_unknown_messages, and create no link; an id given up front
    is known (a link-down drop on its own link), and a real link is left alone even to an
    unknown id."""
    geometry = Geometry({(STATION, "9001"): LinkGeometry(True, 800.0, 55.0)})
    async with running(broker, geometry, LinkConfig(), satellites=("9002",)) as h:
        h.emulator.set_real(STATION, "9997")
        junk = [
            topics.ground_tx(STATION, "9999", "cmd"),  # unknown satellite
            topics.ground_tx("atlantis", "9001", "cmd"),  # unknown station
            topics.node_tx_ground("9001", "atlantis", "telemetry"),  # downlink to nowhere
            topics.node_tx_isl("9001", "9998", "route"),  # inter-satellite to nowhere
        ]
        for topic in junk:
            await h.ground.publish(topic, b"junk")
        await h.ground.publish(topics.ground_tx(STATION, "9997", "cmd"), b"over the air")
        await h.ground.publish(topics.ground_tx(STATION, "9002", "cmd"), b"known, out of view")
        await h.ground.publish(topics.ground_tx(STATION, "9001", "cmd"), b"known")
        assert (await h.next()).payload == b"known"
        await asyncio.sleep(0.2)
        assert h.arrivals.empty()
        assert h.emulator.dropped_unknown_messages == len(junk)
        for link_id in (
            f"{STATION}/9999",
            "atlantis/9001",
            f"{STATION}/9997",
            isl_link_id("9001", "9998"),
        ):
            assert forgotten(h.emulator, link_id), link_id
        # The known link out of view counted its drop, published it retained, and was forgotten.
        known = await retained_counters(broker, h.clock, "9002")
    assert (known.sent_messages, known.dropped_link_down_messages) == (1, 1)


class TimedGeometry(Geometry):
    """A geometry provider that costs ``cost_s`` of CPU time (what the emulator measures) and
    records its thread."""

    def __init__(self, links: Mapping[GroundKey, LinkGeometry], cost_s: float) -> None:
        super().__init__(links)
        self.cost_s = cost_s
        self.threads: list[int] = []

    def __call__(self, at: datetime) -> Mapping[GroundKey, LinkGeometry]:
        self.threads.append(threading.get_ident())
        spent_until = time.thread_time() + self.cost_s
        while time.thread_time() < spent_until:  # busy: CPU time, whatever else the machine does
            pass
        return super().__call__(at)


@pytest.mark.parametrize(("cost_s", "off_loop"), [(0.0, False), (5 * OFFLOAD_SAMPLE_S, True)])
async def test_expensive_geometry_is_sampled_off_the_event_loop(
    broker: PrivateBroker, cost_s: float, off_loop: bool
) -> None:
    """A provider costing OFFLOAD_SAMPLE_S or more is called in a worker thread after the first
    (measured) sample, and messages still arrive range/c after they were sent; a cheap provider
    stays on the event loop's thread."""
    range_km = 2_000.0
    geometry = TimedGeometry({(STATION, "9101"): LinkGeometry(True, range_km, 30.0)}, cost_s)
    async with running(broker, geometry, LinkConfig(), speed=0.25) as h:
        loop_thread = threading.get_ident()
        await eventually(lambda: len(geometry.threads) >= 5)
        sent = h.clock.now()
        await h.ground.publish(topics.ground_tx(STATION, "9101", "ping"), b"ping")
        arrival = await h.next()
    measured_s = (arrival.at - sent).total_seconds()
    expected_s = range_km / SPEED_OF_LIGHT_KM_S
    assert expected_s - 1e-4 <= measured_s <= expected_s + DELAY_TOLERANCE_S
    assert geometry.threads[0] == loop_thread  # the first sample is measured on the loop
    later_off_loop = {thread != loop_thread for thread in geometry.threads[1:]}
    assert later_off_loop == {off_loop}


async def test_update_known_replaces_the_ids_known_up_front(broker: PrivateBroker) -> None:
    """After update_known (the catalog changed) a satellite left out is unknown (its
    transmission is dropped without a link) and one added is known (a link-down drop on its own
    link while out of view). links_up counts the link in view; traffic sums every link's."""
    geometry = Geometry({(STATION, "9001"): LinkGeometry(True, 800.0, 55.0)})
    async with running(broker, geometry, LinkConfig(), satellites=("9002",)) as h:
        h.emulator.update_known([STATION], ["9001", "9003"])
        await h.ground.publish(topics.ground_tx(STATION, "9002", "cmd"), b"no longer known")
        await h.ground.publish(topics.ground_tx(STATION, "9003", "cmd"), b"known, out of view")
        await h.ground.publish(topics.ground_tx(STATION, "9001", "cmd"), b"in view")
        assert (await h.next()).payload == b"in view"
        assert h.emulator.dropped_unknown_messages == 1
        assert forgotten(h.emulator, f"{STATION}/9002")
        assert h.emulator.links_up() == 1
        traffic = h.emulator.traffic()
    assert (traffic.delivered_messages, traffic.dropped_link_down) == (1, 1)


class RecordingClient(MqttClient):
    """An MQTT client that records the topic of every publish the broker acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published: list[str] = []

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        deadline: datetime | None = None,
        expiry_s: float | None = None,
        timeout_s: float | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> None:
        await super().publish(
            topic,
            payload,
            qos=qos,
            retain=retain,
            deadline=deadline,
            expiry_s=expiry_s,
            timeout_s=timeout_s,
            user_properties=user_properties,
        )
        self.published.append(topic)


async def test_an_up_link_is_republished_on_a_delay_change_or_the_slow_refresh_only(
    broker: PrivateBroker,
) -> None:
    """Stepped tick by tick (1 simulated s each): an up link whose range creeps (delay moving
    by less than 1 ms in all) is not republished before its refresh (60 s here); a jump of
    400 km (1.3 ms) is published on that tick; 60 s after it the unchanged state is refreshed
    once; going down is published on that tick."""
    now_s = [0.0]
    clock = SimulatedClock(EPOCH, speed=1.0, monotonic=lambda: now_s[0])
    sat = "7001"
    geometry = Geometry({(STATION, sat): LinkGeometry(True, 900.0, 40.0)})
    state_topic = topics.link_state(STATION, sat)
    async with RecordingClient(broker.address, client_id="links", clock=clock) as client:
        await client.wait_connected()
        emulator = LinkEmulator(
            client, clock, geometry, config=LinkConfig(), tick_s=1.0, state_interval_s=60.0
        )

        async def step(range_km: float, *, up: bool = True) -> int:
            """Advance one simulated second, tick, and count the states published by it."""
            now_s[0] += 1.0
            geometry.links[(STATION, sat)] = LinkGeometry(up, range_km, 40.0 if up else -1.0)
            before = client.published.count(state_topic)
            await emulator.tick()
            return client.published.count(state_topic) - before

        await emulator.tick()
        assert client.published.count(state_topic) == 1  # the first state
        creeping = [await step(900.0 + 3.0 * tick) for tick in range(1, 59)]
        assert creeping == [0] * 58  # 174 km in all: 0.58 ms, under the threshold
        assert await step(1_300.0) == 1  # 400 km from the published state's 900 km
        quiet = [await step(1_300.0) for _ in range(60)]
        assert quiet == [0] * 59 + [1]  # the refresh, 60 s after the last state
        assert await step(1_300.0, up=False) == 1
