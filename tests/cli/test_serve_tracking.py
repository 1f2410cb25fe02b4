"""``groundplane serve tracking`` as a process: where its catalog lives, how old elements may be."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..data import DATA
from ..processes import Served, serve

ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: Simulated "now" of the service: months after the shipped elements' August-2026 epochs.
LATE = datetime(2026, 12, 2, tzinfo=UTC)
#: Generous: a cold start imports numpy, grpc and sgp4 and loads 636 element sets.
START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0


@dataclass
class Tracking:
    served: Served
    cwd: Path
    state_home: Path

    @property
    def lines(self) -> list[str]:
        return self.served.lines

    @property
    def target(self) -> str:
        return self.served.target


@asynccontextmanager
async def _serve(tmp_path: Path, *extra: str) -> AsyncIterator[Tracking]:
    cwd = tmp_path / "work"
    state_home = tmp_path / "state"
    cwd.mkdir()
    async with serve(
        "tracking",
        "--port",
        "0",
        "--elements",
        ELEMENTS,
        "--sites",
        str(DATA / "ground-stations.csv"),
        "--start",
        LATE.isoformat(),
        "--unready-delay",
        "0",
        "--log-format",
        "json",
        *extra,
        stderr_path=tmp_path / "stderr.log",
        start_timeout_s=START_TIMEOUT_S,
        env={**os.environ, "XDG_STATE_HOME": str(state_home)},
        cwd=cwd,
    ) as served:
        yield Tracking(served, cwd, state_home)
        await served.stop(START_TIMEOUT_S)


async def _look(target: str) -> pb.GetLookAnglesResponse:
    stamp = Timestamp()
    stamp.FromDatetime(LATE)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        response: pb.GetLookAnglesResponse = await stub.GetLookAngles(
            pb.GetLookAnglesRequest(
                catalog_ids=["25544"], sites=pb.SiteSelector(site_ids=["0"]), times=[stamp]
            ),
            timeout=CALL_TIMEOUT_S,
        )
        return response


async def test_default_catalog_lives_in_the_state_dir_and_stale_elements_name_the_flag(
    tmp_path: Path,
) -> None:
    """Without --db the catalog is $XDG_STATE_HOME/groundplane/tracking.sqlite3 (created, and
    printed), nothing is written to the current directory; elements 3½ months old are refused
    with FAILED_PRECONDITION naming --max-element-age-days."""
    async with _serve(tmp_path) as served:
        db = served.state_home / "groundplane" / "tracking.sqlite3"
        assert f"tracking catalog in {db}" in served.lines
        assert db.exists()
        assert list(served.cwd.iterdir()) == []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _look(served.target)
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "--max-element-age-days" in (caught.value.details() or "")


async def test_max_element_age_flag_lets_the_service_use_old_elements(tmp_path: Path) -> None:
    """With --max-element-age-days 200 the same request is answered (with an age warning)."""
    async with _serve(tmp_path, "--max-element-age-days", "200", "--db", ":memory:") as served:
        assert "tracking catalog in :memory:" in served.lines
        response = await _look(served.target)
        (angle,) = response.look_angles
        assert angle.catalog_id == "25544"
        assert any("days old" in warning for warning in response.warnings)
