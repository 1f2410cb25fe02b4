"""The MQTT client wrapper against a real Mosquitto: round trips, reconnect, manual ack, expiry."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import DeadlineExceeded, InvalidArgument
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import (
    NOT_AUTHORIZED,
    Backoff,
    BrokerRefusedError,
    MqttClient,
    ReceivedMessage,
)

from .conftest import FAST_BACKOFF

CONNECT_SLACK_S = 1.0
"""Time a reconnect may take beyond its backoff delay (TCP + CONNECT + SUBSCRIBE on loopback,
on a loaded 2-core machine)."""


class Inbox:
    """Collects messages delivered to a handler."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

    async def __call__(self, message: ReceivedMessage) -> None:
        await self.queue.put(message)

    async def next(self, timeout_s: float = 5.0) -> ReceivedMessage:
        return await asyncio.wait_for(self.queue.get(), timeout_s)


def test_backoff_defaults_grow_by_1_6_capped_at_120_s_with_20_percent_jitter() -> None:
    """The default schedule is 1 s × 1.6ⁿ capped at 120 s, each delay within ±20 %."""
    backoff = Backoff()
    rng = random.Random(1)
    expected_s = 1.0
    for attempt in range(25):
        nominal_s = min(120.0, expected_s)
        assert backoff.nominal_s(attempt) == pytest.approx(nominal_s, rel=1e-12)
        delays = [backoff.delay_s(attempt, rng) for _ in range(200)]
        assert all(0.8 * nominal_s <= d <= 1.2 * nominal_s for d in delays)
        assert max(delays) - min(delays) > 0.2 * nominal_s  # jitter is actually applied
        expected_s *= 1.6
    assert backoff.nominal_s(10_000) == 120.0


