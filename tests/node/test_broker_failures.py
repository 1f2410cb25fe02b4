"""The broker dies by SIGKILL under load and comes back: every client reconnects within the
backoff bound, every request gets exactly one outcome, and nothing runs twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from groundplane.kernel.errors import GroundplaneError
from groundplane.mqtt.client import MqttClient
from groundplane.node.backends import SyntheticModelSpec, predict_answer
from groundplane.node.directory import ONLINE, NodeView
from groundplane.node.v1 import node_pb2

from .conftest import FAST_BACKOFF, SATELLITES, STATION, System, SystemFactory

MODEL = SyntheticModelSpec(
    "synth-steady", decode_s_per_token=0.05, min_answer_tokens=6, max_answer_tokens=6
)
"""0.3 s per answer, so requests are in every phase (uplink, queued, decoding, downlink) when
the broker dies."""
REQUESTS = 16
SPACING_S = 0.04
BROKER_DOWN_S = 0.5
CONNECT_SLACK_S = 0.5
"""Connecting (TCP + CONNECT/CONNACK + resubscribe) on a loaded 2-core machine, on top of the
longest backoff wait."""
RECONNECT_BOUND_S = FAST_BACKOFF.bound_s(100) + CONNECT_SLACK_S
"""After the broker is back, a client waits at most one capped, jittered backoff delay before
its next attempt succeeds."""
DEADLINE_S = 4.0


@dataclass
class Outcome:
    request_id: str
    satellite_id: str
    text: str | None = None
    error: GroundplaneError | None = None


async def call(system: System, index: int) -> Outcome:
    sat = SATELLITES[index % len(SATELLITES)]
    request_id = f"storm-{index}"
    outcome = Outcome(request_id, sat)
    try:
        answer = await system.requester.infer(
            sat,
            STATION,
            node_pb2.InferRequest(model=MODEL.name, prompt=f"prompt {index}", max_tokens=16),
            request_id=request_id,
            deadline=system.deadline(DEADLINE_S),
        )
    except GroundplaneError as error:
        outcome.error = error
    else:
        outcome.text = answer.text
    return outcome


def reborn_after(epoch: int) -> Callable[[NodeView], bool]:
    return lambda view: view.epoch > epoch and view.state == ONLINE


@pytest.mark.slow
async def test_broker_sigkill_and_restart_loses_no_answer_and_runs_nothing_twice(
    make_system: SystemFactory,
) -> None:
    """Requests stream to two nodes while the broker is SIGKILLed and restarted. Every client
    (link emulator, ground, both nodes) reconnects within the backoff bound after the restart;
    the nodes come back as new incarnations. Each request gets exactly one outcome: the correct
    answer or an error reported to its sender. Retrying the failed ones with the same request ids
    answers all of them, and the engines executed each request id exactly once (work that had
    run before the failure is replayed from the stored result)."""
    loop = asyncio.get_running_loop()
    async with make_system(models=(MODEL,)) as system:
        assert system.host is not None
        agents = system.host.agents
        first_epochs = dict(system.epochs)
        calls: list[asyncio.Task[Outcome]] = []
        async with asyncio.TaskGroup() as tasks:
            for index in range(REQUESTS):
                calls.append(tasks.create_task(call(system, index), name=f"storm-call:{index}"))
                await asyncio.sleep(SPACING_S)
                if index == REQUESTS // 2:
                    await system.broker.kill()
                    await asyncio.sleep(BROKER_DOWN_S)
                    await system.broker.start()
                    restarted_at = loop.time()
                    clients: list[MqttClient] = [system.links, system.ground]
                    clients += [a.client for a in agents.values() if a.client is not None]
                    async with asyncio.timeout(RECONNECT_BOUND_S):
                        for client in clients:
                            await client.wait_connected(RECONNECT_BOUND_S)
                    reconnected_s = loop.time() - restarted_at
        outcomes = [task.result() for task in calls]
        for sat in SATELLITES:
            await system.directory.wait_for(sat, reborn_after(first_epochs[sat]), 5.0)
        retried = [await call(system, int(o.request_id.split("-")[1])) for o in outcomes if o.error]
        loads = [agent.engine.load() for agent in agents.values()]
    failed = [o for o in outcomes if o.error is not None]
    print(
        f"reconnected {reconnected_s:.3f} s after restart (bound {RECONNECT_BOUND_S:.2f} s); "
        f"{len(failed)}/{REQUESTS} failed and were retried: "
        f"{sorted({type(o.error).__name__ for o in failed})}"
    )
    assert reconnected_s <= RECONNECT_BOUND_S
    assert len(clients) == 4
    assert all(client.connections == 2 for client in clients)
    for outcome in [*outcomes, *retried]:
        if outcome.error is None:
            assert (
                outcome.text
                == predict_answer(MODEL, (), f"prompt {outcome.request_id.split('-')[1]}", 16).text
            )
    assert all(o.error is None for o in retried)
    assert sum(load.executed_total for load in loads) == REQUESTS
    deduplicated = sum(load.deduplicated_total for load in loads)
    assert deduplicated <= len(failed)
