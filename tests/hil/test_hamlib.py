"""The Hamlib clients against the real dummy daemons (``rotctld -m 1``, ``rigctld -m 1``)."""

from __future__ import annotations

import asyncio
import random

import pytest
from structlog.testing import capture_logs

from groundplane.hil.hamlib import (
    Backoff,
    HamlibConnectionError,
    HamlibReplyError,
    RigClient,
    RotatorClient,
    RotatorLimits,
)
from groundplane.kernel.errors import InvalidArgument

from .conftest import DaemonFactory

#: Hamlib's dummy rotator slews each axis at this rate (measured: 6.0 °/s; its SPEED level has
#: no effect). Tests allow the rate to be within this band.
DUMMY_SLEW_DEG_S = 6.0
SLEW_RATE_BAND = 0.2  # ±20 %: the measurement runs on a shared 2-core machine


async def test_limits_come_from_dump_state_when_configured(hamlib_daemon: DaemonFactory) -> None:
    """``-C min_az/max_az/max_el`` limits are what read_limits returns (\\dump_caps keeps the
    model's static -180..450/0..90), and the daemon refuses positions outside them."""
    daemon = hamlib_daemon("rotctld", "min_az=0,max_az=450,max_el=180")
    async with RotatorClient("127.0.0.1", daemon.port) as rot:
        assert await rot.read_limits() == RotatorLimits(0.0, 450.0, 0.0, 180.0)
        caps = await rot.dump_caps()
        assert float(caps["Max Azimuth"]) == 450.0
        assert float(caps["Max Elevation"]) == 90.0  # static model caps, not the config
        await rot.set_position(440.0, 170.0)  # accepted: inside the configured limits
        with capture_logs() as logs, pytest.raises(HamlibReplyError) as refused:
            await rot.set_position(-10.0, 10.0)
        assert refused.value.rprt == -1
        assert rot.reply_errors == 1
        assert [e["event"] for e in logs] == ["hamlib_error_reply"]
        assert logs[0]["rprt"] == -1
        # The connection stays usable after an error reply.
        az, el = await rot.get_position()
        assert 0.0 <= az <= 450.0
        assert 0.0 <= el <= 180.0


async def test_default_dummy_limits(hamlib_daemon: DaemonFactory) -> None:
    """Without -C the dummy rotator reports −180..450° azimuth and 0..90° elevation."""
    daemon = hamlib_daemon("rotctld")
    async with RotatorClient("127.0.0.1", daemon.port) as rot:
        assert await rot.read_limits() == RotatorLimits(-180.0, 450.0, 0.0, 90.0)
        assert await rot.get_position() == (0.0, 0.0)


async def test_dummy_rotator_slews_at_a_finite_rate(hamlib_daemon: DaemonFactory) -> None:
    """The dummy moves both axes toward a command at about 6 °/s (the tolerance the tracker
    tests build on), and park (K) returns it toward 0°/0°."""
    daemon = hamlib_daemon("rotctld")
    loop = asyncio.get_running_loop()
    async with RotatorClient("127.0.0.1", daemon.port) as rot:
        await rot.set_position(90.0, 60.0)
        started = loop.time()
        await asyncio.sleep(1.0)
        az, el = await rot.get_position()
        elapsed = loop.time() - started
        for value in (az, el):
            rate = value / elapsed
            assert abs(rate - DUMMY_SLEW_DEG_S) <= SLEW_RATE_BAND * DUMMY_SLEW_DEG_S, rate
        await rot.park()
        await asyncio.sleep(0.3)
        az_after, _ = await rot.get_position()
        assert az_after < az  # moving back toward 0


async def test_rig_frequencies_round_trip_in_whole_hertz(hamlib_daemon: DaemonFactory) -> None:
    """F/f and I/i set and read the receive and split transmit frequencies in whole hertz;
    nonsense frequencies are refused before anything is sent."""
    daemon = hamlib_daemon("rigctld")
    async with RigClient("127.0.0.1", daemon.port) as rig:
        assert await rig.set_frequency(145_800_000.6) == 145_800_001
        assert await rig.get_frequency() == 145_800_001.0
        await rig.set_split(True, "VFOB")
        assert await rig.get_split() == (True, "VFOB")
        assert await rig.set_split_frequency(437_800_123.2) == 437_800_123
        assert await rig.get_split_frequency() == 437_800_123.0
        for bad in (-5.0, 0.0, float("nan"), 1e20):
            with pytest.raises(InvalidArgument):
                await rig.set_frequency(bad)
        assert rig.reply_errors == 0
        assert await rig.get_frequency() == 145_800_001.0


async def test_killed_daemon_raises_connection_error(hamlib_daemon: DaemonFactory) -> None:
    """A daemon that dies makes the next request fail with HamlibConnectionError (the client
    disconnects), connecting to it fails the same way, and a restart on the port works."""
    daemon = hamlib_daemon("rotctld")
    rot = RotatorClient("127.0.0.1", daemon.port, io_timeout_s=1.0)
    await rot.connect()
    await rot.set_position(30.0, 30.0)
    daemon.kill()
    with pytest.raises(HamlibConnectionError):
        await rot.get_position()
    assert not rot.connected
    assert rot.connection_failures == 1
    with pytest.raises(HamlibConnectionError, match="cannot connect"):
        await rot.connect()
    daemon.start()
    await rot.connect()
    assert await rot.get_position() == (0.0, 0.0)  # the restarted dummy starts at 0/0
    await rot.close()


async def test_unresponsive_daemon_times_out() -> None:
    """A peer that accepts but never answers fails within the I/O timeout, not forever."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1000):  # swallow commands, never answer
            pass
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        rot = RotatorClient("127.0.0.1", port, io_timeout_s=0.2)
        await rot.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HamlibConnectionError, match="no complete reply"):
            await rot.get_position()
        assert loop.time() - started < 1.0
        assert not rot.connected


def test_backoff_grows_exponentially_with_jitter() -> None:
    """Delays double up to the cap and are jittered within [(1 − jitter)·d, d]."""
    backoff = Backoff(initial_s=0.1, max_s=1.0, factor=2.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [backoff.delay_s(attempt, rng) for _ in range(50)]
        assert all(0.5 * ceiling <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0.1 * ceiling  # really jittered
    with pytest.raises(InvalidArgument):
        Backoff(initial_s=2.0, max_s=1.0)


async def test_cancelled_request_drops_the_connection(hamlib_daemon: DaemonFactory) -> None:
    """A request cancelled after its command went out leaves a reply unread; the client drops
    the connection so the next command cannot read that stale reply as its own, and a
    reconnect answers correctly."""
    daemon = hamlib_daemon("rotctld")
    client = RotatorClient("127.0.0.1", daemon.port)
    await client.connect()
    try:
        pending = asyncio.ensure_future(client.get_position())
        await asyncio.sleep(0)  # the command is written; the reply is not read yet
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert not client.connected
        await client.connect()
        azimuth, elevation = await client.get_position()
        assert (azimuth, elevation) == pytest.approx((0.0, 0.0), abs=0.01)
    finally:
        await client.close()
