"""Nodes shards: shard liveness in the directory, shard broker accounts, and agents multiplexed
over one connection (births, requests, load only when it changes, graceful stop)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import Unavailable
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress, PrivateBroker, shard_username
from groundplane.mqtt.client import NOT_AUTHORIZED, BrokerRefusedError, MqttClient, ReceivedMessage
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import SyntheticBackend
from groundplane.node.directory import DRAINING, OFFLINE, ONLINE, NodeDirectory, NodeView
from groundplane.node.engine import Engine, EngineConfig
from groundplane.node.power import ShardPower
from groundplane.node.requester import Requester
from groundplane.node.shard import NodeShard, ShardConfig
from groundplane.node.v1 import node_pb2

from .conftest import EPOCH, FAST_BACKOFF, FAST_MODEL, STATION, geometry, has_epoch

MEMBERS = ("sat-a", "sat-b", "sat-c")
OUTSIDER = "sat-z"
SHARD = "s0"
WAIT_S = 10.0


def node_status(
    sat: str, epoch: int, state: node_pb2.NodeState.ValueType, *, shard_epoch: int = 1
) -> node_pb2.NodeStatus:
    return node_pb2.NodeStatus(
        satellite_id=sat,
        epoch=epoch,
        state=state,
        served_models=["m"],
        shard_id=SHARD,
        shard_epoch=shard_epoch,
    )


def shard_status(
    epoch: int, state: node_pb2.NodeState.ValueType, *, drained: bool = False
) -> node_pb2.ShardStatus:
    return node_pb2.ShardStatus(
        shard_id=SHARD, epoch=epoch, state=state, members=list(MEMBERS), drained=drained
    )


def states(directory: NodeDirectory) -> dict[str, tuple[int, int]]:
    return {view.satellite_id: (view.epoch, view.state) for view in directory.nodes()}


# -- the directory's shard rules (pure) -------------------------------------------------------


def test_shard_will_takes_every_member_offline_and_a_new_birth_brings_them_back() -> None:
    """Members ONLINE under shard epoch 1; the shard's Will (OFFLINE 1, without the member list,
    which the birth's keeps) makes each OFFLINE and died (its replies rejected, listeners told);
    shard epoch 2 with new member births (higher node epochs) makes them ONLINE again, and a
    node of another shard is untouched."""
    directory = NodeDirectory()
    told: list[NodeView] = []
    directory.add_listener(told.append)
    for index, sat in enumerate(MEMBERS):
        directory.observe_status(node_status(sat, 10 + index, ONLINE))
    directory.observe_status(
        node_pb2.NodeStatus(
            satellite_id=OUTSIDER, epoch=5, state=ONLINE, shard_id="other", shard_epoch=1
        )
    )
    assert directory.observe_shard(shard_status(1, ONLINE))
    told.clear()

    will = shard_status(1, OFFLINE)
    del will.members[:]  # the Will carries no members (64 KiB limit); the birth's are kept
    assert directory.observe_shard(will)
    shard = directory.shard(SHARD)
    assert shard is not None
    assert (shard.state, shard.members) == (OFFLINE, MEMBERS)

    for sat in MEMBERS:
        view = directory.get(sat)
        assert view is not None
        assert (view.state, view.died) == (OFFLINE, True)
        assert not directory.accepts(sat, view.epoch)
    assert sorted(view.satellite_id for view in told) == sorted(MEMBERS)
    outsider = directory.get(OUTSIDER)
    assert outsider is not None
    assert outsider.state == ONLINE

    assert directory.observe_shard(shard_status(2, ONLINE))
    for index, sat in enumerate(MEMBERS):
        assert directory.observe_status(node_status(sat, 20 + index, ONLINE, shard_epoch=2))
    assert states(directory) == {
        **{sat: (20 + index, ONLINE) for index, sat in enumerate(MEMBERS)},
        OUTSIDER: (5, ONLINE),
    }
    assert all(directory.accepts(sat, 20 + index) for index, sat in enumerate(MEMBERS))


def test_retained_messages_in_any_order_give_the_same_verdict() -> None:
    """A directory that starts late may get the shard's retained Will before the members'
    retained births: the births of that dead shard epoch count as OFFLINE; a late Will of an
    older shard epoch changes nothing, and a member born under a newer shard epoch than the held
    OFFLINE one is ONLINE."""
    directory = NodeDirectory()
    assert directory.observe_shard(shard_status(3, OFFLINE))
    directory.observe_status(node_status("sat-a", 30, ONLINE, shard_epoch=3))
    directory.observe_status(node_status("sat-b", 40, ONLINE, shard_epoch=4))
    assert states(directory) == {"sat-a": (30, OFFLINE), "sat-b": (40, ONLINE)}
    assert not directory.accepts("sat-a", 30)

    assert directory.observe_shard(shard_status(4, ONLINE))
    assert not directory.observe_shard(shard_status(3, OFFLINE))  # a late Will, ignored
    assert states(directory)["sat-b"] == (40, ONLINE)
    assert directory.ignored_statuses_total == 1


def test_a_gracefully_stopped_shard_keeps_its_members_replies_valid() -> None:
    """Shard DRAINING then OFFLINE drained: a member whose own DRAINING is the last it said
    becomes OFFLINE drained, and replies of its epoch are still accepted."""
    directory = NodeDirectory()
    directory.observe_shard(shard_status(1, ONLINE))
    directory.observe_status(node_status("sat-a", 10, DRAINING))
    directory.observe_shard(shard_status(1, DRAINING))
    view = directory.get("sat-a")
    assert view is not None
    assert view.state == DRAINING
    directory.observe_shard(shard_status(1, OFFLINE, drained=True))
    view = directory.get("sat-a")
    assert view is not None
    assert (view.state, view.drained, view.died) == (OFFLINE, True, False)
    assert directory.accepts("sat-a", 10)


# -- broker accounts ---------------------------------------------------------------------------


@pytest.fixture
async def shard_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(
        nodes=[OUTSIDER],
        shards={SHARD: MEMBERS, "s1": [OUTSIDER]},
        workdir=tmp_path / "broker",
    ) as running:
        yield running


async def test_a_shard_account_may_speak_only_for_its_members(
    shard_broker: PrivateBroker,
) -> None:
    """The shard's account publishes on its members' node topics and its own shard topic; for a
    satellite of another shard, another shard's topic or its own name as a node the broker
    answers 0x87 Not authorized. Subscribing wider (another node, a wildcard over all nodes) is
    granted by Mosquitto 2.0 but delivers only its members' messages: the marker published after
    the outsider's message arrives right after the member's."""
    clock = SimulatedClock(EPOCH)
    address = shard_broker.shard_address(SHARD)
    assert address.username == shard_username(SHARD) == "gp-shard-s0"
    assert shard_broker.shard_members(SHARD) == MEMBERS
    seen: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

    async def record(message: ReceivedMessage) -> None:
        await seen.put(message)

    async with (
        MqttClient(address, client_id="acl-probe", clock=clock) as client,
        MqttClient(shard_broker.address, client_id="svc", clock=clock) as service,
    ):
        await client.wait_connected()
        await service.wait_connected()
        for sat in MEMBERS:
            await client.publish(topics.node_status(sat), b"x", timeout_s=WAIT_S)
        await client.publish(topics.shard_status(SHARD), b"x", timeout_s=WAIT_S)
        denied_publish = [
            topics.node_status(OUTSIDER),
            topics.node_tx_ground(OUTSIDER, STATION, "infer/res"),
            topics.shard_status("s1"),
            f"{topics.PREFIX}/node/{shard_username(SHARD)}/status",
        ]
        for topic in denied_publish:
            with pytest.raises(BrokerRefusedError) as refused:
                await client.publish(topic, b"x", timeout_s=WAIT_S)
            assert refused.value.reason_code == NOT_AUTHORIZED, topic

        await client.subscribe(f"{topics.PREFIX}/node/+/rx/#", record)
        await client.subscribe(f"{topics.PREFIX}/node/{OUTSIDER}/rx/#", record)
        outsider_rx = topics.node_rx_ground(OUTSIDER, STATION, "infer/req")
        member_rx = topics.node_rx_ground("sat-a", STATION, "infer/req")
        await service.publish(member_rx, b"mine", timeout_s=WAIT_S)
        await service.publish(outsider_rx, b"not mine", timeout_s=WAIT_S)
        await service.publish(member_rx, b"marker", timeout_s=WAIT_S)
        first = await asyncio.wait_for(seen.get(), WAIT_S)
        second = await asyncio.wait_for(seen.get(), WAIT_S)
        assert [(first.topic, first.payload), (second.topic, second.payload)] == [
            (member_rx, b"mine"),
            (member_rx, b"marker"),
        ]


async def _ignore(_message: object) -> None:
    return None


# -- a shard over a real broker ----------------------------------------------------------------


@dataclass
class ShardRun:
    shard: NodeShard
    directory: NodeDirectory
    requester: Requester
    clock: SimulatedClock
    task: asyncio.Task[None]


@asynccontextmanager
async def running_shard(
    broker: PrivateBroker,
    *,
    load_interval_s: float = 0.05,
    keepalive_s: int = 30,
    power: ShardPower | None = None,
    links_address: BrokerAddress | None = None,
    ground_address: BrokerAddress | None = None,
) -> AsyncIterator[ShardRun]:
    """The link emulator, a ground client with directory and requester, and a shard of
    MEMBERS (the emulator and the ground client as the service account unless given)."""
    clock = SimulatedClock(EPOCH)
    directory = NodeDirectory()
    async with AsyncExitStack() as stack:
        links = await stack.enter_async_context(
            MqttClient(
                links_address or broker.address, client_id="links", clock=clock,
                backoff=FAST_BACKOFF,
            )
        )  # fmt: skip
        ground = await stack.enter_async_context(
            MqttClient(
                ground_address or broker.address, client_id="ground", clock=clock,
                backoff=FAST_BACKOFF,
            )
        )  # fmt: skip
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        emulator = LinkEmulator(links, clock, geometry(MEMBERS), config=LinkConfig(), tick_s=0.05)
        emulator_task = tasks.create_task(emulator.run(), name="test-link-emulator")
        stack.callback(emulator_task.cancel)
        await directory.attach(ground)
        requester = await stack.enter_async_context(
            Requester(ground, clock, instance_id="gw-test", directory=directory)
        )
        await ground.wait_connected()
        await emulator.wait_ready()
        config = AgentConfig(load_interval_s=load_interval_s, backoff=FAST_BACKOFF)
        agents = []
        for sat in MEMBERS:
            engine = await stack.enter_async_context(
                Engine(SyntheticBackend([FAST_MODEL], clock), clock, EngineConfig())
            )
            agents.append(
                NodeAgent(sat, broker.shard_address(SHARD), engine, clock,
                          epochs=EpochSource(time.time_ns), config=config)
            )  # fmt: skip
        shard = NodeShard(
            SHARD,
            broker.shard_address(SHARD),
            agents,
            clock,
            epochs=EpochSource(time.time_ns),
            config=ShardConfig(
                keepalive_s=keepalive_s, load_interval_s=load_interval_s, backoff=FAST_BACKOFF
            ),
            power=power,
        )
        task = tasks.create_task(shard.run(), name="test-node-shard")
        stack.callback(task.cancel)
        epochs = await shard.wait_ready(WAIT_S)
        for sat, epoch in epochs.items():
            await directory.wait_for(sat, has_epoch(epoch), WAIT_S)
        yield ShardRun(shard, directory, requester, clock, task)


async def test_members_are_born_on_one_connection_and_answer_requests(
    shard_broker: PrivateBroker,
) -> None:
    """Every member is ONLINE in the directory naming the shard and its epoch, all over the one
    connection of the shard's account; a request to each member through the link emulator is
    answered by that member's incarnation."""
    async with running_shard(shard_broker) as run:
        shard_view = run.directory.shard(SHARD)
        assert shard_view is not None
        assert (shard_view.state, shard_view.members, shard_view.epoch) == (
            ONLINE,
            MEMBERS,
            run.shard.epoch,
        )
        for sat, agent in run.shard.agents.items():
            view = run.directory.get(sat)
            assert view is not None
            assert (view.state, view.shard_id, view.shard_epoch) == (ONLINE, SHARD, run.shard.epoch)
            assert agent.client is run.shard.client
            outcome = await run.requester.infer(
                sat,
                STATION,
                node_pb2.InferRequest(model=FAST_MODEL.name, prompt=f"hello {sat}", max_tokens=4),
                request_id=f"req-{sat}",
                deadline=run.clock.now() + timedelta(seconds=30),
            )
            assert (outcome.satellite_id, outcome.epoch) == (sat, agent.epoch)
            assert outcome.result.output_tokens > 0


