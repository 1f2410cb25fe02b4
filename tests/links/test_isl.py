"""Inter-satellite links over a real Mosquitto, with geometry from a propagated Walker shell.

The emulator is given an ISL geometry provider that propagates a few satellites of
``walker:66/6/1@550km:53`` with SGP4 at the instant asked and turns each pair into a
:class:`LinkGeometry` through the model. The test checks the emulator against range and line of
sight it computes itself from the same propagated positions, with a different formula (distance
of the chord from the Earth's centre by a cross product), and listens as the satellites: each
node account may only read ``gp/v1/node/<its id>/#``.

Pairs used (at the epoch below, checked by the test rather than assumed):

* ``walker-0001``/``walker-0002``: neighbours in one plane, ~3,900 km apart, in sight;
* ``walker-0001``/``walker-0038``: in sight across planes;
* ``walker-0001``/``walker-0007``: nearly opposite in one plane, the chord passes through the Earth.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.timestamps import from_timestamp
from groundplane.link.v1 import link_pb2
from groundplane.links.emulator import LinkEmulator, isl_link_id
from groundplane.links.model import (
    EARTH_RADIUS_KM,
    SPEED_OF_LIGHT_KM_S,
    LinkConfig,
    LinkGeometry,
    isl_geometry,
)
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.orbit.constellations import generate
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
SHELL = "walker:66/6/1@550km:53"
SAT_A = "walker-0001"
IN_PLANE_NEIGHBOUR = "walker-0002"
CROSS_PLANE_PEER = "walker-0038"
BEHIND_THE_EARTH = "walker-0007"
SATELLITES = (SAT_A, IN_PLANE_NEIGHBOUR, CROSS_PLANE_PEER, BEHIND_THE_EARTH)
PAIRS = ((SAT_A, IN_PLANE_NEIGHBOUR), (SAT_A, CROSS_PLANE_PEER), (SAT_A, BEHIND_THE_EARTH))

CLEARANCE_KM = EARTH_RADIUS_KM + 80.0
"""A chord must clear the Earth's radius plus 80 km of atmosphere (stated here, not imported)."""
SPEED = 0.25
"""Simulated seconds per wall second, as in the ground-link delay test."""
DELAY_TOLERANCE_S = 0.004
"""The ground-link tests' tolerance: simulated seconds a delivery may lag the model at speed
0.25 (two broker hops and asyncio scheduling take up to ~16 ms of wall time on a loaded 2-core
machine)."""
EARLY_TOLERANCE_S = 1e-4
"""A delivery may never come earlier than the model says (only timestamp rounding)."""
TEN_METRES_KM = 0.010
"""Range agreement between the published state and the test's own propagation at the same
instant (both propagate the same elements; only microsecond timestamp rounding differs)."""
QUIET_WALL_S = 0.4
"""Wall seconds to wait for a message that must not come (≫ every delay in play)."""


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A private broker with one account per satellite of the test."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(nodes=SATELLITES, workdir=tmp_path / "broker") as running:
        yield running


class Shell:
    """The chosen satellites of the Walker shell, propagated with SGP4 on demand."""

    def __init__(self, sat_ids: Sequence[str]) -> None:
        by_id = {elements.catalog_id: elements for elements in generate(SHELL, EPOCH)}
        self.batch = SatelliteBatch(list(sat_ids), [by_id[s].to_satrec() for s in sat_ids])

    def positions_km(self, at: datetime) -> dict[str, NDArray[np.float64]]:
        """TEME position of every satellite at ``at`` (Earth-centred, km)."""
        jd, fr = utc_jd_fr([at])
        propagation = propagate(self.batch, jd, fr)
        assert propagation.ok.all(), propagation.error_code
        return {
            s: np.asarray(propagation.r_teme_km[i, 0, :], dtype=np.float64)
            for i, s in enumerate(self.batch.ids)
        }


class WalkerIslProvider:
    """An ISL geometry provider: the pairs, from SGP4 positions, through the link model."""

    def __init__(self, shell: Shell, pairs: Sequence[tuple[str, str]]) -> None:
        self.shell = shell
        self.pairs = [(min(pair), max(pair)) for pair in pairs]

    def __call__(self, at: datetime) -> Mapping[tuple[str, str], LinkGeometry]:
        positions = self.shell.positions_km(at)
        return {
            (a, b): isl_geometry(
                (float(positions[a][0]), float(positions[a][1]), float(positions[a][2])),
                (float(positions[b][0]), float(positions[b][1]), float(positions[b][2])),
            )
            for a, b in self.pairs
        }


def independent_range_and_sight(
    shell: Shell, at: datetime, sat_a: str, sat_b: str
) -> tuple[float, bool]:
    """Range (km) and line of sight of a pair, computed here without the link model.

    The chord's closest point to the Earth's centre is an end point when the centre projects
    outside the chord, else its distance is |a × b| / |b − a|.
    """
    positions = shell.positions_km(at)
    a, b = positions[sat_a], positions[sat_b]
    chord = b - a
    range_km = float(np.linalg.norm(chord))
    if np.dot(-a, chord) <= 0 or np.dot(-b, -chord) <= 0:
        closest_km = float(min(np.linalg.norm(a), np.linalg.norm(b)))
    else:
        closest_km = float(np.linalg.norm(np.cross(a, b)) / range_km)
    return range_km, closest_km > CLEARANCE_KM


