"""MQTT over TLS on the private broker: certificate identities and a least-privilege ACL per role.

A real Mosquitto (``PrivateBroker(tls=...)``) with a throw-away CA minted by ``trustme``: every
client presents a certificate whose common name is its account. Each denial is shown against the
real broker, and each is found in Mosquitto's log and counted (:meth:`PrivateBroker.denied_total`
counts the refused publishes and subscriptions there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from groundplane.kernel.clock import SimulatedClock
from groundplane.mqtt import topics
from groundplane.mqtt.broker import (
    ROLE_GATEWAY,
    ROLE_LINKS,
    ROLE_ROUTING,
    BrokerServerTls,
    BrokerTls,
    PrivateBroker,
    shard_username,
)
from groundplane.mqtt.client import BrokerRefusedError, MqttClient, ReceivedMessage, tls_context
from groundplane.node.v1 import node_pb2

WAIT_S = 5.0
NODE_A, NODE_B = "25544", "48274"
SHARD = "east"


@dataclass
class Pki:
    """A CA, the broker's certificate, and a directory to write client identities into."""

    ca: trustme.CA
    directory: Path

    def client(self, common_name: str, ca: trustme.CA | None = None) -> BrokerTls:
        """Files of a client certificate with ``common_name`` (signed by ``ca``, default ours);
        verifying the broker against our CA."""
        issuer = ca or self.ca
        cert = issuer.issue_cert(
            f"{common_name}.clients.groundplane.invalid", common_name=common_name
        )
        stem = self.directory / f"{common_name}-{id(issuer)}"
        cert.cert_chain_pems[0].write_to_path(str(stem.with_suffix(".crt")))
        cert.private_key_pem.write_to_path(str(stem.with_suffix(".key")))
        return BrokerTls(
            self.directory / "ca.pem", stem.with_suffix(".crt"), stem.with_suffix(".key")
        )


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[PrivateBroker, Pki]]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    ca = trustme.CA()
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    ca.cert_pem.write_to_path(str(pki_dir / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", common_name="groundplane-broker")
    server.cert_chain_pems[0].write_to_path(str(pki_dir / "broker.crt"))
    server.private_key_pem.write_to_path(str(pki_dir / "broker.key"))
    tls = BrokerServerTls(pki_dir / "ca.pem", pki_dir / "broker.crt", pki_dir / "broker.key")
    async with PrivateBroker(
        workdir=tmp_path / "broker", tls=tls, shards={SHARD: [NODE_A]}
    ) as broker:
        yield broker, Pki(ca, pki_dir)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))


async def _refused_handshake(broker: PrivateBroker, context: ssl.SSLContext | None) -> None:
    """Open a connection with ``context`` (None: plain TCP), send an MQTT v5 CONNECT and expect
    the broker to end the connection without a CONNACK (a TLS alert or end of stream)."""
    # CONNECT, 13 bytes: "MQTT", level 5, clean start, keepalive 60 s, no properties, empty id.
    connect = bytes.fromhex("100d00044d5154540502003c000000")
    async with asyncio.timeout(WAIT_S):
        reader, writer = await asyncio.open_connection(
            broker.host,
            broker.port,
            ssl=context,
            server_hostname=None if context is None else "127.0.0.1",
        )
        try:
            writer.write(connect)
            await writer.drain()
            answer = await reader.read(64)
        except (ssl.SSLError, ConnectionResetError):
            answer = b""
        finally:
            writer.close()
    assert answer == b"", f"the broker answered {answer!r}"