async def test_load_is_published_when_it_changes_and_otherwise_rarely(
    shard_broker: PrivateBroker,
) -> None:
    """At birth each member publishes its load; an unchanged load is not published again before
    load_refresh_every intervals, then it is; an execution changes it and it goes out at the
    next check, where the directory sees the new executed_total."""
    async with running_shard(shard_broker, load_interval_s=60.0) as run:
        agent = run.shard.agents["sat-a"]
        refresh_s = 60.0 * AgentConfig().load_refresh_every
        start = agent.load_reports_total
        now = asyncio.get_running_loop().time()
        assert start == 1
        assert not await agent.publish_load_if_due(now)
        assert await agent.publish_load_if_due(now + refresh_s)
        assert not await agent.publish_load_if_due(now + refresh_s + 1.0)
        await run.requester.infer(
            "sat-a",
            STATION,
            node_pb2.InferRequest(model=FAST_MODEL.name, prompt="count me", max_tokens=4),
            request_id="req-load",
            deadline=run.clock.now() + timedelta(seconds=30),
        )
        assert await agent.publish_load_if_due(now + refresh_s + 2.0)
        view = await run.directory.wait_for(
            "sat-a", lambda v: v.load is not None and v.load.executed_total == 1, WAIT_S
        )
        assert view.load is not None
        assert view.load.epoch == agent.epoch
        assert agent.load_reports_total == start + 2


