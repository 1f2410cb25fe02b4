"""A nodes shard: many node agents over one MQTT connection.

One connection per satellite costs a socket, a keepalive timer, a paho client and its own
publishes per node: 1,584 of them starve a two-core machine before it serves anything. A
:class:`NodeShard` owns one :class:`~groundplane.mqtt.client.MqttClient` (client id
``shard-<shard_id>``, broker account ``gp-shard-<shard_id>`` whose ACL allows exactly its members'
``gp/v1/node/<sat>/#`` and its own ``gp/v1/shard/<shard_id>/#``) and runs every member's
:class:`~groundplane.node.agent.NodeAgent` over it (:meth:`NodeAgent.run_shared`):

* **subscriptions**: each member's request filters, registered on the one client (which matches
  an incoming topic in time independent of how many filters it holds) and sent in SUBSCRIBE
  requests of at most ``subscribe_batch`` filters;
* **liveness**: before every CONNECT the shard takes a new shard epoch and a new incarnation of
  every member (so a request redelivered at connect already meets the new epoch), and sets the
  connection's one Will: ``ShardStatus{OFFLINE, shard epoch}`` retained on
  ``gp/v1/shard/<shard_id>/status``. After the connect it publishes the shard's birth (ONLINE,
  its members) and then each member's retained ``NodeStatus`` naming the shard and shard epoch,
  at most ``startup_concurrency`` at a time (no start-up storm). ``NodeDirectory`` treats every
  node of an OFFLINE shard incarnation as OFFLINE;
* **load**: one loop for the whole shard checks every member each ``load_interval_s`` and
  publishes only the changed (or stale) reports;
* **stop**: shard DRAINING, every member drains (DRAINING, admitted work finished, OFFLINE
  ``drained``), then the shard's OFFLINE ``drained`` and a clean disconnect (no Will).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument, Unavailable
from groundplane.kernel.timestamps import to_timestamp
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import Backoff, Handler, LastWill, MqttClient
from groundplane.node.agent import DRAINING, OFFLINE, ONLINE, EpochSource, NodeAgent
from groundplane.node.power import ShardPower, energy_key
from groundplane.node.v1 import node_pb2

log = structlog.get_logger("groundplane.node.shard")

BIRTH_BACKOFF = Backoff(base_s=0.2, factor=1.6, cap_s=5.0, jitter=0.2)
"""Between retries of births that failed (the connection stays up; only a PUBACK was late)."""
SHARD_INFLIGHT_MESSAGES = 100
"""Unacknowledged QoS 1 publishes the shard's connection allows (paho's default is 20)."""


@dataclass(frozen=True)
class ShardConfig:
    """Settings of a shard's one connection and of its start-up.

    ``keepalive_s`` bounds failure detection of the whole shard (the broker fires its Will after
    about 1.5 × keepalive of silence). ``startup_concurrency`` bounds the births and the member
    status publishes in flight (a drain of every member at once); ``subscribe_batch`` the filters
    per SUBSCRIBE request. ``load_interval_s`` is how often the shard checks its members' load
    (wall seconds). ``birth_backoff`` spaces the retries of births that failed.
    """

    keepalive_s: int = 30
    io_timeout_s: float = 10.0
    session_expiry_s: int = 3600
    backoff: Backoff | None = None
    startup_concurrency: int = 64
    subscribe_batch: int = 256
    load_interval_s: float = 1.0
    birth_backoff: Backoff = BIRTH_BACKOFF

    def __post_init__(self) -> None:
        if self.keepalive_s < 1:
            raise InvalidArgument(f"keepalive_s must be ≥ 1 s, got {self.keepalive_s}")
        if self.startup_concurrency < 1 or self.subscribe_batch < 1:
            raise InvalidArgument(
                "startup_concurrency and subscribe_batch must be ≥ 1, got "
                f"{self.startup_concurrency}, {self.subscribe_batch}"
            )
        if not (self.io_timeout_s > 0 and self.load_interval_s > 0):
            raise InvalidArgument(
                "io_timeout_s and load_interval_s must be > 0 s, got "
                f"{self.io_timeout_s}, {self.load_interval_s}"
            )


def shard_members(catalog_ids: Sequence[str], index: int, count: int) -> list[str]:
    """Shard ``index`` (0-based) of ``count``: every ``count``-th of the sorted distinct ids,
    from the ``index``-th. ``serve nodes --shard I/N`` hosts this; a supervisor that creates the
    shard accounts computes the same from the same catalog."""
    if not 0 <= index < count:
        raise InvalidArgument(f"shard I/N needs 0 <= I < N, got {index}/{count}")
    return sorted(set(catalog_ids))[index::count]


def shard_client_id(shard_id: str) -> str:
    """The MQTT client id of a shard (fixed, so its persistent session is resumed)."""
    return f"shard-{topics.check_id('shard id', shard_id)}"


class NodeShard:
    """Runs ``agents`` over one connection until :meth:`stop` (or cancellation)."""

    def __init__(  # noqa: PLR0913 - the shard's id, broker, agents, clock and epoch source
        self,
        shard_id: str,
        address: BrokerAddress,
        agents: Sequence[NodeAgent],
        clock: Clock,
        *,
        epochs: EpochSource,
        config: ShardConfig | None = None,
        power: ShardPower | None = None,
    ) -> None:
        self._id = topics.check_id("shard id", shard_id)
        if power is not None and list(power.ids) != [agent.satellite_id for agent in agents]:
            raise InvalidArgument(f"shard {shard_id!r}: the energy model must cover its agents")
        self.power = power
        """The members' power and heat (``up --energy``), stepped by the load loop."""
        if not agents:
            raise InvalidArgument(f"shard {shard_id!r} needs at least one node agent, got none")
        ids = [agent.satellite_id for agent in agents]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"shard {shard_id!r} got a satellite twice: {sorted(ids)}")
        self._agents = {agent.satellite_id: agent for agent in agents}
        self._address = address
        self._clock = clock
        self._epochs = epochs
        self._config = config or ShardConfig()
        self._epoch = 0
        self._state: node_pb2.NodeState.ValueType = ONLINE
        self._client: MqttClient | None = None
        self._stop = asyncio.Event()
        self._born = asyncio.Event()
        self._log = log.bind(shard_id=self._id)
        self.births_total = 0
        """Member births published (every member at every connect)."""

    # -- state -----------------------------------------------------------------------------------

    @property
    def shard_id(self) -> str:
        return self._id

    @property
    def epoch(self) -> int:
        """The shard incarnation of the current (or latest attempted) connection."""
        return self._epoch

    @property
    def agents(self) -> dict[str, NodeAgent]:
        return dict(self._agents)

    @property
    def members(self) -> list[str]:
        return sorted(self._agents)

    @property
    def client(self) -> MqttClient | None:
        return self._client

    @property
    def born(self) -> bool:
        """Whether the shard and every member published a birth on the current connection."""
        return self._born.is_set()

    def stop(self) -> None:
        """Drain every member and make :meth:`run` return."""
        self._stop.set()

    async def wait_ready(self, timeout_s: float = 30.0) -> dict[str, int]:
        """Every member's epoch once the shard and all members are born; Unavailable after
        ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._born.wait()
        except TimeoutError:
            raise Unavailable(
                f"nodes shard {self._id!r} did not bring its {len(self._agents)} nodes online "
                f"within {timeout_s} s"
            ) from None
        return {sat: agent.epoch for sat, agent in sorted(self._agents.items())}

    def status_message(
        self,
        state: node_pb2.NodeState.ValueType | None = None,
        *,
        drained: bool = False,
        with_members: bool = True,
    ) -> node_pb2.ShardStatus:
        """The shard's status; the Will goes ``with_members=False`` (a CONNECT's Will payload is
        limited to 64 KiB: about 5,000 member ids)."""
        return node_pb2.ShardStatus(
            shard_id=self._id,
            epoch=self._epoch,
            state=self._state if state is None else state,
            members=self.members if with_members else [],
            updated_at=to_timestamp(self._clock.now()),
            drained=drained,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        config = self._config
        client = MqttClient(
            self._address,
            client_id=shard_client_id(self._id),
            clock=self._clock,
            persistent_session=True,
            session_expiry_s=config.session_expiry_s,
            keepalive_s=config.keepalive_s,
            io_timeout_s=config.io_timeout_s,
            backoff=config.backoff,
            will=self._next_will,
            on_connect=self._on_connect,
            max_concurrent_handlers=256,
            max_inflight_messages=SHARD_INFLIGHT_MESSAGES,
        )
        publish_slots = asyncio.Semaphore(config.startup_concurrency)
        for agent in self._agents.values():
            agent.attach(client, publish_slots)
        filters: list[tuple[str, Handler]] = [
            pair for agent in self._agents.values() for pair in agent.request_filters()
        ]
        async with client:
            self._client = client
            graceful = False
            try:
                for first in range(0, len(filters), config.subscribe_batch):
                    await client.subscribe_many(filters[first : first + config.subscribe_batch])
                async with asyncio.TaskGroup() as tasks:
                    members = [
                        tasks.create_task(agent.run_shared(client), name=f"node-agent:{sat}")
                        for sat, agent in self._agents.items()
                    ]
                    loader = tasks.create_task(self._load_loop(), name=f"shard-load:{self._id}")
                    await self._stop.wait()
                    drained = await self._drain(members)
                    loader.cancel()
                    await client.unsubscribe_many([topic_filter for topic_filter, _ in filters])
                    graceful = await self._publish_status(OFFLINE, drained=drained)
            finally:
                if not graceful:  # cancelled or failed: the members die with the shard
                    self._state = OFFLINE
                    await self._publish_status(OFFLINE)
                self._client = None

    async def _drain(self, members: list[asyncio.Task[None]]) -> bool:
        self._state = DRAINING
        self._log.info("shard_draining", epoch=self._epoch, members=len(self._agents))
        await self._publish_status(DRAINING)
        for agent in self._agents.values():
            agent.stop()
        await asyncio.wait(members)
        drained = all(
            not task.cancelled() and task.exception() is None and agent.drained
            for task, agent in zip(members, self._agents.values(), strict=True)
        )
        self._state = OFFLINE
        self._log.info("shard_offline", epoch=self._epoch, drained=drained)
        return drained

    async def _publish_status(
        self, state: node_pb2.NodeState.ValueType, *, drained: bool = False
    ) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(
                topics.shard_status(self._id),
                self.status_message(state, drained=drained).SerializeToString(),
                retain=True,
                timeout_s=min(self._config.io_timeout_s, 2.0),
            )
        except GroundplaneError as error:
            self._log.warning("shard_status_publish_failed", error=str(error))
            return False
        return True

    # -- liveness --------------------------------------------------------------------------------

    def _next_will(self) -> LastWill:
        """Before every CONNECT: a new shard incarnation, a new one of every member, the Will."""
        self._born.clear()
        self._epoch = self._epochs.next()
        for agent in self._agents.values():
            agent.begin_incarnation(self._id, self._epoch)
        will = self.status_message(OFFLINE, with_members=False)
        return LastWill(topics.shard_status(self._id), will.SerializeToString(), qos=1, retain=True)

    async def _on_connect(self, connection: int) -> None:
        """The shard's birth, then every member's; what failed (a PUBACK timeout on a loaded
        machine) is retried with :attr:`ShardConfig.birth_backoff` while this connection lasts."""
        client = self._client
        shard_born = False
        pending = list(self._agents.values())
        slots = asyncio.Semaphore(self._config.startup_concurrency)
        rng = random.Random()
        attempt = 0
        while client is not None and client.connections == connection and client.connected:
            if not shard_born:
                shard_born = await self._publish_status(self._state)
            if shard_born:
                announced = await _bounded_all([agent.announce for agent in pending], slots)
                self.births_total += sum(announced)
                pending = [
                    agent for agent, born in zip(pending, announced, strict=True) if not born
                ]
            if shard_born and not pending:
                self._born.set()
                self._log.info(
                    "shard_birth",
                    epoch=self._epoch,
                    connection=connection,
                    members=len(self._agents),
                    attempts=attempt + 1,
                )
                return
            delay_s = self._config.birth_backoff.delay_s(attempt, rng)
            self._log.warning(
                "shard_birth_incomplete",
                epoch=self._epoch,
                shard_born=shard_born,
                members_left=len(pending),
                retry_in_s=round(delay_s, 3),
            )
            attempt += 1
            await asyncio.sleep(delay_s)

    async def _load_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._config.load_interval_s)
            if not self._born.is_set():
                continue
            now_s = loop.time()
            if self.power is not None:
                self._step_power()
            for agent in self._agents.values():
                await agent.publish_load_if_due(now_s)

    def _step_power(self) -> None:
        power = self.power
        assert power is not None
        agents = [self._agents[sat] for sat in power.ids]
        loads = [agent.engine.load() for agent in agents]
        at = self._clock.now()
        power.tick(
            at, [load.tokens_total for load in loads], [load.executed_total for load in loads]
        )
        for agent, message in zip(agents, power.telemetry(at), strict=True):
            agent.energy = message
            agent.energy_key = energy_key(message)


async def _bounded_all(
    calls: Sequence[Callable[[], Awaitable[bool]]], slots: asyncio.Semaphore
) -> list[bool]:
    """Run every call, at most ``slots`` at a time; their results in order."""

    async def one(call: Callable[[], Awaitable[bool]]) -> bool:
        async with slots:
            return await call()

    async with asyncio.TaskGroup() as tasks:
        running = [
            tasks.create_task(one(call), name=f"shard-birth#{index}")
            for index, call in enumerate(calls)
        ]
    return [task.result() for task in running]
