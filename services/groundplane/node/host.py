"""Run node agents: many in one process for emulation, or one alone on real hardware.

::

    python -m groundplane.node.host \\
        --node 25544=mqtt://25544:<password>@127.0.0.1:1883 \\
        --model synth-7b:0.001:0.02 --keepalive-s 2 --epoch-dir /var/lib/groundplane/epochs

Each ``--node SAT=URL`` is one agent with its own broker account (username = satellite id) and
its own :class:`Engine`; ``--model NAME[:PREFILL_S_PER_TOKEN[:DECODE_S_PER_TOKEN]]`` adds a
synthetic model to every node, ``--openai-url URL`` serves the named models from an
OpenAI-compatible server instead. SIGTERM or SIGINT drains every agent (DRAINING, finish admitted
work, OFFLINE) and exits 0.

Epochs: with ``--epoch-dir`` each satellite's incarnation counter lives in ``<dir>/<sat>.epoch``;
without it epochs come from the wall clock in nanoseconds (this process entry point is the one
place that reads it), which is increasing across restarts unless the clock steps back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from groundplane.kernel.clock import Clock, RealClock, SimulatedClock, parse_utc
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.kernel.logs import configure_logging
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import (
    InferenceBackend,
    OpenAIBackend,
    SyntheticBackend,
    SyntheticModelSpec,
)
from groundplane.node.engine import Engine, EngineConfig

log = structlog.get_logger("groundplane.node.host")


@dataclass(frozen=True)
class HostedNode:
    """One satellite to host: its broker account, its backend and its engine's capacity."""

    satellite_id: str
    address: BrokerAddress
    backend: InferenceBackend
    engine_config: EngineConfig = field(default_factory=EngineConfig)


class NodeHost:
    """Runs one agent (and engine) per :class:`HostedNode` until :meth:`stop` or cancellation."""

    def __init__(
        self,
        nodes: Sequence[HostedNode],
        clock: Clock,
        *,
        agent_config: AgentConfig | None = None,
        epoch_dir: Path | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not nodes:
            raise InvalidArgument("expected at least one node to host, got none")
        ids = [topics.check_node_id(node.satellite_id) for node in nodes]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"expected distinct satellite ids, got {ids}")
        self._nodes = list(nodes)
        self._clock = clock
        self._agent_config = agent_config or AgentConfig()
        self._epoch_dir = epoch_dir
        self._now_ns = now_ns
        self._agents: dict[str, NodeAgent] = {}
        self._stop = asyncio.Event()
        self._started = asyncio.Event()

    @property
    def agents(self) -> dict[str, NodeAgent]:
        """The running agents by satellite id (empty before :meth:`run` started them)."""
        return dict(self._agents)

    def stop(self) -> None:
        """Drain every agent and make :meth:`run` return."""
        self._stop.set()

    async def wait_ready(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Epoch of every agent once all published their birth."""
        async with asyncio.timeout(timeout_s):
            await self._started.wait()
        return {
            sat: await agent.wait_ready(timeout_s) for sat, agent in sorted(self._agents.items())
        }

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self._epoch_dir is not None:
                self._epoch_dir.mkdir(parents=True, exist_ok=True)
            for node in self._nodes:
                engine = await stack.enter_async_context(
                    Engine(node.backend, self._clock, node.engine_config)
                )
                path = (
                    self._epoch_dir / f"{node.satellite_id}.epoch"
                    if self._epoch_dir is not None
                    else None
                )
                self._agents[node.satellite_id] = NodeAgent(
                    node.satellite_id,
                    node.address,
                    engine,
                    self._clock,
                    epochs=EpochSource(self._now_ns, path),
                    config=self._agent_config,
                )
            async with asyncio.TaskGroup() as tasks:
                for sat, agent in self._agents.items():
                    tasks.create_task(agent.run(), name=f"node-agent:{sat}")
                self._started.set()
                await self._stop.wait()
                for agent in self._agents.values():
                    agent.stop()


# -- command line ------------------------------------------------------------------------------


def parse_node(text: str) -> tuple[str, BrokerAddress]:
    """``SAT=mqtt://SAT:password@host:port``; the username must be the satellite id."""
    sat, separator, url = text.partition("=")
    if not separator:
        raise InvalidArgument(
            "expected --node SAT=mqtt://SAT:password@host:port, got "
            f"{text.split(':', maxsplit=1)[0]!r}…"
        )
    address = BrokerAddress.from_url(url)
    if address.username != topics.check_node_id(sat):
        raise InvalidArgument(
            f"node {sat!r} must connect with its own account (username {sat!r}), got username "
            f"{address.username!r}"
        )
    return sat, address


def parse_model(text: str) -> SyntheticModelSpec:
    """``NAME[:PREFILL_S_PER_TOKEN[:DECODE_S_PER_TOKEN]]``."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise InvalidArgument(
            f"expected --model NAME[:PREFILL_S_PER_TOKEN[:DECODE_S_PER_TOKEN]], got {text!r}"
        )
    try:
        costs = [float(part) for part in parts[1:]]
    except ValueError:
        raise InvalidArgument(f"model costs must be seconds per token, got {text!r}") from None
    prefill_s, decode_s = (*costs, 0.0, 0.0)[:2]
    return SyntheticModelSpec(parts[0], prefill_s_per_token=prefill_s, decode_s_per_token=decode_s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m groundplane.node.host", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--node", action="append", required=True, metavar="SAT=URL")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[:PRE[:DEC]]")
    parser.add_argument("--openai-url", help="serve --model names from this server instead")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--queue-limit", type=int, default=16)
    parser.add_argument("--keepalive-s", type=int, default=30)
    parser.add_argument("--load-interval-s", type=float, default=1.0)
    parser.add_argument("--epoch-dir", type=Path)
    parser.add_argument("--start", help="simulated clock start (ISO 8601); default: real time")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--log-level", default="INFO")
    return parser


async def serve(args: argparse.Namespace) -> None:
    clock: Clock = (
        SimulatedClock(parse_utc(args.start), speed=args.speed) if args.start else RealClock()
    )
    if not args.model:
        raise InvalidArgument("expected at least one --model")
    nodes: list[HostedNode] = []
    config = EngineConfig(slots=args.slots, queue_limit=args.queue_limit)
    for text in args.node:
        sat, address = parse_node(text)
        backend: InferenceBackend
        if args.openai_url:
            backend = OpenAIBackend(args.openai_url, [m.split(":")[0] for m in args.model])
        else:
            backend = SyntheticBackend([parse_model(m) for m in args.model], clock)
        nodes.append(HostedNode(sat, address, backend, config))
    host = NodeHost(
        nodes,
        clock,
        agent_config=AgentConfig(
            keepalive_s=args.keepalive_s, load_interval_s=args.load_interval_s
        ),
        epoch_dir=args.epoch_dir,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, host.stop)
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(host.run(), name="node-host")
        epochs = await host.wait_ready(timeout_s=30.0)
        log.info(
            "node_host_ready",
            epochs=epochs,
        )
        await runner


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("json", args.log_level)
    try:
        asyncio.run(serve(args))
    except GroundplaneError as error:
        print(f"node host: {error.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
