"""``groundplane up --tls``: the whole multi-process system over mutual TLS."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.cli.main import main
from groundplane.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from groundplane.handoff.v1 import handoff_pb2, handoff_pb2_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.tls import open_channel, process_tls
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_CONSTELLATION, default_stations, default_users
from groundplane.system.processes import CatalogSource, ProcessSystem
from groundplane.system.system import SystemConfig

pytestmark = pytest.mark.slow

START = datetime(2026, 8, 15, tzinfo=UTC)
CALL_TIMEOUT_S = 5.0
SERVED_WITHIN_S = 30.0


async def _infer_until_served(running: ProcessSystem) -> str:
    """Infer through the gateway (this process's TLS identity) until one call is answered."""
    auth = (("authorization", f"Bearer {running.config.token}"),)
    user = running.config.users[0]
    request = gateway_pb2.InferRequest(
        model=running.config.model.name,
        prompt="hello",
        location=gateway_pb2.UserLocation(lat_deg=user.lat_deg, lon_deg=user.lon_deg),
    )
    failures: list[str] = []
    async with asyncio.timeout(SERVED_WITHIN_S), open_channel(running.gateway_target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        while True:
            try:
                reply = await stub.Infer(request, metadata=auth, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")
                # Bounded by the timeout above; the system serves once a satellite is in view.
                await asyncio.sleep(0.5)
                continue
            return str(reply.satellite_id)


async def test_up_tls_serves_requests_and_refuses_plaintext_and_unauthorised_peers(
    tmp_path: Path,
) -> None:
    """With ``tls=True`` (``up --tls``) every child serves mutual TLS with its own minted
    certificate: the load and a request through the gateway are answered; a plaintext client
    is refused at the handshake (UNAVAILABLE) by handoff and the gateway; the links service's
    own valid certificate is refused PERMISSION_DENIED on handoff's CloseSession; the key files
    are 0600; and when the run ends this process is plaintext again."""
    clock = SimulatedClock(START, speed=60.0)
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, clock.now()),
        stations=default_stations(),
        users=default_users(),
        rate_rps=2.0,
        workdir=tmp_path,
        link_tick_s=1.2,
        route_tick_s=6.0,
    )
    system = ProcessSystem(
        config, clock, CatalogSource(constellation=DEFAULT_CONSTELLATION), tls=True
    )
    seen: dict[str, object] = {}

    async def scenario(running: ProcessSystem) -> None:
        files = running.tls_files
        assert files is not None
        assert process_tls() == files["admin"]
        seen["satellite"] = await _infer_until_served(running)
        for target in (running.handoff_target, running.gateway_target):
            async with open_channel(target, tls=None) as plaintext:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await health_pb2_grpc.HealthStub(plaintext).Check(
                        health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with open_channel(running.handoff_target, tls=files["links"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await handoff_pb2_grpc.HandoffServiceStub(channel).CloseSession(
                    handoff_pb2.CloseSessionRequest(session_id="any"), timeout=CALL_TIMEOUT_S
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'links'" in str(denied.value.details())
        seen["modes"] = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for identity in files.values()
            for path in (identity.cert, identity.key, identity.ca)
        }
        running.stop()

    async with asyncio.timeout(120):
        await system.run(scenario)
    assert seen["satellite"]
    assert set(seen["modes"].values()) == {0o600}  # type: ignore[attr-defined]
    assert system.stats.summary()["requests"]["succeeded"] > 0
    assert process_tls() is None


def test_up_tls_refuses_in_process_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``up --tls --in-process`` exits 2 with a message naming --in-process (one process has one
    identity), before anything starts."""
    assert main(["up", "--tls", "--in-process"], environ={}) == 2
    assert "--tls runs each service as its own process" in capsys.readouterr().err
