"""The private broker's optional read-only account (``groundplane up --broker-dev-credentials``)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import NOT_AUTHORIZED, BrokerRefusedError, MqttClient, ReceivedMessage

from .conftest import NODES

READER = "gp-watch"


async def test_reader_sees_every_topic_and_may_publish_nowhere(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """A reader account subscribed to gp/v1/# receives what the service and a node publish; its
    own publishes are refused with 0x87 — on a service topic, on a node's topic and on the node
    subtree the node pattern ACL would give an account of its name — and reach nobody."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(nodes=NODES, readers=[READER], workdir=tmp_path / "broker") as private:
        seen: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

        async def record(message: ReceivedMessage) -> None:
            await seen.put(message)

        async with (
            MqttClient(private.address, client_id="svc", clock=clock) as service,
            MqttClient(private.node_address(NODES[0]), client_id="node", clock=clock) as node,
            MqttClient(private.reader_address(READER), client_id="watch", clock=clock) as reader,
        ):
            await reader.wait_connected()
            await reader.subscribe(f"{topics.PREFIX}/#", record)
            await service.wait_connected()
            await node.wait_connected()
            link = topics.link_state("svalbard", NODES[0])
            own = topics.node_tx_ground(NODES[0], "svalbard", "telemetry")
            await service.publish(link, b"state")
            await node.publish(own, b"mine")
            got = [await asyncio.wait_for(seen.get(), 5) for _ in range(2)]
            assert {(m.topic, m.payload) for m in got} == {(link, b"state"), (own, b"mine")}

            for topic in (link, topics.node_status(NODES[0]), f"{topics.PREFIX}/node/{READER}/x"):
                with pytest.raises(BrokerRefusedError) as refusal:
                    await reader.publish(topic, b"forged")
                assert refusal.value.reason_code == NOT_AUTHORIZED
            await service.publish(link, b"marker")
            # Ordered delivery: the marker arrives next, so the refused messages went nowhere.
            assert (await asyncio.wait_for(seen.get(), 5)).payload == b"marker"
            with pytest.raises(InvalidArgument, match="no broker account for node"):
                private.node_address(READER)


def test_reader_names_must_be_service_names(tmp_path: Path) -> None:
    """A reader named like a satellite (or like the service account) is refused, teaching the
    ``gp-`` prefix; an unknown reader has no address."""
    with pytest.raises(InvalidArgument, match="must start with 'gp-'"):
        PrivateBroker(readers=["25544"])
    with pytest.raises(InvalidArgument, match="must start with 'gp-'"):
        PrivateBroker(readers=["gp-service"])
    with pytest.raises(InvalidArgument, match="no read-only broker account"):
        PrivateBroker(workdir=tmp_path).reader_address(READER)
