"""``groundplane serve nodes`` as a process: half a small constellation over one connection.

Contract only: the process is started with its shard's broker account and the tracking
service's address; the test talks to it through gRPC health, the MQTT topics (directory, a
request through the link emulator) and the execution log file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from groundplane.cli.serve_nodes import NodesSettings, parse_shard, register
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.directory import OFFLINE, ONLINE, NodeDirectory, NodeView
from groundplane.node.executions import read_execution_log
from groundplane.node.requester import Requester
from groundplane.node.shard import shard_members
from groundplane.node.v1 import node_pb2
from groundplane.orbit.constellations import generate
from groundplane.tracking.app import build_tracking

from ..processes import Served, readiness, serve, wait_serving
from .conftest import FAST_BACKOFF, STATION, geometry

START = datetime(2026, 8, 16, tzinfo=UTC)
CONSTELLATION = "walker:8/2/1@550km:53"
SHARD_ID = "0-of-2"
START_TIMEOUT_S = 60.0
"""Interpreter start (numpy, grpc, sgp4 imports) on a loaded two-core machine."""
WAIT_S = 20.0
KEEPALIVE_S = 2


@dataclass
class Scene:
    broker: PrivateBroker
    tracking_target: str
    members: list[str]
    directory: NodeDirectory
    clock: SimulatedClock
    tmp_path: Path


@asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    """Tracking (in-process) with 8 satellites, a broker with the account of shard 0 of 2 (not
    started yet), and once started a ground client, directory, requester and link emulator."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    clock = SimulatedClock(START)
    elements = generate(CONSTELLATION, START)
    members = shard_members([e.catalog_id for e in elements], 0, 2)
    assert len(members) == 4
    tracking = build_tracking(clock, elements=elements, unready_delay_s=0.0, drain_grace_s=0.5)
    async with AsyncExitStack() as stack:
        stack.callback(tracking.close)
        await tracking.server.start()
        stack.push_async_callback(tracking.server.stop)
        broker = PrivateBroker(shards={SHARD_ID: members}, workdir=tmp_path / "broker")
        stack.push_async_callback(broker.stop)
        yield Scene(broker, tracking.server.target, members, NodeDirectory(), clock, tmp_path)


@asynccontextmanager
async def ground(scene: Scene) -> AsyncIterator[Requester]:
    """The ground side on the service account: directory, requester and the link emulator."""
    async with AsyncExitStack() as stack:
        links = await stack.enter_async_context(
            MqttClient(scene.broker.address, client_id="links", clock=scene.clock,
                       backoff=FAST_BACKOFF)
        )  # fmt: skip
        client = await stack.enter_async_context(
            MqttClient(scene.broker.address, client_id="ground", clock=scene.clock,
                       backoff=FAST_BACKOFF)
        )  # fmt: skip
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        emulator = LinkEmulator(
            links, scene.clock, geometry(scene.members), config=LinkConfig(), tick_s=0.05
        )
        emulator_task = tasks.create_task(emulator.run(), name="test-link-emulator")
        stack.callback(emulator_task.cancel)
        await scene.directory.attach(client)
        requester = await stack.enter_async_context(
            Requester(client, scene.clock, instance_id="gw-test", directory=scene.directory)
        )
        await client.wait_connected(WAIT_S)
        await emulator.wait_ready(WAIT_S)
        yield requester


def serve_nodes(scene: Scene, name: str) -> AbstractAsyncContextManager[Served]:
    return serve(
        "nodes",
        "--broker",
        scene.broker.shard_address(SHARD_ID).url,
        "--tracking",
        scene.tracking_target,
        "--shard",
        "0/2",
        "--model",
        "synth-7b:0:0.002",
        "--keepalive",
        str(KEEPALIVE_S),
        "--load-interval",
        "0.2",
        "--execution-log",
        str(scene.tmp_path / "executions.jsonl"),
        "--epoch-dir",
        str(scene.tmp_path / "epochs"),
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--start",
        START.isoformat(),
        "--unready-delay",
        "0",
        "--log-format",
        "json",
        stderr_path=scene.tmp_path / f"{name}.stderr",
        start_timeout_s=START_TIMEOUT_S,
        env={**os.environ, "PATH": f"/usr/sbin:{os.environ.get('PATH', '')}"},
    )


async def scrape(stderr: Path) -> str:
    """The process's /metrics text (its URL is in the ``metrics_serving`` log line)."""
    for line in stderr.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "metrics_serving":
            url = json.loads(line)["url"]
            break
    else:
        pytest.fail(f"no metrics_serving line in {stderr}")

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=WAIT_S) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(fetch)


async def all_members(scene: Scene, predicate: Callable[[NodeView], bool]) -> dict[str, NodeView]:
    """Every member's view once ``predicate`` holds for it."""
    return {sat: await scene.directory.wait_for(sat, predicate, WAIT_S) for sat in scene.members}