async def test_certificates_select_accounts_and_the_acl_denies_each_trespass(
    tls_broker: tuple[PrivateBroker, Pki], clock: SimulatedClock
) -> None:
    """With certificates signed by the broker's CA: node A publishes under its own subtree and
    its message reaches the links emulator; node A publishing as node B and routing publishing a
    request are refused with 0x87 and counted (``refused_publishes_total``); node A and the gateway
    subscribing to node B's deliveries get none of them; the forged message reaches nobody."""
    broker, pki = tls_broker
    heard: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

    async def record(message: ReceivedMessage) -> None:
        await heard.put(message)

    async with (
        MqttClient(
            broker.tls_address(pki.client(ROLE_LINKS)), client_id="links", clock=clock
        ) as links,
        MqttClient(broker.tls_address(pki.client(NODE_A)), client_id="node-a", clock=clock) as node,
        MqttClient(
            broker.tls_address(pki.client(ROLE_ROUTING)), client_id="routing", clock=clock
        ) as routing,
        MqttClient(
            broker.tls_address(pki.client(ROLE_GATEWAY)), client_id="gateway", clock=clock
        ) as gateway,
    ):
        for client in (links, node, routing, gateway):
            await client.wait_connected(WAIT_S)
        await links.subscribe(topics.EMULATOR_NODE_TX_FILTER, record)

        own = topics.node_tx_ground(NODE_A, "svalbard", "resp/gw-1")
        await node.publish(own, b"mine")
        received = await asyncio.wait_for(heard.get(), WAIT_S)
        assert (received.topic, received.payload) == (own, b"mine")

        forged = topics.node_tx_ground(NODE_B, "svalbard", "resp/gw-1")
        with pytest.raises(BrokerRefusedError) as as_other:
            await node.publish(forged, b"forged")
        assert as_other.value.reason_code == 0x87

        request = topics.ground_tx("svalbard", NODE_A, "infer/req")
        with pytest.raises(BrokerRefusedError) as routing_sends:
            await routing.publish(request, b"not routing's to send")
        assert routing_sends.value.reason_code == 0x87

        # Reading: Mosquitto 2.0 grants a SUBSCRIBE and withholds every message the account may
        # not read. Node A and the gateway subscribe to node B's deliveries; the links emulator
        # delivers to B, then to A: A's marker arrives and B's delivery reached neither.
        snooped: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

        async def snoop(message: ReceivedMessage) -> None:
            await snooped.put(message)

        await node.subscribe(f"{topics.PREFIX}/node/{NODE_B}/rx/#", snoop)
        await gateway.subscribe(f"{topics.PREFIX}/node/+/rx/#", snoop)
        await node.subscribe(f"{topics.PREFIX}/node/{NODE_A}/rx/#", snoop)
        for_b = topics.node_rx_ground(NODE_B, "svalbard", "infer/req")
        for_a = topics.node_rx_ground(NODE_A, "svalbard", "infer/req")
        await links.publish(for_b, b"for B only")
        await links.publish(for_a, b"marker")
        first = await asyncio.wait_for(snooped.get(), WAIT_S)
        assert (first.topic, first.payload) == (for_a, b"marker")

        # The gateway's own request is accepted and reaches the links emulator.
        await links.subscribe(topics.EMULATOR_UPLINK_FILTER, record)
        await gateway.publish(request, b"request")
        received = await asyncio.wait_for(heard.get(), WAIT_S)
        assert (received.topic, received.payload) == (request, b"request")
        assert heard.empty(), "the forged message reached a subscriber"
        assert snooped.empty(), "a delivery for node B reached node A or the gateway"

        assert (node.refused_publishes_total, routing.refused_publishes_total) == (1, 1)
        assert (links.refused_publishes_total, gateway.refused_publishes_total) == (0, 0)


async def test_a_shard_speaks_only_for_its_members(
    tls_broker: tuple[PrivateBroker, Pki], clock: SimulatedClock
) -> None:
    """Shard ``east`` (member node A) publishes its own status and node A's, and is refused
    node B's status."""
    broker, pki = tls_broker
    address = broker.tls_address(pki.client(shard_username(SHARD)))
    async with MqttClient(address, client_id="shard-east", clock=clock) as shard:
        await shard.wait_connected(WAIT_S)
        await shard.publish(topics.shard_status(SHARD), b"up")
        await shard.publish(topics.node_status(NODE_A), b"up")
        with pytest.raises(BrokerRefusedError):
            await shard.publish(topics.node_status(NODE_B), b"up")
        assert shard.refused_publishes_total == 1


