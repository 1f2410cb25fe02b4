"""MQTT request/response: raw aiomqtt vs groundplane's client vs through an emulated link.

All three run against one private Mosquitto in the same run (QoS 1, TCP_NODELAY everywhere):

* ``raw``      — two aiomqtt clients: request topic → responder → reply topic (2 broker hops);
* ``wrapper``  — the same with :class:`groundplane.mqtt.client.MqttClient` and protobuf envelopes;
* ``emulated`` — ground → uplink → link emulator → node → downlink → link emulator → ground, with
  a link of zero configured delay (4 broker hops, the path every real request takes);
* ``node agent`` — the same path with the real pieces: :class:`~groundplane.node.requester.
  Requester` → link emulator → :class:`~groundplane.node.agent.NodeAgent` (engine admission,
  de-duplication, a zero-cost one-token synthetic model) → one ``InferChunk`` and one
  ``InferResult`` envelope back (6 broker hops).

Latency is measured with one request outstanding; requests/s with ``--concurrency`` outstanding.
The raw reference runs first and again last (``raw again``) to show the run-to-run noise.

    .venv/bin/python bench/mqtt_roundtrip.py [--requests 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiomqtt
import structlog

from groundplane.kernel.clock import SimulatedClock
from groundplane.link.v1 import link_pb2
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig, LinkGeometry
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress, PrivateBroker
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import SyntheticBackend, SyntheticModelSpec
from groundplane.node.engine import Engine, EngineConfig
from groundplane.node.requester import Requester
from groundplane.node.v1 import node_pb2

STATION = "bench-gs"
SAT = "90001"
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

Request = Callable[[int], Awaitable[None]]


async def measure(request: Request, count: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (s) with one request outstanding, and requests/s with ``concurrency``."""
    for index in range(50):  # warm up
        await request(-1 - index)
    latencies = []
    for index in range(count):
        started = time.perf_counter()
        await request(index)
        latencies.append(time.perf_counter() - started)
    next_id = count
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal next_id
        while next_id < 2 * count:
            next_id += 1
            await request(next_id)

    async with asyncio.TaskGroup() as tasks:
        for n in range(concurrency):
            tasks.create_task(worker(), name=f"bench-worker-{n}")
    return latencies, count / (time.perf_counter() - started)