async def test_stop_drains_every_member_then_the_shard(shard_broker: PrivateBroker) -> None:
    """stop(): every member ends OFFLINE drained, then the shard's own OFFLINE drained; the
    members' replies stay acceptable and run() returns."""
    async with running_shard(shard_broker) as run:
        run.shard.stop()
        async with asyncio.timeout(WAIT_S):
            await run.task
        shard_view = await run.directory.wait_for_shard(SHARD, lambda v: v.state == OFFLINE, WAIT_S)
        assert shard_view.drained
        for sat, agent in run.shard.agents.items():
            view = await run.directory.wait_for(sat, lambda v: v.state == OFFLINE, WAIT_S)
            assert view.drained
            assert run.directory.accepts(sat, agent.epoch)


async def test_a_member_the_account_may_not_speak_for_keeps_the_shard_unready(
    shard_broker: PrivateBroker,
) -> None:
    """A shard given a satellite outside its account's ACL: the broker refuses that member's
    birth, the shard keeps retrying it and never reports ready, while the allowed member is
    born and ONLINE in the directory."""
    clock = SimulatedClock(EPOCH)
    directory = NodeDirectory()
    async with AsyncExitStack() as stack:
        ground = await stack.enter_async_context(
            MqttClient(shard_broker.address, client_id="ground", clock=clock)
        )
        await ground.wait_connected()
        await directory.attach(ground)
        agents = []
        for sat in ("sat-a", OUTSIDER):
            engine = await stack.enter_async_context(
                Engine(SyntheticBackend([FAST_MODEL], clock), clock, EngineConfig())
            )
            agents.append(
                NodeAgent(sat, shard_broker.shard_address(SHARD), engine, clock,
                          epochs=EpochSource(time.time_ns), config=AgentConfig())
            )  # fmt: skip
        shard = NodeShard(
            SHARD,
            shard_broker.shard_address(SHARD),
            agents,
            clock,
            epochs=EpochSource(time.time_ns),
            config=ShardConfig(backoff=FAST_BACKOFF),
        )
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        task = tasks.create_task(shard.run(), name="test-node-shard")
        stack.callback(task.cancel)
        born = await directory.wait_for("sat-a", lambda v: v.state == ONLINE, WAIT_S)
        assert born.shard_id == SHARD
        with pytest.raises(Unavailable):
            await shard.wait_ready(2.0)
        assert not shard.born
        assert directory.get(OUTSIDER) is None