async def test_clients_without_a_certificate_of_the_ca_are_refused_at_the_handshake(
    tls_broker: tuple[PrivateBroker, Pki],
) -> None:
    """An anonymous client (TLS, no certificate), a client whose certificate another CA signed
    (common name of a real node) and a plaintext client are all refused before MQTT: none gets a
    CONNACK; Mosquitto logs each refusal and :meth:`PrivateBroker.refused_handshakes_total`
    counts them."""
    broker, pki = tls_broker
    assert broker.refused_handshakes_total() == 0
    await _refused_handshake(broker, tls_context(BrokerTls(pki.directory / "ca.pem")))
    await _refused_handshake(broker, tls_context(pki.client(NODE_A, ca=trustme.CA())))
    await _refused_handshake(broker, None)
    # The broker writes its log line before it closes the connection we saw closed.
    log = broker.log_tail(200)
    assert "peer did not return a certificate" in log, log
    assert "certificate verify failed" in log, log
    assert "wrong version number" in log, log
    assert broker.refused_handshakes_total() == 3, log


def test_up_hands_each_child_its_own_broker_certificate_in_its_environment(
    tmp_path: Path,
) -> None:
    """With ``ProcessPlan.broker_tls``, each child that uses the broker gets its own
    certificate files in ``GROUNDPLANE_BROKER_TLS_CA/_CERT/_KEY`` (never on its command line);
    a child without files (tracking) gets none; a plaintext plan adds no such variable."""
    from groundplane.system.processes import (
        CatalogSource,
        ChildPorts,
        ProcessPlan,
        child_specs,
    )

    ca = tmp_path / "ca.pem"
    names = ("links", "nodes-0", "routing", "handoff", "gateway")
    for path in (ca, *(tmp_path / f"{n}.{ext}" for n in names for ext in ("crt", "key"))):
        path.write_text("test")
    files = {n: BrokerTls(ca, tmp_path / f"{n}.crt", tmp_path / f"{n}.key") for n in names}
    plan = ProcessPlan(
        workdir=tmp_path,
        broker_url="mqtts://127.0.0.1:8883",
        catalog=CatalogSource(constellation="walker:24/6/1@550km:53"),
        sites_csv=tmp_path / "sites.csv",
        min_elevation_deg=10.0,
        satellites=24,
        ports=ChildPorts(
            tracking=50051, links=50054, nodes=(50100,), routing=50052, handoff=50053, gateway=50056
        ),
        clock_spec=None,
        handoff_db=tmp_path / "handoff.sqlite",
        env={},
        broker_tls=files,
    )
    specs = {spec.name: spec for spec in child_specs(plan)}
    for name, tls in files.items():
        env = specs[name].env
        assert env is not None
        assert env["GROUNDPLANE_BROKER_TLS_CA"] == str(ca)
        assert env["GROUNDPLANE_BROKER_TLS_CERT"] == str(tls.cert_file)
        assert env["GROUNDPLANE_BROKER_TLS_KEY"] == str(tls.key_file)
        assert not any(".crt" in arg or ".key" in arg for arg in specs[name].argv)
    tracking_env = specs["tracking"].env
    assert tracking_env is not None
    assert "GROUNDPLANE_BROKER_TLS_CERT" not in tracking_env
    plain = child_specs(dataclasses.replace(plan, broker_tls=None))
    assert not any("GROUNDPLANE_BROKER_TLS_CA" in (spec.env or {}) for spec in plain)