async def test_qos1_round_trip_with_tcp_nodelay(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """A request published by the ground reaches the node and its reply comes back (QoS 1
    both ways), over sockets with TCP_NODELAY set."""
    request_topic = topics.node_rx_ground("25544", "svalbard", "echo/req")
    reply_topic = topics.node_tx_ground("25544", "svalbard", "echo/resp")
    replies = Inbox()
    async with (
        MqttClient(broker.address, client_id="ground", clock=clock) as ground,
        MqttClient(broker.node_address("25544"), client_id="node", clock=clock) as node,
    ):

        async def echo(message: ReceivedMessage) -> None:
            await node.publish(reply_topic, message.payload[::-1])

        await node.subscribe(request_topic, echo)
        await ground.subscribe(reply_topic, replies)
        await ground.wait_connected()
        await node.wait_connected()
        assert ground.tcp_nodelay()
        assert node.tcp_nodelay()
        for index in range(20):
            payload = f"request-{index}".encode()
            await ground.publish(request_topic, payload)
            reply = await replies.next()
            assert reply.payload == payload[::-1]
            assert reply.qos == 1


async def test_reconnects_within_backoff_bound_and_resubscribes(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """After a SIGKILL and restart on the same port the client reconnects within its backoff
    bound (plus connect slack) and gets messages on its filters again without subscribing."""
    inbox = Inbox()
    topic = topics.ground_rx("svalbard", "25544", "events")
    async with (
        MqttClient(broker.address, client_id="listener", clock=clock, backoff=FAST_BACKOFF) as c,
        MqttClient(broker.address, client_id="talker", clock=clock, backoff=FAST_BACKOFF) as t,
    ):
        await c.subscribe(topic, inbox)
        await c.wait_connected()
        await t.wait_connected()
        await broker.kill()
        await asyncio.sleep(1.0)  # down long enough for several failed attempts (cap 0.5 s)
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        await broker.start()
        await c.wait_connected(timeout_s=10)
        reconnect_s = loop.time() - restarted
        bound_s = FAST_BACKOFF.bound_s(100) + CONNECT_SLACK_S
        print(f"reconnected {reconnect_s * 1000:.0f} ms after restart (bound {bound_s:.2f} s)")
        assert reconnect_s <= bound_s
        assert c.connections == 2
        await t.wait_connected(timeout_s=10)
        await t.publish(topic, b"after restart")
        assert (await inbox.next()).payload == b"after restart"


async def test_message_is_acknowledged_only_after_its_handler_finished(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """A message whose handler never finished is redelivered to the resumed session; a handled
    one is not (so acknowledgement waited for the handler)."""
    client_id = f"worker-{uuid.uuid4().hex[:8]}"
    topic = topics.node_rx_ground("25544", "svalbard", "work")
    started = asyncio.Event()
    first_life: list[bytes] = []

    async def record_and_hang_on_second(message: ReceivedMessage) -> None:
        first_life.append(message.payload)
        if message.payload == b"second":
            started.set()
            await asyncio.Event().wait()  # never returns: the worker "crashes" mid-handling

    worker = MqttClient(broker.address, client_id=client_id, clock=clock, persistent_session=True)
    async with MqttClient(broker.address, client_id="producer", clock=clock) as producer:
        async with worker:
            await worker.subscribe(topic, record_and_hang_on_second)
            await worker.wait_connected()
            await producer.wait_connected()
            await producer.publish(topic, b"first")
            await producer.publish(topic, b"second")
            await asyncio.wait_for(started.wait(), 5)
        # The worker left with "second" unhandled; its session persists on the broker.
        second_life = Inbox()
        resumed = MqttClient(
            broker.address, client_id=client_id, clock=clock, persistent_session=True
        )
        async with resumed:
            await resumed.subscribe(topic, second_life)
            redelivered = await second_life.next()
            assert redelivered.payload == b"second"
            await producer.publish(topic, b"third")
            assert (await second_life.next()).payload == b"third"
    assert first_life == [b"first", b"second"]


async def test_deadline_sets_message_expiry(broker: PrivateBroker, clock: SimulatedClock) -> None:
    """A deadline becomes the v5 message expiry: a message whose deadline passes while its
    subscriber is offline is never delivered, one with time left is; a passed deadline refuses
    to publish."""
    client_id = f"sleeper-{uuid.uuid4().hex[:8]}"
    topic = topics.node_rx_ground("25544", "svalbard", "expiring")
    inbox = Inbox()
    sleeper = MqttClient(broker.address, client_id=client_id, clock=clock, persistent_session=True)
    async with sleeper:
        await sleeper.subscribe(topic, inbox)
        await sleeper.wait_connected()
    async with MqttClient(broker.address, client_id="sender", clock=clock) as sender:
        await sender.wait_connected()
        now = clock.now()
        await sender.publish(topic, b"short", deadline=now + timedelta(seconds=1))
        await sender.publish(topic, b"long", deadline=now + timedelta(seconds=60))
        with pytest.raises(DeadlineExceeded):
            await sender.publish(topic, b"late", deadline=now - timedelta(seconds=1))
    await asyncio.sleep(2.2)
    sleeper = MqttClient(broker.address, client_id=client_id, clock=clock, persistent_session=True)
    async with sleeper:
        await sleeper.subscribe(topic, inbox)
        message = await inbox.next()
        assert message.payload == b"long"
        assert message.message_expiry_s is not None
        assert 55 <= message.message_expiry_s <= 60
        await asyncio.sleep(0.3)
        assert inbox.queue.empty()


async def test_filter_refused_on_resubscribe_is_dropped_and_the_connection_survives(
    broker: PrivateBroker, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter registered while the broker is down and refused (0x87) when the client
    reconnects is dropped and reported to its subscriber (on_refused, refused_subscriptions);
    the client stays connected, its allowed filter still delivers, and its owner does not fail."""
    own_topic = topics.node_rx_ground("25544", "svalbard", "jobs")
    forbidden = "gp/v1/node/48274/#"
    # Mosquitto 2.0 grants every subscription and applies its ACL on delivery; brokers that check
    # subscriptions (EMQX, Mosquitto's dynamic-security plugin) answer 0x87 in the SUBACK. Stand
    # in for one: the real SUBACK's code for the forbidden filter becomes 0x87.
    real_subscribe = aiomqtt.Client.subscribe

    async def checking_subscribe(
        self: aiomqtt.Client, request: list[tuple[str, Any]], *args: Any, **kwargs: Any
    ) -> list[Any]:
        codes = await real_subscribe(self, request, *args, **kwargs)
        refused = ReasonCode(PacketTypes.SUBACK, identifier=NOT_AUTHORIZED)
        return [
            refused if topic_filter == forbidden else code
            for (topic_filter, _), code in zip(request, codes, strict=True)
        ]

    monkeypatch.setattr(aiomqtt.Client, "subscribe", checking_subscribe)
    inbox = Inbox()
    refusals: list[BrokerRefusedError] = []
    node = MqttClient(
        broker.node_address("25544"), client_id="node-25544", clock=clock, backoff=FAST_BACKOFF
    )
    async with node:
        await node.subscribe(own_topic, inbox)
        await node.wait_connected()
        await broker.kill()
        await node.subscribe(forbidden, inbox, on_refused=refusals.append)  # not connected
        await broker.start()
        await node.wait_connected(timeout_s=10)
        # The publisher connects only now: it is not under test, and a client that was
        # connected when the broker died may notice the dead socket only at its I/O timeout.
        async with MqttClient(
            broker.address, client_id="ground", clock=clock, backoff=FAST_BACKOFF
        ) as g:
            await g.wait_connected(timeout_s=10)
            await g.publish(own_topic, b"still served")
            assert (await inbox.next()).payload == b"still served"
        assert node.connected
        assert node.connections == 2
    assert [refusal.topic for refusal in refusals] == [forbidden]
    assert refusals[0].reason_code == NOT_AUTHORIZED
    assert set(node.refused_subscriptions) == {forbidden}


async def test_a_malformed_shared_filter_is_refused_at_subscribe(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """A ``$share/`` filter without its group or filter is INVALID_ARGUMENT from subscribe()
    itself (not an error raised later inside paho's message callback); nothing is registered and
    a well-formed shared filter still works."""
    async with MqttClient(broker.address, client_id="ground", clock=clock) as ground:
        await ground.wait_connected()

        async def ignore(message: ReceivedMessage) -> None:
            return None

        for bad in ("$share/", "$share/group", "$share//gp/v1/x"):
            with pytest.raises(InvalidArgument, match="shared subscription"):
                await ground.subscribe(bad, ignore)
        inbox = Inbox()
        await ground.subscribe("$share/workers/gp/v1/test/+", inbox)
        await ground.publish("gp/v1/test/one", b"hello")
        assert (await inbox.next()).payload == b"hello"
