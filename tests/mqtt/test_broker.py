"""The private Mosquitto: loopback only, authenticated, node ACLs, kill/restart, persistence."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.mqtt import broker as broker_module
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress, PrivateBroker
from groundplane.mqtt.client import NOT_AUTHORIZED, BrokerRefusedError, MqttClient, ReceivedMessage

from .conftest import FAST_BACKOFF

QUEUED = 100
SETTLE_S = 3.0
"""How long the test waits for queued messages after a reconnect."""


def test_broker_url_round_trip_and_errors() -> None:
    """mqtt:// URLs parse into host, port and credentials and back; other schemes teach; an
    mqtts:// URL needs the TLS files; no error repeats the password."""
    address = BrokerAddress.from_url("mqtt://gp-service:p%40ss@broker.local:2883")
    assert address == BrokerAddress("broker.local", 2883, "gp-service", "p@ss")
    assert BrokerAddress.from_url(address.url) == address
    assert BrokerAddress.from_url("mqtt://10.0.0.5").port == 1883
    assert "p@ss" not in repr(address)
    with pytest.raises(InvalidArgument, match="GROUNDPLANE_BROKER_TLS_CA") as no_files:
        BrokerAddress.from_url("mqtts://host:8883")
    assert "--broker-tls-ca" in str(no_files.value)
    for bad in ("http://u:s3cret-pw@host", "mqtt://u:s3cret-pw@host:99999", "mqtt://u:s3cret-pw@"):
        with pytest.raises(InvalidArgument) as refused:
            BrokerAddress.from_url(bad)
        assert "s3cret-pw" not in str(refused.value)
        assert "u:***@" in str(refused.value)


async def test_config_is_loopback_nodelay_authenticated(broker: PrivateBroker) -> None:
    """The generated config listens on 127.0.0.1 only, sets TCP_NODELAY and refuses anonymous
    clients; the password file holds hashes, not the passwords."""
    config = (broker.workdir / "mosquitto.conf").read_text().splitlines()
    assert f"listener {broker.port} 127.0.0.1" in config
    assert "set_tcp_nodelay true" in config
    assert "allow_anonymous false" in config
    assert "autosave_interval 1" in config
    passwords = (broker.workdir / "passwords").read_text()
    assert broker.address.password is not None
    assert broker.address.password not in passwords
    assert passwords.startswith("gp-service:$")


async def test_mosquitto_runs_in_its_own_session_so_our_ctrl_c_does_not_reach_it(
    broker: PrivateBroker,
) -> None:
    """Mosquitto leads its own session and process group, not ours (a terminal's Ctrl-C goes to
    our whole process group; the broker must stay up until we stop it), after a restart too."""
    for _ in range(2):
        pid = broker.pid
        assert pid is not None
        assert (os.getsid(pid), os.getpgid(pid)) == (pid, pid)
        assert os.getpgid(pid) != os.getpgid(0)
        await broker.stop()
        await broker.start()


async def test_node_may_publish_only_its_own_topics(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """Node 25544 publishes on gp/v1/node/25544/…; publishing on another node's topic is refused
    with v5 reason code 0x87 and the message reaches nobody."""
    seen: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

    async def record(message: ReceivedMessage) -> None:
        await seen.put(message)

    async with (
        MqttClient(broker.address, client_id="svc", clock=clock) as service,
        MqttClient(broker.node_address("25544"), client_id="node-25544", clock=clock) as node,
    ):
        await service.wait_connected()
        await service.subscribe("gp/v1/#", record)
        await node.wait_connected()
        own = topics.node_tx_ground("25544", "svalbard", "telemetry")
        await node.publish(own, b"mine")
        received = await asyncio.wait_for(seen.get(), 5)
        assert (received.topic, received.payload) == (own, b"mine")

        with pytest.raises(BrokerRefusedError) as refusal:
            await node.publish(topics.node_status("48274"), b"impostor")
        assert refusal.value.reason_code == NOT_AUTHORIZED
        with pytest.raises(BrokerRefusedError):
            await node.publish(topics.ground_rx("svalbard", "25544", "resp"), b"bypass the link")
        await node.publish(own, b"marker")
        # Ordered delivery: the marker arrives next, so the refused messages went nowhere.
        assert (await asyncio.wait_for(seen.get(), 5)).payload == b"marker"


async def test_kill_and_restart_on_the_same_port(broker: PrivateBroker) -> None:
    """SIGKILL stops accepting connections at once; start() brings it back on the same port."""
    port, pid = broker.port, broker.pid
    await broker.kill()
    assert not broker.running
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(broker.host, port)
    await broker.start()
    assert broker.port == port
    assert broker.pid != pid
    _, writer = await asyncio.open_connection(broker.host, port)
    writer.close()
    await writer.wait_closed()


async def _wait_for_save_after(
    broker: PrivateBroker, after_unix_s: float, broker_saves_s: float
) -> None:
    """Wait until the broker has written its database after ``after_unix_s`` (or give up after
    ``broker_saves_s``): under CPU load the save can lag the nominal interval, and the test is
    about what a save keeps, not about how punctual it is. Always waits 2 s at least."""
    database = broker.workdir / "data" / "mosquitto.db"
    await asyncio.sleep(2.0)
    deadline = time.monotonic() + broker_saves_s
    while time.monotonic() < deadline:
        if database.exists() and database.stat().st_mtime > after_unix_s:
            return
        await asyncio.sleep(0.1)


async def _queued_survivors(
    broker: PrivateBroker, clock: SimulatedClock, save_wait_s: float = 10.0
) -> int:
    """Queue QUEUED QoS 1 messages for an offline persistent session, SIGKILL the broker once
    the autosave interval has passed, restart it, and count what the session receives."""
    client_id = f"durable-{uuid.uuid4().hex[:8]}"
    topic = topics.node_rx_ground("25544", "svalbard", "jobs")
    received: set[bytes] = set()
    all_received = asyncio.Event()

    async def record(message: ReceivedMessage) -> None:
        received.add(message.payload)
        if len(received) == QUEUED:
            all_received.set()

    durable = MqttClient(broker.address, client_id=client_id, clock=clock, persistent_session=True)
    async with durable:
        await durable.subscribe(topic, record)
        await durable.wait_connected()
    async with MqttClient(broker.address, client_id="publisher", clock=clock) as publisher:
        await publisher.wait_connected()
        for index in range(QUEUED):
            await publisher.publish(topic, f"job-{index}".encode())
    await _wait_for_save_after(broker, time.time(), broker_saves_s=save_wait_s)
    await broker.kill()
    await broker.start()
    durable = MqttClient(
        broker.address,
        client_id=client_id,
        clock=clock,
        persistent_session=True,
        backoff=FAST_BACKOFF,
    )
    async with durable:
        await durable.subscribe(topic, record)
        await durable.wait_connected()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), SETTLE_S)
    return len(received)