@dataclass
class Arrival:
    receiver: str
    topic: str
    payload: bytes
    at: datetime


@dataclass
class Harness:
    clock: SimulatedClock
    shell: Shell
    emulator: LinkEmulator
    nodes: dict[str, MqttClient]
    arrivals: asyncio.Queue[Arrival]

    async def next(self, timeout_s: float = 5.0) -> Arrival:
        return await asyncio.wait_for(self.arrivals.get(), timeout_s)


@asynccontextmanager
async def running(broker: PrivateBroker, config: LinkConfig) -> AsyncIterator[Harness]:
    """An emulator with the Walker ISL provider (no ground link in view) and one client per
    satellite, logged in with its own node account and listening on its ISL ``rx`` topics."""
    clock = SimulatedClock(EPOCH, speed=SPEED)
    shell = Shell(SATELLITES)
    arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    def recorder(sat: str) -> MqttClient:
        return MqttClient(broker.node_address(sat), client_id=f"node-{sat}", clock=clock)

    async with (
        MqttClient(broker.address, client_id="links", clock=clock) as emulator_client,
        recorder(SAT_A) as node_a,
        recorder(IN_PLANE_NEIGHBOUR) as node_b,
        recorder(CROSS_PLANE_PEER) as node_c,
        recorder(BEHIND_THE_EARTH) as node_d,
        asyncio.TaskGroup() as tasks,
    ):
        nodes = {c.client_id.removeprefix("node-"): c for c in (node_a, node_b, node_c, node_d)}
        emulator = LinkEmulator(
            emulator_client,
            clock,
            lambda _at: {},
            config=config,
            isl_geometry=WalkerIslProvider(shell, PAIRS),
            tick_s=0.05,
        )
        service = tasks.create_task(emulator.run(), name="link-emulator")
        for sat, client in nodes.items():

            async def record(message: ReceivedMessage, receiver: str = sat) -> None:
                await arrivals.put(Arrival(receiver, message.topic, message.payload, clock.now()))

            await client.subscribe(f"gp/v1/node/{sat}/rx/isl/#", record)
            await client.wait_connected()
        await emulator.wait_ready()
        try:
            yield Harness(clock, shell, emulator, nodes, arrivals)
        finally:
            service.cancel()


def test_the_chosen_pairs_have_the_geometry_the_tests_rely_on() -> None:
    """At the epoch the in-plane neighbour and the cross-plane peer are in sight of walker-0001
    (at different ranges) and walker-0007's chord to it passes below Earth radius + 80 km; the
    model's line of sight and range agree with the independent computation."""
    shell = Shell(SATELLITES)
    provided = WalkerIslProvider(shell, PAIRS)(EPOCH)
    expected_sight = {IN_PLANE_NEIGHBOUR: True, CROSS_PLANE_PEER: True, BEHIND_THE_EARTH: False}
    ranges_km = {}
    for peer, in_sight in expected_sight.items():
        range_km, sight = independent_range_and_sight(shell, EPOCH, SAT_A, peer)
        geometry = provided[(SAT_A, peer)]
        assert sight is in_sight
        assert geometry.up is in_sight
        assert geometry.range_km == pytest.approx(range_km, abs=1e-6)
        ranges_km[peer] = range_km
    assert 3_000 < ranges_km[IN_PLANE_NEIGHBOUR] < 5_000
    assert ranges_km[BEHIND_THE_EARTH] > 2 * CLEARANCE_KM  # far apart, through the Earth
    assert abs(ranges_km[CROSS_PLANE_PEER] - ranges_km[IN_PLANE_NEIGHBOUR]) > 1.0


