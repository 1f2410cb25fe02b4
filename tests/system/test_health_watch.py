"""Health ``Watch`` on every gRPC server of groundplane: each entry (``""``, ``liveness``,
``readiness`` and the service's full name) first streams SERVING, then changes to NOT_SERVING
when the server shuts down.

The servers of ``groundplane up`` (tracking, routing, handoff, gateway) are watched in the
system itself; the HIL station-control server, which ``up`` does not run, on its own.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.gateway.servicer import SERVICE_NAME as GATEWAY
from groundplane.handoff.servicer import SERVICE_NAME as HANDOFF
from groundplane.hil.controller import ElementsPassSource, HamlibEndpoint, StationController
from groundplane.hil.servicer import SERVICE_NAME as HIL
from groundplane.hil.servicer import StationControlServicer
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import GrpcServer
from groundplane.mqtt.broker import free_loopback_port
from groundplane.orbit.constellations import generate
from groundplane.routing.servicer import SERVICE_NAME as ROUTING
from groundplane.scenario import default_stations
from groundplane.system.system import GroundplaneSystem, SystemConfig
from groundplane.tracking.servicer import SERVICE_NAME as TRACKING

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WATCH_TIMEOUT_S = 60.0


class Watches:
    """Open Watch streams on ``server name → (target, service name)`` for each health entry."""

    def __init__(self, servers: Mapping[str, tuple[str, str]]) -> None:
        self._servers = servers
        self._channels: list[grpc.aio.Channel] = []
        self.calls: dict[tuple[str, str], Any] = {}

    async def __aenter__(self) -> Watches:
        for server, (target, service) in self._servers.items():
            channel = grpc.aio.insecure_channel(target)
            self._channels.append(channel)
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", "liveness", "readiness", service):
                request = health_pb2.HealthCheckRequest(service=name)
                self.calls[server, name] = stub.Watch(request, timeout=WATCH_TIMEOUT_S)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for call in self.calls.values():
            call.cancel()
        for channel in self._channels:
            await channel.close(None)

    async def next_statuses(self) -> dict[tuple[str, str], int]:
        """The next status of every stream, read concurrently."""
        return await self._read_all(cancel=False)

    async def final_statuses(self) -> dict[tuple[str, str], int]:
        """The next status of every stream; each stream is cancelled once read (an open stream
        would hold its server's drain until the grace is over)."""
        return await self._read_all(cancel=True)

    async def _read_all(self, *, cancel: bool) -> dict[tuple[str, str], int]:
        async def read(key: tuple[str, str]) -> tuple[tuple[str, str], int]:
            reply = await self.calls[key].read()  # grpc.aio.EOF when the stream ended
            assert isinstance(reply, health_pb2.HealthCheckResponse), f"Watch{key} ended early"
            if cancel:
                self.calls[key].cancel()
            status: int = reply.status
            return key, status

        async with asyncio.TaskGroup() as group:
            reads = [group.create_task(read(key), name=f"watch:{key}") for key in self.calls]
        return dict(task.result() for task in reads)


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")


async def test_watch_on_every_server_of_up_sees_serving_then_not_serving_at_stop(
    tmp_path: Path,
) -> None:
    """In `groundplane up`'s system, Watch on tracking, routing, handoff and the gateway streams
    SERVING for '', liveness, readiness and the service's name; stopping the system turns each
    of them NOT_SERVING (each server in its turn of the shutdown), and the system stops."""
    _need_mosquitto()
    config = SystemConfig(
        elements=generate("walker:4/2/1@550km:53", EPOCH),
        stations=[next(s for s in default_stations() if s.id == "wallops")],
        workdir=tmp_path / "broker",
    )
    system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=10.0))
    async with asyncio.timeout(90), asyncio.TaskGroup() as group:
        running = group.create_task(system.run(), name="system-under-test")
        await system.wait_ready()
        servers = {
            "tracking": (system.tracking_target, TRACKING),
            "routing": (system.routing_target, ROUTING),
            "handoff": (system.handoff_target, HANDOFF),
            "gateway": (system.gateway_target, GATEWAY),
        }
        async with Watches(servers) as watches:
            assert await watches.next_statuses() == dict.fromkeys(watches.calls, SERVING)
            system.stop()
            assert await watches.final_statuses() == dict.fromkeys(watches.calls, NOT_SERVING)
        await running


async def test_watch_on_the_hil_station_server_sees_serving_then_not_serving_at_stop() -> None:
    """The station-control server (as `groundplane serve hil` builds it) streams SERVING on its
    health entries and NOT_SERVING once it stops; the controller is not run (health does not
    touch the rotator)."""
    controller = StationController(
        site=default_stations()[0],
        clock=SimulatedClock(EPOCH),
        source=ElementsPassSource(generate("walker:4/2/1@550km:53", EPOCH)),
        rotctld=HamlibEndpoint("127.0.0.1", free_loopback_port()),
    )
    server = GrpcServer([StationControlServicer(controller).binding()], unready_delay_s=0.0)
    await server.start()
    try:
        async with Watches({"hil": (server.target, HIL)}) as watches:
            assert await watches.next_statuses() == dict.fromkeys(watches.calls, SERVING)
            stopping = asyncio.create_task(server.stop(), name="stop-hil-server")
            assert await watches.final_statuses() == dict.fromkeys(watches.calls, NOT_SERVING)
            await stopping
    finally:
        await server.stop(0)