class Waiters:
    """Futures keyed by request id, resolved by a reply handler."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[None]] = {}

    def expect(self, request_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        return future

    def resolve(self, request_id: str) -> None:
        future = self.pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(None)


async def bench_raw(
    address: BrokerAddress, count: int, concurrency: int
) -> tuple[list[float], float]:
    """The reference: two aiomqtt clients, request topic → responder → reply topic."""
    waiters = Waiters()

    def connect(identifier: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            address.host,
            address.port,
            identifier=identifier,
            username=address.username,
            password=address.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=NODELAY,
        )

    async with (
        connect("raw-req") as requester,
        connect("raw-resp") as responder,
        asyncio.TaskGroup() as tasks,
    ):
        requester.pending_calls_threshold = responder.pending_calls_threshold = 10 * concurrency
        await responder.subscribe("gp/v1/bench/raw/req", qos=1)
        await requester.subscribe("gp/v1/bench/raw/resp", qos=1)

        async def respond() -> None:
            async for message in responder.messages:
                await responder.publish("gp/v1/bench/raw/resp", message.payload, qos=1)

        async def collect() -> None:
            async for message in requester.messages:
                assert isinstance(message.payload, bytes)
                waiters.resolve(message.payload.decode())

        serving = [
            tasks.create_task(respond(), name="raw-respond"),
            tasks.create_task(collect(), name="raw-collect"),
        ]

        async def request(index: int) -> None:
            reply = waiters.expect(str(index))
            await requester.publish("gp/v1/bench/raw/req", str(index).encode(), qos=1)
            async with asyncio.timeout(10):
                await reply

        result = await measure(request, count, concurrency)
        for task in serving:
            task.cancel()
    return result


async def bench_wrapper(
    broker: PrivateBroker, count: int, concurrency: int, *, emulated: bool
) -> tuple[list[float], float]:
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))
    waiters = Waiters()
    if emulated:
        request_topic = topics.ground_tx(STATION, SAT, "bench/req")
        serve_topic = topics.node_rx_ground(SAT, STATION, "bench/req")
        reply_topic = topics.ground_rx(STATION, SAT, "bench/resp")
    else:
        request_topic = serve_topic = topics.node_rx_ground(SAT, STATION, "direct/req")
        reply_topic = topics.node_tx_ground(SAT, STATION, "direct/resp")
    geometry = {(STATION, SAT): LinkGeometry(True, 0.0, 90.0)}
    async with (
        MqttClient(broker.address, client_id="bench-links", clock=clock) as links_client,
        MqttClient(broker.address, client_id="bench-ground", clock=clock) as ground,
        MqttClient(broker.node_address(SAT), client_id="bench-node", clock=clock) as node,
        asyncio.TaskGroup() as tasks,
    ):
        emulator = LinkEmulator(links_client, clock, lambda _at: geometry, config=LinkConfig())
        service = tasks.create_task(emulator.run(), name="bench-emulator")

        async def serve(message: ReceivedMessage) -> None:
            envelope = link_pb2.Envelope()
            envelope.ParseFromString(message.payload)
            response = link_pb2.Envelope(request_id=envelope.request_id, sender_id=SAT)
            target = (
                topics.reply_via_downlink(SAT, envelope.reply_topic)
                if emulated
                else envelope.reply_topic
            )
            await node.publish(target, response.SerializeToString())

        async def collect(message: ReceivedMessage) -> None:
            envelope = link_pb2.Envelope()
            envelope.ParseFromString(message.payload)
            waiters.resolve(envelope.request_id)

        await node.subscribe(serve_topic, serve)
        await ground.subscribe(reply_topic, collect)
        await emulator.wait_ready()
        await node.wait_connected()

        async def request(index: int) -> None:
            request_id = str(index)
            deadline = clock.now() + timedelta(seconds=10)
            envelope = link_pb2.Envelope(
                request_id=request_id, reply_topic=reply_topic, sender_id="bench", payload=b"x"
            )
            envelope.deadline.FromDatetime(deadline)
            reply = waiters.expect(request_id)
            await ground.publish(request_topic, envelope.SerializeToString(), deadline=deadline)
            async with asyncio.timeout(10):
                await reply

        result = await measure(request, count, concurrency)
        service.cancel()
    return result


async def bench_node(
    broker: PrivateBroker, count: int, concurrency: int
) -> tuple[list[float], float]:
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))
    geometry = {(STATION, SAT): LinkGeometry(True, 0.0, 90.0)}
    backend = SyntheticBackend([SyntheticModelSpec("bench-model")], clock)
    config = EngineConfig(slots=concurrency, queue_limit=concurrency)
    epochs = EpochSource(time.time_ns)
    async with (
        MqttClient(broker.address, client_id="bench-node-links", clock=clock) as links_client,
        MqttClient(broker.address, client_id="bench-node-ground", clock=clock) as ground,
        Engine(backend, clock, config) as engine,
        asyncio.TaskGroup() as tasks,
    ):
        emulator = LinkEmulator(links_client, clock, lambda _at: geometry, config=LinkConfig())
        service = tasks.create_task(emulator.run(), name="bench-node-emulator")
        agent = NodeAgent(
            SAT, broker.node_address(SAT), engine, clock, epochs=epochs, config=AgentConfig()
        )
        agent_task = tasks.create_task(agent.run(), name="bench-node-agent")
        requester = Requester(ground, clock, instance_id="bench-gw")
        await requester.start()
        await emulator.wait_ready()
        await agent.wait_ready()
        message = node_pb2.InferRequest(model="bench-model", prompt="ping", max_tokens=1)

        async def request(index: int) -> None:
            await requester.infer(
                SAT,
                STATION,
                message,
                request_id=f"bench-{index}",
                deadline=clock.now() + timedelta(seconds=10),
            )

        result = await measure(request, count, concurrency)
        agent.stop()
        await agent_task
        service.cancel()
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    async with PrivateBroker(nodes=[SAT]) as broker:
        results = {
            "raw aiomqtt": await bench_raw(broker.address, args.requests, args.concurrency),
            "wrapper": await bench_wrapper(broker, args.requests, args.concurrency, emulated=False),
            "emulated link": await bench_wrapper(
                broker, args.requests, args.concurrency, emulated=True
            ),
            "node agent": await bench_node(broker, args.requests, args.concurrency),
            "raw again": await bench_raw(broker.address, args.requests, args.concurrency),
        }
    raw_latencies, raw_rps = results["raw aiomqtt"]
    raw_p50, raw_p99 = percentile(raw_latencies, 0.5), percentile(raw_latencies, 0.99)
    print(
        f"{args.requests} sequential requests, then {args.requests} with "
        f"{args.concurrency} outstanding; QoS 1, TCP_NODELAY, one Mosquitto"
    )
    print(
        f"{'path':<15}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"{'p50 ×raw':>10}{'p99 ×raw':>10}{'req/s ×raw':>12}"
    )
    for name, (latencies, rps) in results.items():
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"{name:<15}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}{rps:>9.0f}"
            f"{p50 / raw_p50:>10.2f}{p99 / raw_p99:>10.2f}{rps / raw_rps:>12.2f}"
        )
    emulated_p50 = percentile(results["emulated link"][0], 0.5)
    print(f"emulated-link overhead over raw: {(emulated_p50 - raw_p50) * 1e3:.3f} ms p50")
    node_p50 = percentile(results["node agent"][0], 0.5)
    print(
        f"node agent + requester over the bare emulated link: "
        f"{(node_p50 - emulated_p50) * 1e3:.3f} ms p50"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