@pytest.mark.parametrize(
    ("sender", "receiver"),
    [
        (SAT_A, IN_PLANE_NEIGHBOUR),  # FORWARD (sender sorts first)
        (IN_PLANE_NEIGHBOUR, SAT_A),  # REVERSE
        (CROSS_PLANE_PEER, SAT_A),  # across planes
    ],
)
async def test_isl_delivery_after_range_over_c_plus_processing(
    broker: PrivateBroker, sender: str, receiver: str
) -> None:
    """A message node <a> publishes on gp/v1/node/<a>/tx/isl/<b>/… reaches node <b> on
    gp/v1/node/<b>/rx/isl/<a>/… after the independently computed range / c plus processing
    (simulated time), never earlier and within the ground-link tests' tolerance."""
    processing_s = 0.010
    async with running(broker, LinkConfig(processing_delay_s=processing_s)) as h:
        sent = h.clock.now()
        await h.nodes[sender].publish(topics.node_tx_isl(sender, receiver, "route/hello"), b"hi")
        arrival = await h.next()
        range_km, in_sight = independent_range_and_sight(h.shell, sent, sender, receiver)
        counters = h.emulator.link(isl_link_id(sender, receiver)).counters
    assert in_sight
    assert arrival.receiver == receiver
    assert arrival.topic == f"gp/v1/node/{receiver}/rx/isl/{sender}/route/hello"
    assert arrival.payload == b"hi"
    measured_s = (arrival.at - sent).total_seconds()
    expected_s = range_km / SPEED_OF_LIGHT_KM_S + processing_s
    print(
        f"{sender}→{receiver} {range_km:.1f} km: expected {expected_s * 1e3:.3f} ms, "
        f"measured {measured_s * 1e3:.3f} ms"
    )
    assert expected_s - EARLY_TOLERANCE_S <= measured_s <= expected_s + DELAY_TOLERANCE_S
    assert (counters.sent_messages, counters.delivered_messages, counters.dropped) == (1, 1, 0)


async def test_isl_without_line_of_sight_delivers_nothing_and_counts_a_drop(
    broker: PrivateBroker,
) -> None:
    """A pair whose chord passes below Earth radius + 80 km delivers nothing in either direction
    and counts each message as dropped (link down), while a pair in sight, used at the same
    time, delivers."""
    async with running(broker, LinkConfig()) as h:
        range_km, in_sight = independent_range_and_sight(
            h.shell, h.clock.now(), SAT_A, BEHIND_THE_EARTH
        )
        assert not in_sight
        await h.nodes[SAT_A].publish(topics.node_tx_isl(SAT_A, BEHIND_THE_EARTH, "x"), b"lost-1")
        await h.nodes[BEHIND_THE_EARTH].publish(
            topics.node_tx_isl(BEHIND_THE_EARTH, SAT_A, "x"), b"lost-2"
        )
        await h.nodes[SAT_A].publish(
            topics.node_tx_isl(SAT_A, IN_PLANE_NEIGHBOUR, "x"), b"delivered"
        )
        arrival = await h.next()
        assert (arrival.receiver, arrival.payload) == (IN_PLANE_NEIGHBOUR, b"delivered")
        await asyncio.sleep(QUIET_WALL_S)
        assert h.arrivals.empty()
        blocked = h.emulator.link(isl_link_id(SAT_A, BEHIND_THE_EARTH))
        assert not blocked.is_up(h.emulator.sim_s())
        counters = blocked.counters
    assert range_km / SPEED_OF_LIGHT_KM_S < QUIET_WALL_S * SPEED  # silence is not just "late"
    assert counters.sent_messages == 2
    assert counters.dropped_link_down == 2
    assert counters.delivered_messages == 0


async def test_isl_state_is_published_retained(broker: PrivateBroker) -> None:
    """A client that subscribes after the emulator started receives the retained state of every
    pair on gp/v1/isl/<a>/<b>/state (ids sorted): up for the pairs in sight, down for the pair
    behind the Earth, with the range the test propagates itself for the state's instant and
    delay_s = range / c + processing."""
    processing_s = 0.002
    async with running(broker, LinkConfig(processing_delay_s=processing_s)) as h:
        states: asyncio.Queue[tuple[str, bool, link_pb2.LinkState]] = asyncio.Queue()

        async def record_state(message: ReceivedMessage) -> None:
            state = link_pb2.LinkState()
            state.ParseFromString(message.payload)
            await states.put((message.topic, message.retain, state))

        async with MqttClient(broker.address, client_id="watcher", clock=h.clock) as watcher:
            await watcher.subscribe("gp/v1/isl/+/+/state", record_state)
            received = [await asyncio.wait_for(states.get(), 5) for _ in range(len(PAIRS))]
    expected_up = {IN_PLANE_NEIGHBOUR: True, CROSS_PLANE_PEER: True, BEHIND_THE_EARTH: False}
    by_peer = {}
    for topic, retained, state in received:
        assert retained, f"{topic} was not delivered as a retained message"
        first, second = state.station_id, state.satellite_id
        assert first < second
        assert topic == topics.isl_state(first, second) == f"gp/v1/isl/{first}/{second}/state"
        assert state.link_id == isl_link_id(first, second)
        peer = second if first == SAT_A else first
        by_peer[peer] = state
        at = from_timestamp(state.updated_at)
        range_km, in_sight = independent_range_and_sight(h.shell, at, first, second)
        assert in_sight is expected_up[peer]
        assert state.up is in_sight
        assert state.range_km == pytest.approx(range_km, abs=TEN_METRES_KM)
        assert state.delay_s == pytest.approx(
            state.range_km / SPEED_OF_LIGHT_KM_S + processing_s, rel=1e-12
        )
        assert math.isinf(state.rate_bps)
        assert state.elevation_deg == 0.0
        assert state.carrier == link_pb2.LINK_CARRIER_EMULATED
    assert set(by_peer) == set(expected_up)
