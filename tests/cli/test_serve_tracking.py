"""``groundplane serve tracking`` as a process: where its catalog lives, how old elements may be."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
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

GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: Simulated "now" of the service: months after the shipped elements' August-2026 epochs.
LATE = datetime(2026, 12, 2, tzinfo=UTC)
#: Generous: a cold start imports numpy, grpc and sgp4 and loads 636 element sets.
START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    lines: list[str]
    target: str
    cwd: Path
    state_home: Path


@asynccontextmanager
async def _serve(tmp_path: Path, *extra: str) -> AsyncIterator[Served]:
    cwd = tmp_path / "work"
    state_home = tmp_path / "state"
    cwd.mkdir()
    stderr_path = tmp_path / "stderr.log"
    stderr = stderr_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        GROUNDPLANE,
        "serve",
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
        cwd=cwd,
        env={**os.environ, "XDG_STATE_HOME": str(state_home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (lines and lines[-1].startswith("tracking serving on ")):
                line = (await process.stdout.readline()).decode()
                if not line:
                    status = await process.wait()
                    pytest.fail(
                        f"serve tracking exited early (status {status}): "
                        f"{stderr_path.read_text(errors='replace')[-2000:]}"
                    )
                lines.append(line.strip())
        yield Served(process, lines, lines[-1].rsplit(" ", 1)[1], cwd, state_home)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(START_TIMEOUT_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()


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
