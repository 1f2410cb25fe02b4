"""Link-emulator throughput across 1,000 links, against the raw broker measured in the same run.

One private Mosquitto on loopback; every message QoS 1 with a 16-byte payload. The load generator
(this process) runs one publisher client per ground station and one subscriber on
``gp/v1/node/+/rx/#``; it is the same in both paths:

* ``raw``      — the publishers publish straight on ``gp/v1/node/<sat>/rx/gs/<station>/bench``
  (publish → broker → subscriber: the broker's own throughput with these clients);
* ``emulated`` — they publish on ``gp/v1/ground/<station>/tx/<sat>/bench`` and ONE link-emulator
  process (this script with ``--emulator-child``; stations × satellites links all up, ranges
  500–2,000 km, zero processing delay, infinite rate) carries each message to the ``rx`` topic
  after range / c.

Each path is measured twice:

* **throughput**: ``--messages`` messages round-robin over every link, at most ``--window``
  outstanding end-to-end (sent, not yet received), so the broker never has to drop from a full
  queue; msgs/s = messages / (last arrival − first send). Latency at saturation is mostly
  queueing (outstanding / rate) and is shown for completeness;
* **latency**: ``--paced-rate`` msgs/s spread over all links for ``--paced-s`` seconds, well below
  capacity; latency is arrival − send − the link's configured delay (range / c; 0 for raw).

CPU seconds per 1,000 messages of each process (generator, emulator, Mosquitto) come from
``/proc`` and show where the time goes on a shared machine. The load generator is plain paho on
the event loop (no future per message); in Python it costs far more per message than Mosquitto,
so the raw reference is bounded by the generator's core, not by the broker. The raw path runs
first and again last (``raw again``) to show run-to-run noise.

    .venv/bin/python bench/link_emulator.py [--stations 10] [--satellites 100] \
        [--messages 10000] [--window 500] [--paced-rate 1000] [--paced-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog

from groundplane.kernel.clock import SimulatedClock
from groundplane.links.emulator import GroundKey, LinkEmulator
from groundplane.links.model import SPEED_OF_LIGHT_KM_S, LinkConfig, LinkGeometry
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress, PrivateBroker
from groundplane.mqtt.client import MqttClient

PAYLOAD = struct.Struct("<qHHI")  # send time (monotonic ns), station index, satellite index, seq
CHANNEL = "bench"
PHASE_TIMEOUT_S = 120.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def station_id(index: int) -> str:
    return f"bench-gs-{index:02d}"


def satellite_id(index: int) -> str:
    return f"bench-sat-{index:03d}"


def range_km(station: int, satellite: int, satellites: int) -> float:
    """Slant range of link (station, satellite): spread over 500–2,000 km, the same everywhere."""
    return 500.0 + float((station * satellites + satellite) * 37 % 1500)


def delay_ns(station: int, satellite: int, satellites: int) -> int:
    return round(range_km(station, satellite, satellites) / SPEED_OF_LIGHT_KM_S * 1e9)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


# -- the emulator process ------------------------------------------------------------------------


async def emulator_child(stations: int, satellites: int) -> None:
    """Run one link emulator for stations × satellites links, all up; stop at end of stdin."""
    url = (await asyncio.to_thread(sys.stdin.readline)).strip()
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))
    geometry: Mapping[GroundKey, LinkGeometry] = {
        (station_id(st), satellite_id(sat)): LinkGeometry(True, range_km(st, sat, satellites), 45.0)
        for st in range(stations)
        for sat in range(satellites)
    }
    async with (
        MqttClient(BrokerAddress.from_url(url), client_id="bench-links", clock=clock) as client,
        asyncio.TaskGroup() as tasks,
    ):
        emulator = LinkEmulator(
            client,
            clock,
            lambda _at: geometry,
            config=LinkConfig(),
            state_interval_s=3600.0,  # no periodic state bursts during the measurement
        )
        service = tasks.create_task(emulator.run(), name="bench-emulator")
        await emulator.wait_ready(timeout_s=30.0)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # returns at EOF: the parent is done
        service.cancel()


@dataclass
class EmulatorProcess:
    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, broker: PrivateBroker, stations: int, satellites: int) -> EmulatorProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--emulator-child",
            "--stations",
            str(stations),
            "--satellites",
            str(satellites),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(broker.url.encode() + b"\n")  # credentials stay off the command line
        await process.stdin.drain()
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"emulator process did not start: {line!r}")
        return cls(process)

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# -- the load generator --------------------------------------------------------------------------


@dataclass
class PhaseResult:
    messages: int
    elapsed_s: float
    excess_ns: list[int]
    cpu_per_1k_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.excess_ns)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def connect(address: BrokerAddress, identifier: str) -> aiomqtt.Client:
    """An aiomqtt v5 client (TCP_NODELAY) used only for its socket integration with asyncio."""
    return aiomqtt.Client(
        address.host,
        address.port,
        identifier=identifier,
        username=address.username,
        password=address.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=100,
    )


class Generator:
    """Publishers (one client per station) and one subscriber, reused by every phase.

    Everything runs on the event loop: messages are handed to paho without waiting for each
    PUBACK (paho keeps up to 100 in flight per client), and the subscriber's paho callback
    checks and times every delivery.
    """

    def __init__(
        self, publishers: list[aiomqtt.Client], subscriber: aiomqtt.Client, satellites: int
    ) -> None:
        self.satellites = satellites
        self.publishers = [client._client for client in publishers]
        self.links = [(st, sat) for sat in range(satellites) for st in range(len(publishers))]
        self._expected: dict[int, tuple[str, int]] = {}  # seq -> (rx topic, delay ns)
        self._excess_ns: list[int] = []
        self._remaining = 0
        self._outstanding = 0
        self._room = asyncio.Event()
        self._done = asyncio.Event()
        self._last_arrival_ns = 0
        self._seq = 0
        self.errors: list[str] = []
        subscriber._client.on_message = self._on_message

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        arrived_ns = time.monotonic_ns()
        sent_ns, _station, _satellite, seq = PAYLOAD.unpack(message.payload)
        expected = self._expected.pop(seq, None)
        if expected is None:
            self.errors.append(f"unexpected or duplicate message {seq} on {message.topic}")
            return
        topic, configured_ns = expected
        if message.topic != topic:
            self.errors.append(f"message {seq} arrived on {message.topic}, not {topic}")
        self._excess_ns.append(arrived_ns - sent_ns - configured_ns)
        self._last_arrival_ns = arrived_ns
        self._outstanding -= 1
        self._room.set()
        self._remaining -= 1
        if self._remaining == 0:
            self._done.set()

    def _prepare(self, count: int) -> None:
        self._excess_ns = []
        self._remaining = count
        self._done = asyncio.Event()

    def _send(self, station: int, satellite: int, *, emulated: bool) -> None:
        self._seq += 1
        seq = self._seq
        st, sat = station_id(station), satellite_id(satellite)
        rx_topic = topics.node_rx_ground(sat, st, CHANNEL)
        configured_ns = delay_ns(station, satellite, self.satellites) if emulated else 0
        self._expected[seq] = (rx_topic, configured_ns)
        topic = topics.ground_tx(st, sat, CHANNEL) if emulated else rx_topic
        payload = PAYLOAD.pack(time.monotonic_ns(), station, satellite, seq)
        self._outstanding += 1
        info = self.publishers[station].publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")

    async def _finish(self, count: int, started_ns: int) -> PhaseResult:
        try:
            async with asyncio.timeout(PHASE_TIMEOUT_S):
                await self._done.wait()
        except TimeoutError:
            raise RuntimeError(f"{self._remaining} of {count} messages never arrived") from None
        return PhaseResult(count, (self._last_arrival_ns - started_ns) / 1e9, self._excess_ns)

    async def throughput(self, count: int, window: int, *, emulated: bool) -> PhaseResult:
        """``count`` messages round-robin over every link, at most ``window`` outstanding."""
        self._prepare(count)
        started_ns = time.monotonic_ns()
        for n in range(count):
            while self._outstanding >= window:
                self._room.clear()
                await self._room.wait()
            station, satellite = self.links[n % len(self.links)]
            self._send(station, satellite, emulated=emulated)
        return await self._finish(count, started_ns)

    async def paced(self, rate: float, duration_s: float, *, emulated: bool) -> PhaseResult:
        """``rate`` msgs/s in 10 ms batches, cycling over every link."""
        batch_s = 0.010
        batches = round(duration_s / batch_s)
        per_batch = max(1, round(rate * batch_s))
        count = batches * per_batch
        self._prepare(count)
        loop = asyncio.get_running_loop()
        started = loop.time()
        started_ns = time.monotonic_ns()
        for batch in range(batches):
            await asyncio.sleep(max(0.0, started + batch * batch_s - loop.time()))
            for n in range(batch * per_batch, (batch + 1) * per_batch):
                station, satellite = self.links[n % len(self.links)]
                self._send(station, satellite, emulated=emulated)
        return await self._finish(count, started_ns)


async def measured(
    generator: Generator,
    pids: dict[str, int],
    phase: str,
    args: argparse.Namespace,
    *,
    emulated: bool,
) -> PhaseResult:
    """Run one phase and attach the CPU seconds per 1,000 messages of each process."""
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    if phase == "throughput":
        result = await generator.throughput(args.messages, args.window, emulated=emulated)
    else:
        result = await generator.paced(args.paced_rate, args.paced_s, emulated=emulated)
    for name, pid in pids.items():
        result.cpu_per_1k_s[name] = (cpu_s(pid) - before[name]) / result.messages * 1_000
    if generator.errors:
        raise RuntimeError(f"{len(generator.errors)} wrong deliveries: {generator.errors[:5]}")
    return result


async def run_path(
    generator: Generator, pids: dict[str, int], args: argparse.Namespace, *, emulated: bool
) -> dict[str, PhaseResult]:
    """Warm up (one message on every link), then measure throughput and paced latency."""
    await generator.throughput(len(generator.links), args.window, emulated=emulated)
    return {
        phase: await measured(generator, pids, phase, args, emulated=emulated)
        for phase in ("throughput", "latency")
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stations", type=int, default=10)
    parser.add_argument("--satellites", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=500, help="messages outstanding")
    parser.add_argument("--paced-rate", type=float, default=1_000.0, help="msgs/s")
    parser.add_argument("--paced-s", type=float, default=2.0)
    parser.add_argument("--emulator-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout carries 'ready'
    )
    if args.emulator_child:
        await emulator_child(args.stations, args.satellites)
        return

    results: dict[str, dict[str, PhaseResult]] = {}
    async with PrivateBroker() as broker, contextlib.AsyncExitStack() as stack:
        assert broker.pid is not None
        pids = {"generator": os.getpid(), "mosquitto": broker.pid}
        publishers = [connect(broker.address, f"bench-pub-{n}") for n in range(args.stations)]
        subscriber = connect(broker.address, "bench-sub")
        for client in [*publishers, subscriber]:
            await stack.enter_async_context(client)
        await subscriber.subscribe("gp/v1/node/+/rx/#", qos=1)
        generator = Generator(publishers, subscriber, args.satellites)
        results["raw"] = await run_path(generator, pids, args, emulated=False)
        emulator = await EmulatorProcess.start(broker, args.stations, args.satellites)
        pids["emulator"] = emulator.process.pid
        try:
            results["emulated"] = await run_path(generator, pids, args, emulated=True)
        finally:
            await emulator.stop()
            del pids["emulator"]
        results["raw again"] = await run_path(generator, pids, args, emulated=False)

    links = args.stations * args.satellites
    print(
        f"{links} links ({args.stations} stations × {args.satellites} satellites, all up, "
        f"500–2,000 km, processing 0, rate ∞); QoS 1, {PAYLOAD.size}-byte payloads; "
        f"{args.stations} publishers, 1 subscriber; one Mosquitto on loopback; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"throughput: {args.messages} messages, ≤ {args.window} outstanding; "
        f"latency: {args.paced_rate:g} msgs/s for {args.paced_s:g} s"
    )
    reference = results["raw"]["throughput"].rate
    header = (
        f"{'path':<10}{'msgs/s':>9}{'×raw':>7}{'sat p50 ms':>12}{'sat p99 ms':>12}"
        f"{'paced p50 ms':>14}{'paced p99 ms':>14}   CPU ms per 1k msgs (throughput)"
    )
    print(header)
    for name, phases in results.items():
        busy, paced = phases["throughput"], phases["latency"]
        cpu = ", ".join(
            f"{proc} {seconds * 1e3:.0f}" for proc, seconds in busy.cpu_per_1k_s.items()
        )
        print(
            f"{name:<10}{busy.rate:>9.0f}{busy.rate / reference:>7.2f}"
            f"{busy.percentile_ms(0.5):>12.2f}{busy.percentile_ms(0.99):>12.2f}"
            f"{paced.percentile_ms(0.5):>14.2f}{paced.percentile_ms(0.99):>14.2f}   {cpu}"
        )
    print("latency columns are in excess of the configured link delay (range / c; 0 for raw)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
