"""Handoff benchmark: interruption per handoff against state size, and sessions per manager.

    .venv/bin/python bench/handoff.py [--speed 20] [--sessions 25,100,200]

A private Mosquitto, the link emulator driven by a synthetic pass schedule (three satellites,
each in view 80 s of every 180 s, the next rising 60 s later, so every session is handed off
once per simulated minute), three node agents and one handoff manager, on a simulated clock.

1. One session per state size talks continuously; each handoff's interruption (time its turns
   were held) is reported as p50/p99 against the transfer time the link rate implies
   (2 × bytes × 8 / ground rate, store-and-forward through the ground).
2. N sessions with a short context each, one handoff per session per simulated minute: the
   share of handoffs completed before LOS, interruption p50/p99, and the manager's CPU time per
   handoff (process time over handoffs; the nodes and emulator share the process, so it is an
   upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.node_adapter import RequesterNodes
from groundplane.handoff.planner import HandoffSettings, PassSchedule
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import Unavailable
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.agent import AgentConfig
from groundplane.node.backends import SyntheticBackend, SyntheticModelSpec
from groundplane.node.directory import ONLINE, NodeDirectory
from groundplane.node.engine import EngineConfig
from groundplane.node.host import HostedNode, NodeHost
from groundplane.node.requester import Requester

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
SATS = ("sat-a", "sat-b", "sat-c")
RATE_BPS = 1e9
SIZES_BYTES_PER_TOKEN = (1_024, 65_536, 262_144, 1_048_576)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(speed: float, session_counts: list[int], duration_s: float) -> None:  # noqa: PLR0915 - one benchmark run read top to bottom: build the system, drive it, print
    models = [SyntheticModelSpec(f"m{b}", decode_s_per_token=0.01) for b in SIZES_BYTES_PER_TOKEN]
    bpt = {m.name: b for m, b in zip(models, SIZES_BYTES_PER_TOKEN, strict=True)}
    clock = SimulatedClock(EPOCH, speed=speed)
    schedule = PassSchedule.periodic(
        "gs",
        SATS,
        EPOCH - timedelta(seconds=1),
        visible_s=80.0,
        period_s=180.0,
        stagger_s=60.0,
        count=40,
    )
    settings = HandoffSettings(ground_rate_bps=RATE_BPS, bytes_per_token=bpt, min_dwell_s=5.0)
    with tempfile.TemporaryDirectory() as workdir:
        async with PrivateBroker(nodes=SATS, workdir=Path(workdir) / "broker") as broker:  # noqa: SIM117
            async with (
                MqttClient(broker.address, client_id="links", clock=clock) as links,
                MqttClient(broker.address, client_id="handoff", clock=clock) as ground,
                asyncio.TaskGroup() as tasks,
            ):
                emulator = LinkEmulator(
                    links,
                    clock,
                    schedule.ground_geometry(),
                    config=LinkConfig(rate_bps=RATE_BPS),
                    tick_s=0.25,
                )
                emulator_task = tasks.create_task(emulator.run(), name="bench-emulator")
                host = NodeHost(
                    [
                        HostedNode(
                            sat,
                            broker.node_address(sat),
                            SyntheticBackend(models, clock),
                            EngineConfig(bytes_per_token=bpt, slots=8, queue_limit=512),
                        )
                        for sat in SATS
                    ],
                    clock,
                    agent_config=AgentConfig(load_interval_s=1.0),
                )
                host_task = tasks.create_task(host.run(), name="bench-nodes")
                await host.wait_ready()
                directory = NodeDirectory()
                await directory.attach(ground)
                for sat in SATS:
                    await directory.wait_for(sat, lambda v: v.state == ONLINE, 10.0)
                requester = Requester(ground, clock, instance_id="handoff", directory=directory)
                await requester.start()
                nodes = RequesterNodes(requester)
                await emulator.wait_ready()

                # ---- 1. interruption against state size ----------------------------------------
                store = HandoffStore(Path(workdir) / "h1.sqlite")
                manager = HandoffManager(
                    nodes,
                    directory,
                    clock,
                    store,
                    schedule,
                    config=ManagerConfig(settings=settings, replan_interval_s=3.0),
                )
                manager_task = tasks.create_task(manager.run(), name="bench-manager-1")
                await manager.wait_ready()
                stop = clock.now() + timedelta(seconds=duration_s)

                async def talk(session_id: str) -> None:
                    index = 0
                    while clock.now() < stop:
                        try:
                            await manager.send_turn(
                                session_id,
                                f"q{index} " * 5,
                                deadline=clock.now() + timedelta(seconds=60),
                                max_tokens=16,
                            )
                        except Unavailable:
                            failed[session_id] = failed.get(session_id, 0) + 1
                        index += 1
                        await clock.sleep(1.0)

                sessions = {}
                failed: dict[str, int] = {}
                async with asyncio.TaskGroup() as talkers:
                    for model in models:
                        info = await manager.create_session(model.name)
                        sessions[info.session_id] = model.name
                        talkers.create_task(talk(info.session_id), name=f"bench-talk:{model.name}")
                print(
                    f"speed {speed:g}x, ground rate {RATE_BPS / 1e6:g} Mbit/s, "
                    f"{duration_s:g} simulated s per run"
                )
                print(
                    "bytes/token  handoffs  state MB (mean)  implied transfer s  "
                    "interruption p50 s  p99 s  overhead p50 s  before LOS"
                )
                for session_id, model_name in sessions.items():
                    done = [
                        e
                        for e in manager.list_handoffs(subject_id=session_id)
                        if e.state == "completed"
                    ]
                    implied = [2 * e.bytes_moved * 8 / RATE_BPS for e in done]
                    inter = [e.interruption_s for e in done]
                    over = [i - t for i, t in zip(inter, implied, strict=True)]
                    before = sum(e.at < e.los for e in done)
                    mb = statistics.mean(e.bytes_moved for e in done) / 1e6 if done else 0.0
                    print(
                        f"{bpt[model_name]:>11}  {len(done):>8}  {mb:>15.1f}  "
                        f"{statistics.mean(implied) if implied else 0:>18.3f}  "
                        f"{pct(inter, 0.5):>18.3f}  {pct(inter, 0.99):>5.3f}  "
                        f"{pct(over, 0.5):>14.3f}  {before}/{len(done)}"
                    )
                manager_task.cancel()

                # ---- 2. sessions per manager ----------------------------------------------------
                print(
                    "\nsessions  handoffs  before LOS  interruption p50 s  p99 s  "
                    "CPU ms/handoff  ratio to 1st row"
                )
                reference = None
                for n in session_counts:
                    store = HandoffStore(Path(workdir) / f"h-{n}.sqlite")
                    manager = HandoffManager(
                        nodes,
                        directory,
                        clock,
                        store,
                        schedule,
                        config=ManagerConfig(settings=settings, replan_interval_s=5.0),
                    )
                    manager_task = tasks.create_task(manager.run(), name=f"bench-manager-{n}")
                    await manager.wait_ready()
                    ids = []
                    for i in range(n):
                        info = await manager.create_session(models[1].name)
                        await manager.send_turn(
                            info.session_id,
                            f"hello {i} " * 10,
                            deadline=clock.now() + timedelta(seconds=60),
                            max_tokens=16,
                        )
                        ids.append(info.session_id)
                    cpu0, start = time.process_time(), clock.now()
                    await clock.sleep(duration_s)
                    cpu = time.process_time() - cpu0
                    events = [
                        e
                        for e in manager.list_handoffs(limit=1_000_000)
                        if e.state == "completed" and e.at >= start
                    ]
                    inter = [e.interruption_s for e in events]
                    before = sum(e.at < e.los for e in events)
                    per = cpu * 1e3 / max(1, len(events))
                    reference = reference or per
                    print(
                        f"{n:>8}  {len(events):>8}  {before:>5}/{len(events):<5}  "
                        f"{pct(inter, 0.5):>18.3f}  {pct(inter, 0.99):>5.3f}  {per:>14.2f}  "
                        f"{per / reference:>6.2f}"
                    )
                    manager_task.cancel()
                host.stop()
                await asyncio.wait_for(host_task, 30)
                emulator_task.cancel()
                await requester.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--sessions", default="25,100,200")
    parser.add_argument("--duration", type=float, default=240.0, help="simulated s per run")
    args = parser.parse_args()
    asyncio.run(run(args.speed, [int(n) for n in args.sessions.split(",")], args.duration))


if __name__ == "__main__":
    main()