@pytest.mark.slow
async def test_queued_qos1_messages_survive_sigkill(
    broker: PrivateBroker, clock: SimulatedClock
) -> None:
    """With autosave every second, every QoS 1 message queued for an offline persistent session
    more than a second before a SIGKILL is delivered after the restart."""
    survivors = await _queued_survivors(broker, clock)
    print(f"queued QoS 1 messages surviving SIGKILL (autosave 1 s): {survivors}/{QUEUED}")
    assert survivors == QUEUED


@pytest.mark.slow
async def test_mosquitto_default_autosave_loses_queued_messages(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """The reason for the setting: with Mosquitto's default 1800 s autosave the same SIGKILL
    loses the queued messages."""
    async with PrivateBroker(
        nodes=["25544"], workdir=tmp_path / "default", autosave_interval_s=1800
    ) as default_broker:
        survivors = await _queued_survivors(default_broker, clock, save_wait_s=0.0)
    print(f"queued QoS 1 messages surviving SIGKILL (autosave 1800 s): {survivors}/{QUEUED}")
    assert survivors < QUEUED


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (a child not yet reaped counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("failure", ["cancelled", "raises"])
async def test_failed_start_leaves_no_mosquitto_and_no_workdir(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """When starting is cancelled, or fails, after mosquitto was spawned, the process is killed
    and reaped and the broker's own temporary working directory is removed."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    probing = asyncio.Event()

    async def never_ready(host: str, port: int, timeout_s: float) -> bool:
        probing.set()
        if failure == "raises":
            raise RuntimeError("probe failed")
        await asyncio.Event().wait()
        return False

    monkeypatch.setattr(broker_module, "_accepts", never_ready)
    broker = PrivateBroker()

    async def enter() -> None:
        async with broker:
            pass

    entering = asyncio.create_task(enter())
    await asyncio.wait_for(probing.wait(), 10)
    pid = broker.pid
    assert pid is not None
    try:
        if failure == "cancelled":
            entering.cancel()
            with pytest.raises(asyncio.CancelledError):
                await entering
        else:
            with pytest.raises(RuntimeError, match="probe failed"):
                await entering
        assert not _alive(pid)
        assert not broker.running
        assert not broker.workdir.exists()
    finally:  # never leave a broker behind, even when the test fails
        if broker.running:
            await broker.kill()
        shutil.rmtree(broker.workdir, ignore_errors=True)


async def test_hung_password_tool_is_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A mosquitto_passwd that does not finish within the start timeout is killed and reaped
    (start fails with the timeout), and the broker's temporary working directory is removed."""
    pid_file = tmp_path / "passwd.pid"
    tool = tmp_path / "mosquitto_passwd"
    tool.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    tool.chmod(0o755)
    monkeypatch.setattr(broker_module, "START_TIMEOUT_S", 1.0)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *args, **kwargs: (
            str(tool) if name == "mosquitto_passwd" else real_which(name, *args, **kwargs)
        ),
    )
    broker = PrivateBroker()
    pid: int | None = None
    try:
        with pytest.raises(TimeoutError):
            async with broker:
                pass
        pid = int(pid_file.read_text())
        assert not _alive(pid)
        assert not broker.workdir.exists()
    finally:  # never leave the stand-in tool behind, even when the test fails
        if pid is None and pid_file.exists():
            pid = int(pid_file.read_text())
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(broker.workdir, ignore_errors=True)


_HOST = """\
import asyncio, sys
from pathlib import Path
from groundplane.mqtt.broker import PrivateBroker

async def main() -> None:
    async with PrivateBroker(nodes=(), workdir=Path(sys.argv[1])) as broker:
        print(broker.pid, flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def test_the_private_broker_ends_when_its_owner_is_killed(tmp_path: Path) -> None:
    """A process that started a private Mosquitto and is then killed -9 (no clean-up runs)
    leaves no broker behind: Mosquitto asked the kernel for SIGTERM at its parent's death."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc")
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOST,
        str(tmp_path / "broker"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": f"/usr/sbin:{os.environ.get('PATH', '')}"},
    )
    assert host.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = b""
            while not line.strip().isdigit():  # log lines first, then the broker's pid
                line = await host.stdout.readline()
                assert line, "the host exited before printing the broker's pid"
        broker_pid = int(line)
        assert _running(broker_pid)
    finally:
        host.kill()
        await host.wait()
    deadline = time.monotonic() + 10
    while _running(broker_pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - another process's death, no event to await
        await asyncio.sleep(0.05)
    assert not _running(broker_pid), f"mosquitto {broker_pid} outlived its owner"
