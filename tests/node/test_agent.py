"""The node agent over a real Mosquitto and the link emulator: answers, retries, errors, drain,
sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from google.protobuf.message import Message

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import FailedPrecondition, NotFound, ResourceExhausted
from groundplane.links.model import SPEED_OF_LIGHT_KM_S
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node import wire
from groundplane.node.backends import SyntheticModelSpec, predict_answer
from groundplane.node.directory import DRAINING, OFFLINE, ONLINE, NodeDirectory, NodeView
from groundplane.node.engine import EngineConfig
from groundplane.node.requester import Requester
from groundplane.node.sessions import Turn
from groundplane.node.v1 import node_pb2

from .conftest import FAST_MODEL, RANGE_KM, SATELLITES, STATION, SystemFactory

SAT, OTHER_SAT = SATELLITES
SLOW_MODEL = SyntheticModelSpec(
    "synth-slow", decode_s_per_token=0.05, min_answer_tokens=6, max_answer_tokens=6
)
"""Six pieces, 0.3 s per answer: long enough to overlap with what a test does meanwhile."""


def prompt_request(
    prompt: str, model: str = FAST_MODEL.name, **kwargs: object
) -> node_pb2.InferRequest:
    return node_pb2.InferRequest(model=model, prompt=prompt, max_tokens=32, **kwargs)  # type: ignore[arg-type]


async def test_answer_streams_through_the_link_and_equals_the_synthetic_prediction(
    make_system: SystemFactory,
) -> None:
    """A request sent via the station reaches the node over the emulated uplink and its answer
    streams back piece by piece over the downlink: the pieces and the final text equal the
    synthetic model's predicted answer, the reply is stamped with the node's current epoch, and
    the round trip takes at least two light times of the fixed range."""
    async with make_system() as system:
        seen: list[str] = []
        sent = system.clock.now()
        outcome = await system.requester.infer(
            SAT,
            STATION,
            prompt_request("what is the weather in orbit"),
            request_id="r-1",
            deadline=system.deadline(),
            on_piece=seen.append,
        )
        elapsed_s = (system.clock.now() - sent).total_seconds()
    expected = predict_answer(FAST_MODEL, (), "what is the weather in orbit", 32)
    assert outcome.text == expected.text
    assert outcome.pieces == expected.pieces
    assert tuple(seen) == expected.pieces
    assert len(expected.pieces) > 1
    assert outcome.epoch == system.epochs[SAT]
    assert outcome.result.output_tokens == len(expected.pieces)
    assert not outcome.result.deduplicated
    assert elapsed_s >= 2 * RANGE_KM / SPEED_OF_LIGHT_KM_S


async def test_retried_request_id_executes_once_and_replays_the_stored_result(
    make_system: SystemFactory,
) -> None:
    """The same request id sent again (after the first finished) is not executed a second time:
    the node answers with the stored result, marked deduplicated, and the engine counts one
    execution and one de-duplication."""
    async with make_system() as system:
        request = prompt_request("retry me")
        first = await system.requester.infer(
            SAT, STATION, request, request_id="dup-1", deadline=system.deadline()
        )
        second = await system.requester.infer(
            SAT, STATION, request, request_id="dup-1", deadline=system.deadline()
        )
        assert system.host is not None
        load = system.host.agents[SAT].engine.load()
    assert second.text == first.text
    assert second.pieces == first.pieces
    assert not first.result.deduplicated
    assert second.result.deduplicated
    assert (load.executed_total, load.deduplicated_total) == (1, 1)


async def test_same_envelope_twice_in_flight_runs_once_and_both_get_the_answer(
    make_system: SystemFactory,
) -> None:
    """Two copies of one envelope (a QoS 1 redelivery or a hasty retry) that are in flight
    together join one execution: two results come back with the same text, one marked
    deduplicated, and the engine executed the request once."""
    async with make_system(models=(SLOW_MODEL,)) as system:
        results: asyncio.Queue[node_pb2.InferResult] = asyncio.Queue()

        async def collect(message: ReceivedMessage) -> None:
            envelope = wire.parse_envelope(message.payload)
            if envelope.payload_type == wire.type_name(node_pb2.InferResult()):
                await results.put(wire.unpack(envelope, node_pb2.InferResult))

        reply_topic = topics.ground_rx(STATION, SAT, "resp/raw")
        await system.ground.subscribe(reply_topic, collect)
        envelope = wire.envelope(
            prompt_request("twice", model=SLOW_MODEL.name),
            request_id="twice-1",
            sender_id="gw-raw",
            reply_topic=reply_topic,
            deadline=system.deadline(),
        ).SerializeToString()
        for _ in range(2):
            await system.ground.publish(
                topics.ground_tx(STATION, SAT, wire.INFER_CHANNEL), envelope
            )
        answers = [await asyncio.wait_for(results.get(), 5.0) for _ in range(2)]
        assert system.host is not None
        load = system.host.agents[SAT].engine.load()
    expected = predict_answer(SLOW_MODEL, (), "twice", 32).text
    assert [a.text for a in answers] == [expected, expected]
    assert sorted(a.deduplicated for a in answers) == [False, True]
    assert (load.executed_total, load.deduplicated_total) == (1, 1)


async def test_domain_errors_come_back_with_their_code_and_retry_hint(
    make_system: SystemFactory,
) -> None:
    """An unknown model comes back as NotFound naming the served models; a request that finds
    the only slot busy and no queue comes back as ResourceExhausted with a positive retry
    hint, while the first request still gets its answer."""
    config = EngineConfig(slots=1, queue_limit=0)
    async with make_system(models=(SLOW_MODEL,), engine_config=config) as system:
        with pytest.raises(NotFound, match="synth-slow"):
            await system.requester.infer(
                SAT,
                STATION,
                prompt_request("x", model="gpt-9"),
                request_id="nf",
                deadline=system.deadline(),
            )
        busy = asyncio.ensure_future(
            system.requester.infer(
                SAT,
                STATION,
                prompt_request("busy", model=SLOW_MODEL.name),
                request_id="busy",
                deadline=system.deadline(),
            )
        )
        await asyncio.sleep(0.1)  # the first one holds the slot (0.3 s of decoding)
        with pytest.raises(ResourceExhausted) as refused:
            await system.requester.infer(
                SAT,
                STATION,
                prompt_request("full", model=SLOW_MODEL.name),
                request_id="full",
                deadline=system.deadline(),
            )
        answered = await busy
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0
    assert answered.text == predict_answer(SLOW_MODEL, (), "busy", 32).text


async def test_birth_load_reports_and_graceful_drain(make_system: SystemFactory) -> None:
    """A node announces ONLINE with its epoch and served models and reports its load; on stop it
    goes DRAINING, still delivers the answer it had admitted, then OFFLINE under the same epoch
    (published explicitly: a clean disconnect fires no Will), and clears its retained load."""
    async with make_system(models=(SLOW_MODEL,)) as system:
        view = await system.directory.wait_for(SAT, lambda v: v.load is not None, 5.0)
        assert view.state == ONLINE
        assert view.served_models == (SLOW_MODEL.name,)
        assert view.load is not None
        assert view.load.free_slots == view.slots
        states: list[tuple[int, int]] = []
        system.directory.add_listener(
            lambda v: states.append((v.epoch, v.state)) if v.satellite_id == SAT else None
        )
        running = asyncio.ensure_future(
            system.requester.infer(
                SAT,
                STATION,
                prompt_request("last words", model=SLOW_MODEL.name),
                request_id="last",
                deadline=system.deadline(),
            )
        )
        await system.directory.wait_for(
            SAT, lambda v: v.load is not None and v.load.in_flight == 1, 5.0
        )
        assert system.host is not None
        system.host.stop()
        outcome = await running
        final = await system.directory.wait_for(SAT, lambda v: v.state == OFFLINE, 5.0)
    epoch = system.epochs[SAT]
    assert outcome.text == predict_answer(SLOW_MODEL, (), "last words", 32).text
    assert states == [(epoch, DRAINING), (epoch, OFFLINE)]
    assert final.epoch == epoch


async def test_session_moves_between_nodes_by_export_and_import(make_system: SystemFactory) -> None:
    """A session's turn on one node, exported with a fence epoch and imported on another over
    MQTT, continues there with the whole context (the answer equals the prediction with the first
    turn as context); the old node refuses further turns; a retried export (same request id)
    returns the same snapshot although the session has left the node."""
    async with make_system() as system:
        first = await system.requester.infer(
            SAT,
            STATION,
            prompt_request("hello", session_id="s-1"),
            request_id="t-1",
            deadline=system.deadline(),
        )
        exported = await system.requester.export_session(
            SAT, STATION, "s-1", fence_epoch=1, request_id="exp-1", deadline=system.deadline()
        )
        again = await system.requester.export_session(
            SAT, STATION, "s-1", fence_epoch=1, request_id="exp-1", deadline=system.deadline()
        )
        imported = await system.requester.import_session(
            OTHER_SAT, STATION, exported.snapshot, deadline=system.deadline()
        )
        second = await system.requester.infer(
            OTHER_SAT,
            STATION,
            prompt_request("and then?", session_id="s-1", session_epoch=1),
            request_id="t-2",
            deadline=system.deadline(),
        )
        with pytest.raises(FailedPrecondition, match="moved away"):
            await system.requester.infer(
                SAT,
                STATION,
                prompt_request("still there?", session_id="s-1"),
                request_id="t-3",
                deadline=system.deadline(),
            )
    context = (Turn("hello", first.text),)
    assert second.text == predict_answer(FAST_MODEL, context, "and then?", 32).text
    assert second.result.context_tokens == context[0].tokens
    assert exported.session_epoch == 1
    assert exported.snapshot_bytes == len(exported.snapshot) > 0
    assert exported.state_bytes > 0
    assert again.snapshot == exported.snapshot
    assert (imported.session_id, imported.session_epoch) == ("s-1", 1)


def test_node_view_reports_liveness() -> None:
    """A view is alive while ONLINE or DRAINING and accepting only while ONLINE."""
    online = NodeView("1", 5, ONLINE, ("m",), 2, None)
    draining = NodeView("1", 5, DRAINING, ("m",), 2, None)
    offline = NodeView("1", 5, OFFLINE, ("m",), 2, None)
    assert [v.alive for v in (online, draining, offline)] == [True, True, False]
    assert [v.accepting for v in (online, draining, offline)] == [True, False, False]
    assert online.serves("m")
    assert not online.serves("n")


class FakeClient:
    """Stands in for MqttClient: records publishes, lets the test deliver replies by hand."""

    def __init__(self) -> None:
        self.published: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.handlers: dict[str, Callable[[ReceivedMessage], Awaitable[None]]] = {}

    async def subscribe(
        self, topic_filter: str, handler: Callable[[ReceivedMessage], Awaitable[None]], **_: object
    ) -> None:
        self.handlers[topic_filter] = handler

    async def unsubscribe(self, topic_filter: str) -> None:
        self.handlers.pop(topic_filter, None)

    async def publish(self, topic: str, payload: bytes, **_: object) -> None:
        await self.published.put((topic, payload))


async def test_requester_orders_pieces_drops_duplicates_and_fences_stale_epochs() -> None:
    """Replies that arrive out of order, twice, or from a dead incarnation: the requester yields
    pieces in index order, drops the duplicate and the stale-epoch envelope (counting both), and
    returns the result of the live incarnation."""
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))
    directory = NodeDirectory()
    directory.observe_status(node_pb2.NodeStatus(satellite_id=SAT, epoch=7, state=ONLINE))
    fake = FakeClient()
    requester = Requester(cast(MqttClient, fake), clock, instance_id="gw-fake", directory=directory)
    await requester.start()
    call = asyncio.ensure_future(
        requester.infer(
            SAT,
            STATION,
            prompt_request("order"),
            request_id="o-1",
            deadline=clock.now() + timedelta(seconds=5),
        )
    )
    topic, payload = await asyncio.wait_for(fake.published.get(), 5.0)
    sent = wire.parse_envelope(payload)
    assert topic == topics.ground_tx(STATION, SAT, wire.INFER_CHANNEL)
    assert sent.epoch == 7  # addressed to the incarnation the directory holds
    handler = fake.handlers[requester.reply_filter]

    async def deliver(message: Message, epoch: int = 7) -> None:
        envelope = wire.envelope(message, request_id="o-1", sender_id=SAT, epoch=epoch)
        await handler(
            ReceivedMessage(sent.reply_topic, envelope.SerializeToString(), 1, False, None, 0.0)
        )

    await deliver(node_pb2.InferChunk(index=1, text=" b"))
    await deliver(node_pb2.InferChunk(index=0, text="a"))
    await deliver(node_pb2.InferChunk(index=0, text="a"))
    await deliver(node_pb2.InferChunk(index=2, text=" stale"), epoch=6)
    await deliver(node_pb2.InferChunk(index=2, text=" c"))
    await deliver(node_pb2.InferResult(text="a b c", output_tokens=3))
    outcome = await asyncio.wait_for(call, 5.0)
    assert outcome.pieces == ("a", " b", " c")
    assert outcome.text == "a b c"
    assert outcome.epoch == 7
    assert requester.duplicate_replies_total == 1
    assert requester.stale_rejected_total == 1