async def test_real_components_work_over_tls_with_only_their_roles(tmp_path: Path) -> None:
    """A nodes shard (its certificate: ``gp-shard-s0``), the link emulator (``gp-links``) and a
    ground client with the node directory and a requester (``gp-gateway``) over the TLS broker:
    every member is born ONLINE in the directory and a request to each crosses the emulated link
    and is answered by it. The least-privilege ACL is enough for what they really do."""
    from ..node.conftest import FAST_MODEL, STATION
    from ..node.test_shard import MEMBERS, SHARD, running_shard

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    ca = trustme.CA()
    pki = Pki(ca, tmp_path / "pki")
    pki.directory.mkdir()
    ca.cert_pem.write_to_path(str(pki.directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", common_name="groundplane-broker")
    server.cert_chain_pems[0].write_to_path(str(pki.directory / "broker.crt"))
    server.private_key_pem.write_to_path(str(pki.directory / "broker.key"))
    tls = BrokerServerTls(
        pki.directory / "ca.pem", pki.directory / "broker.crt", pki.directory / "broker.key"
    )
    shard_account = shard_username(SHARD)
    async with (
        PrivateBroker(
            workdir=tmp_path / "broker",
            tls=tls,
            shards={SHARD: MEMBERS},
            identities={shard_account: pki.client(shard_account)},
        ) as broker,
        running_shard(
            broker,
            links_address=broker.tls_address(pki.client(ROLE_LINKS)),
            ground_address=broker.tls_address(pki.client(ROLE_GATEWAY)),
        ) as run,
    ):
        for sat in MEMBERS:
            view = run.directory.get(sat)
            assert view is not None
            assert view.shard_id == SHARD
            outcome = await run.requester.infer(
                sat,
                STATION,
                node_pb2.InferRequest(model=FAST_MODEL.name, prompt="hello", max_tokens=4),
                request_id=f"tls-{sat}",
                deadline=run.clock.now() + timedelta(seconds=30),
            )
            assert outcome.satellite_id == sat
            assert outcome.result.output_tokens > 0


@pytest.mark.slow
async def test_a_multi_process_system_serves_requests_over_the_tls_broker(tmp_path: Path) -> None:
    """``ProcessSystem(broker_tls=...)``: the private broker speaks TLS only and every child
    (links, the nodes shard, routing, handoff, gateway) logs in with its own certificate and
    role; the load's requests are answered through the gateway (the first within 60 s), and no
    password file exists."""
    from groundplane.orbit.constellations import generate
    from groundplane.scenario import default_stations, default_users
    from groundplane.system.processes import (
        CHILD_ACCOUNTS,
        BrokerTlsFiles,
        CatalogSource,
        ProcessSystem,
        shard_id,
    )
    from groundplane.system.system import SystemConfig

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    ca = trustme.CA()
    pki = Pki(ca, tmp_path / "pki")
    pki.directory.mkdir()
    ca.cert_pem.write_to_path(str(pki.directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", common_name="groundplane-broker")
    server.cert_chain_pems[0].write_to_path(str(pki.directory / "broker.crt"))
    server.private_key_pem.write_to_path(str(pki.directory / "broker.key"))
    accounts = {"gp-service", *CHILD_ACCOUNTS.values(), shard_username(shard_id(0))}
    files = BrokerTlsFiles(
        BrokerServerTls(
            pki.directory / "ca.pem", pki.directory / "broker.crt", pki.directory / "broker.key"
        ),
        {account: pki.client(account) for account in accounts},
    )
    clock = SimulatedClock(datetime(2026, 8, 15, 12, tzinfo=UTC), speed=10.0)
    spec = "walker:24/6/1@550km:53"
    config = SystemConfig(
        elements=generate(spec, clock.now()),
        stations=default_stations(),
        users=default_users(),
        rate_rps=4.0,
        workdir=tmp_path / "run",
        route_tick_s=2.0,
    )
    system = ProcessSystem(config, clock, CatalogSource(constellation=spec), broker_tls=files)

    async def scenario(running: ProcessSystem) -> None:
        async with asyncio.timeout(60):
            # RunStats has no event per answer: poll the counter the load updates.
            while running.stats.succeeded < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        running.stop()

    async with asyncio.timeout(150):
        await system.run(scenario)
    plan = system.plan
    assert plan is not None
    assert plan.broker_url.startswith("mqtts://127.0.0.1:")
    assert "@" not in plan.broker_url
    assert not (tmp_path / "run" / "passwords").exists()
    config_text = (tmp_path / "run" / "mosquitto.conf").read_text()
    assert "require_certificate true" in config_text
    log = (tmp_path / "run" / "mosquitto.log").read_text()
    for account in ("gp-links", "gp-routing", "gp-handoff", "gp-gateway", "gp-shard-nodes-0"):
        assert f"u'{account}'" in log, f"{account} never connected"