async def test_a_shard_process_serves_its_members_and_dies_with_its_will(tmp_path: Path) -> None:
    """NOT_SERVING while the broker is away, SERVING once every member is born; the directory
    sees exactly shard 0 of 2 ONLINE under the shard; a request to a member is answered and
    logged once in the execution log; kill -9 takes every member OFFLINE (died) through the one
    shard Will; a new process brings them back with higher epochs, and SIGTERM drains them
    (OFFLINE drained) and exits 0."""
    async with scene(tmp_path) as world, serve_nodes(world, "first") as first:
        assert (
            await readiness(first.target, WAIT_S, service="")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await world.broker.start()
        async with ground(world) as requester:
            await wait_serving(first.target, WAIT_S, service="")
            born = await all_members(world, lambda v: v.state == ONLINE)
            assert sorted(view.satellite_id for view in world.directory.nodes()) == world.members
            shard = world.directory.shard(SHARD_ID)
            assert shard is not None
            assert (shard.state, list(shard.members)) == (ONLINE, world.members)
            assert {v.shard_id for v in born.values()} == {SHARD_ID}
            assert {v.shard_epoch for v in born.values()} == {shard.epoch}

            sat = world.members[1]
            outcome = await requester.infer(
                sat,
                STATION,
                node_pb2.InferRequest(model="synth-7b", prompt="hello shard", max_tokens=4),
                request_id="req-serve-nodes-1",
                deadline=world.clock.now() + timedelta(seconds=30),
            )
            assert (outcome.satellite_id, outcome.epoch) == (sat, born[sat].epoch)
            log = read_execution_log(tmp_path / "executions.jsonl")
            assert [(e.request_id, e.satellite_id) for e in log.executions] == [
                ("req-serve-nodes-1", sat)
            ]
            assert log.unreadable_lines == 0
            metrics = await scrape(first.stderr_path)
            assert f'groundplane_nodes_agents{{shard_id="{SHARD_ID}"}} 4.0' in metrics
            assert f'groundplane_nodes_executions_total{{shard_id="{SHARD_ID}"}} 1.0' in metrics

            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
            dead = await all_members(world, lambda v: v.state == OFFLINE)
            for member, view in dead.items():
                assert view.died, member
                assert view.epoch == born[member].epoch
                assert not world.directory.accepts(member, view.epoch)

            async with serve_nodes(world, "second") as second:
                await wait_serving(second.target, WAIT_S, service="")
                again = await all_members(
                    world,
                    lambda v: v.state == ONLINE and v.epoch > born[v.satellite_id].epoch,
                )
                reborn = world.directory.shard(SHARD_ID)
                assert reborn is not None
                assert reborn.epoch > shard.epoch
                assert {v.shard_epoch for v in again.values()} == {reborn.epoch}
                await second.stop(WAIT_S)
                drained = await all_members(world, lambda v: v.state == OFFLINE)
                assert all(view.drained for view in drained.values())
                final = world.directory.shard(SHARD_ID)
                assert final is not None
                assert (final.state, final.drained) == (OFFLINE, True)


# -- the command line, pure --------------------------------------------------------------------


def test_shards_partition_the_catalog_stably() -> None:
    """--shard I/N over the same catalog (in any order, with repeats) gives disjoint shards whose
    union is the catalog, each every N-th of the sorted ids; a bad I/N is refused."""
    ids = [f"walker-{k:04d}" for k in (7, 3, 0, 5, 1, 6, 2, 4, 3)]
    shards = [shard_members(ids, index, 3) for index in range(3)]
    assert shards == [
        ["walker-0000", "walker-0003", "walker-0006"],
        ["walker-0001", "walker-0004", "walker-0007"],
        ["walker-0002", "walker-0005"],
    ]
    assert shard_members(list(reversed(ids)), 1, 3) == shards[1]
    assert parse_shard("1/3") == (1, 3)
    for text in ("3/3", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(InvalidArgument):
            parse_shard(text)


def test_the_shard_id_follows_the_account_and_a_foreign_account_is_refused() -> None:
    """The shard id defaults to the broker username after gp-shard-, else I-of-N; a shard id
    whose account is not the URL's username (nor the service account) is refused."""
    parser = argparse.ArgumentParser()
    services = parser.add_subparsers()
    register(services)

    def settings(*argv: str) -> NodesSettings:
        return NodesSettings.from_args(parser.parse_args(["nodes", *argv]))

    own = settings("--broker", "mqtt://gp-shard-east:pw@127.0.0.1:1883", "--satellites", "a,b")
    assert (own.shard_id, own.satellites) == ("east", ("a", "b"))
    service = settings(
        "--broker", "mqtt://gp-service:pw@h:1", "--shard", "1/4", "--tracking", "h:50051"
    )
    assert (service.shard_id, service.shard) == ("1-of-4", (1, 4))
    with pytest.raises(InvalidArgument, match="gp-shard-west"):
        settings(
            "--broker", "mqtt://gp-shard-east:pw@h:1", "--shard-id", "west", "--satellites", "a"
        )
    with pytest.raises(InvalidArgument, match="--tracking"):
        settings("--broker", "mqtt://gp-shard-east:pw@h:1", "--shard", "0/2")
