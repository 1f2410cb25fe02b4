"""StationControlService and `groundplane hil` against the real Hamlib dummy daemons, with
passes and pointing from the real tracking service."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from groundplane.cli.main import main
from groundplane.hil.controller import HamlibEndpoint, StationController, TrackingPassSource
from groundplane.hil.hamlib import RigClient
from groundplane.hil.metrics import HilMetrics, pointing_error_deg
from groundplane.hil.servicer import StationControlServicer
from groundplane.hil.tracker import TrackerConfig, TrackerStatus
from groundplane.hil.v1 import hil_pb2 as pb
from groundplane.hil.v1 import hil_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.tracking.app import build_tracking
from groundplane.tracking.v1 import tracking_pb2 as tpb
from groundplane.tracking.v1 import tracking_pb2_grpc as tpb_grpc

from ..scrape import sample, samples
from .conftest import CATALOG, PUNTA_ARENAS, DaemonFactory

C_KM_S = 299_792.458
DOWNLINK_HZ = 437.8e6
#: Doppler at 437.8 MHz for a LEO satellite never exceeds ±8 km/s × f / c ≈ ±11.7 kHz.
MAX_DOPPLER_HZ = DOWNLINK_HZ * 8.0 / C_KM_S
#: The Punta Arenas ISS pass rises at ≈21:32:27Z; start a minute before it.
START = datetime(2026, 8, 15, 21, 31, 30, tzinfo=UTC)
SPEED = 60.0


def _iss_text() -> str:
    lines = CATALOG.read_text().splitlines()
    for index in range(0, len(lines), 3):
        if lines[index + 1][2:7].strip() == "25544":
            return "\n".join(lines[index : index + 3]) + "\n"
    raise AssertionError("ISS missing from data/satellites-2026-08.3le")


class Station:
    def __init__(
        self, stub: pb_grpc.StationControlServiceAsyncStub, controller: StationController
    ) -> None:
        self.stub = stub
        self.controller = controller


@pytest.fixture
async def station(hamlib_daemon: DaemonFactory) -> AsyncIterator[Station]:
    rot = hamlib_daemon("rotctld")
    rig = hamlib_daemon("rigctld")
    clock = SimulatedClock(START, speed=SPEED)
    tracking = build_tracking(clock, unready_delay_s=0.0, drain_grace_s=0.1)
    await tracking.server.start()
    tracking_channel = grpc.aio.insecure_channel(tracking.server.target)
    tracking_stub = tpb_grpc.TrackingServiceStub(tracking_channel)
    await tracking_stub.UpsertElements(tpb.UpsertElementsRequest(text=_iss_text()), timeout=10)
    controller = StationController(
        site=PUNTA_ARENAS,
        clock=clock,
        source=TrackingPassSource(tracking_stub),
        rotctld=HamlibEndpoint("127.0.0.1", rot.port),
        rigctld=HamlibEndpoint("127.0.0.1", rig.port),
        config=TrackerConfig(pointing_threshold_deg=0.5),
    )
    server = GrpcServer([StationControlServicer(controller).binding()], unready_delay_s=0.0)
    await server.start()
    channel = grpc.aio.insecure_channel(server.target)
    try:
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(controller.run(), name="station-under-test")
            yield Station(pb_grpc.StationControlServiceStub(channel), controller)
            runner.cancel()
    finally:
        await channel.close(None)
        await server.stop(0)
        await tracking_channel.close(None)
        await tracking.server.stop(0)
        tracking.close()


async def test_service_tracks_the_next_pass_and_parks(station: Station) -> None:
    """StartTracking picks the next ISS pass from the tracking service; the status stream goes
    through tracking to parked with the rotator inside its limits and Doppler-corrected radio
    frequencies; a second start while busy is FAILED_PRECONDITION."""
    reply = await station.stub.StartTracking(
        pb.StartTrackingRequest(catalog_id="25544", downlink_hz=DOWNLINK_HZ), timeout=30
    )
    aos = reply.tracked_pass.aos.ToDatetime(tzinfo=UTC)
    los = reply.tracked_pass.los.ToDatetime(tzinfo=UTC)
    assert START < aos < START + timedelta(minutes=5)
    assert (los - aos).total_seconds() > 300
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="25544"), timeout=30)
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    phases: list[int] = []
    downlinks: list[int] = []
    async for update in station.stub.WatchStatus(pb.WatchStatusRequest(), timeout=60):
        status = update.status
        phases.append(status.phase)
        if status.phase == pb.PHASE_TRACKING:
            assert 0.0 <= status.reported_elevation_deg <= 90.0
            assert -180.0 <= status.reported_azimuth_deg <= 450.0
            if status.downlink_hz:
                downlinks.append(status.downlink_hz)
        if status.phase in (pb.PHASE_PARKED, pb.PHASE_FAILED):
            break
    assert phases[-1] == pb.PHASE_PARKED
    assert pb.PHASE_TRACKING in phases
    assert downlinks
    offsets_hz = [abs(f - DOWNLINK_HZ) for f in downlinks]
    assert max(offsets_hz) < MAX_DOPPLER_HZ
    # Doppler-corrected: rigctld reports whole hertz, so a reading next to TCA (range rate ≈ 0)
    # may equal the nominal frequency; nearly all others must be offset from it.
    assert sum(offset > 0 for offset in offsets_hz) >= 0.9 * len(offsets_hz), offsets_hz
    # Receding at the end of the pass: the downlink is below nominal and still falling.
    assert downlinks[-1] < DOWNLINK_HZ
    assert downlinks[-1] <= downlinks[len(downlinks) // 2]


async def test_stop_mid_pass_parks_and_bad_requests_are_refused(station: Station) -> None:
    """StopTracking during a pass ends it parked: the reply and the status afterwards say
    PHASE_PARKED (not the tracking phase the pass was in); an unknown satellite is NOT_FOUND and
    a negative frequency INVALID_ARGUMENT, and the station keeps serving."""
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="424242"), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await station.stub.StartTracking(
            pb.StartTrackingRequest(catalog_id="25544", downlink_hz=-1.0), timeout=30
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="25544"), timeout=30)
    async for update in station.stub.WatchStatus(pb.WatchStatusRequest(), timeout=60):
        if update.status.phase == pb.PHASE_TRACKING:
            break
    stopped = await station.stub.StopTracking(pb.StopTrackingRequest(), timeout=30)
    assert stopped.status.catalog_id == "25544"
    assert stopped.status.phase == pb.PHASE_PARKED
    status = (await station.stub.GetStatus(pb.GetStatusRequest(), timeout=10)).status
    assert not station.controller.busy
    assert status.phase == pb.PHASE_PARKED


async def test_a_start_while_a_stopped_pass_parks_is_refused(station: Station) -> None:
    """While StopTracking parks the antenna the station stays busy: a StartTracking in that
    window is FAILED_PRECONDITION (it would drive the rotator during the park); once parked a
    new pass starts."""
    await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="25544"), timeout=30)
    async for update in station.stub.WatchStatus(pb.WatchStatusRequest(), timeout=60):
        if update.status.phase == pb.PHASE_TRACKING:
            break
    parking, parked = asyncio.Event(), asyncio.Event()
    real_park = station.controller.tracker.park

    async def slow_park() -> TrackerStatus:
        parking.set()
        await asyncio.sleep(0.3)  # the window a real rotator needs to slew home
        status = await real_park()
        parked.set()
        return status

    station.controller.tracker.park = slow_park  # type: ignore[method-assign]

    async def stop() -> pb.StopTrackingResponse:
        reply: pb.StopTrackingResponse = await station.stub.StopTracking(
            pb.StopTrackingRequest(), timeout=30
        )
        return reply

    stopping = asyncio.create_task(stop(), name="stop-tracking")
    async with asyncio.timeout(10):
        await parking.wait()
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="25544"), timeout=30)
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not parked.is_set(), "the refusal came after the park; the window was not tested"
    stopped = await stopping
    assert stopped.status.phase == pb.PHASE_PARKED
    await station.stub.StartTracking(pb.StartTrackingRequest(catalog_id="25544"), timeout=30)


@pytest.mark.slow
def test_cli_tracks_one_pass_and_exits_zero_after_parking(
    hamlib_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`groundplane hil` follows the next ISS pass at 60× with rotctld and rigctld, prints the
    pass and progress, exits 0 after parking, and leaves the radio on a Doppler-corrected
    frequency below nominal (the satellite recedes at LOS)."""
    rot = hamlib_daemon("rotctld")
    rig = hamlib_daemon("rigctld")
    code = main(
        [
            "hil",
            "--elements",
            str(CATALOG),
            "--sat",
            "25544",
            "--site",
            f"{PUNTA_ARENAS.lat_deg},{PUNTA_ARENAS.lon_deg},{PUNTA_ARENAS.alt_m}",
            "--rotctld",
            f"127.0.0.1:{rot.port}",
            "--rigctld",
            f"127.0.0.1:{rig.port}",
            "--downlink-hz",
            str(DOWNLINK_HZ),
            "--start",
            START.isoformat(),
            "--speed",
            str(SPEED),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0].startswith("pass: 25544 AOS 2026-08-15T21:32")
    assert out.splitlines()[-1].startswith("finished: parked")

    async def read_frequency() -> float:
        async with RigClient("127.0.0.1", rig.port) as client:
            return await client.get_frequency()

    final_hz = asyncio.run(read_frequency())
    assert 0 < DOWNLINK_HZ - final_hz < MAX_DOPPLER_HZ
    assert math.isfinite(final_hz)


def test_cli_refuses_radio_flags_without_rigctld(capsys: pytest.CaptureFixture[str]) -> None:
    """--downlink-hz without --rigctld is an error naming the missing flag (exit 2)."""
    code = main(
        [
            "hil",
            "--elements",
            str(CATALOG),
            "--sat",
            "25544",
            "--site",
            "0,0",
            "--rotctld",
            "127.0.0.1:4533",
            "--downlink-hz",
            "437e6",
        ]
    )
    assert code == 2
    assert "--rigctld" in capsys.readouterr().err


async def test_metrics_count_commands_and_pointing_error_while_tracking(station: Station) -> None:
    """Scraped over HTTP while the ISS pass is tracked: tracking is active, the rotator's
    get_pos/set_pos and the radio's set_freq are counted, no command failed, the pointing error
    histogram has observations, nearly all within the 0.5° threshold plus the dummy rotator's
    step; after StopTracking parks, tracking is inactive and one pass ended."""
    controller = station.controller
    metrics = HilMetrics(
        rotator=controller.rotator, radio=controller.radio, status=lambda: controller.status
    )
    unsubscribe = metrics.watch(controller.hub)
    async with MetricsServer(metrics.registry, host="127.0.0.1", port=0) as served:
        idle = await samples(served.url)
        assert sample(idle, "groundplane_hil_tracking_active") == 0
        await station.stub.StartTracking(
            pb.StartTrackingRequest(catalog_id="25544", downlink_hz=DOWNLINK_HZ), timeout=30
        )
        tracked = 0
        async for update in station.stub.WatchStatus(pb.WatchStatusRequest(), timeout=60):
            tracked += update.status.phase == pb.PHASE_TRACKING
            if tracked >= 8:
                break
        during = await samples(served.url)
        await station.stub.StopTracking(pb.StopTrackingRequest(), timeout=30)
        after = await samples(served.url)
    unsubscribe()
    rotator, radio = {"device": "rotator"}, {"device": "radio"}
    assert sample(during, "groundplane_hil_tracking_active") == 1
    assert sample(during, "groundplane_hil_device_connected", **rotator) == 1
    assert sample(during, "groundplane_hil_commands_total", command="get_pos", **rotator) >= 2
    assert sample(during, "groundplane_hil_commands_total", command="set_pos", **rotator) >= 1
    assert sample(during, "groundplane_hil_commands_total", command="set_freq", **radio) >= 1
    for device in (rotator, radio):
        for kind in ("reply", "connection"):
            assert sample(during, "groundplane_hil_command_errors_total", kind=kind, **device) == 0
    observed = sample(during, "groundplane_hil_pointing_error_degrees_count")
    assert observed >= 1
    within = sample(during, "groundplane_hil_pointing_error_degrees_bucket", le="2.0")
    assert within >= 0.8 * observed, (within, observed)
    assert sample(after, "groundplane_hil_tracking_active") == 0
    assert sample(after, "groundplane_hil_passes_total", result="finished") == 1
    assert sample(after, "groundplane_hil_passes_total", result="failed") == 0


WRAPPED_DEG = 2 * math.degrees(math.asin(math.sin(math.radians(10.0)) * math.cos(math.radians(45))))


@pytest.mark.parametrize(
    ("one", "other", "expected_deg"),
    [
        ((10.0, 0.0), (20.0, 0.0), 10.0),  # along the horizon: the azimuth difference
        ((0.0, 90.0), (180.0, 90.0), 0.0),  # the zenith has every azimuth
        ((30.0, 40.0), (210.0, 140.0), 0.0),  # a flipped rotator points the same way
        (
            (350.0, 45.0),
            (370.0, 45.0),
            2 * math.degrees(math.asin(math.sin(math.radians(10)) / 2**0.5)),
        ),
        ((0.0, 0.0), (180.0, 0.0), 180.0),
    ],
)
def test_pointing_error_is_the_angle_between_directions(
    one: tuple[float, float], other: tuple[float, float], expected_deg: float
) -> None:
    """The pointing error is the great-circle angle between two look directions: azimuth wraps,
    the zenith has every azimuth, a flipped (elevation past 90°) rotator's direction is the
    same direction."""
    assert pointing_error_deg(*one, *other) == pytest.approx(expected_deg, abs=0.02)
