"""``groundplane serve SERVICE`` as a child process of a test: start it, read where it serves,
await its readiness, stop it with SIGTERM.

Imported as the tests import :mod:`tests.data` (``from ..processes import serve``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.serving import READINESS

GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
"""The ``groundplane`` command of the test's interpreter."""
STDERR_TAIL = 3000
"""Characters of the child's stderr a failure shows."""


@dataclass
class Served:
    """A running ``serve`` child: its stdout lines up to the ``serving on`` line, its target."""

    process: asyncio.subprocess.Process
    lines: list[str]
    target: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logged(self, event: str) -> dict[str, Any]:
        """The first JSON log line of ``event`` on the child's stderr."""
        for line in self.stderr().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                record: dict[str, Any] = json.loads(line)
                if record.get("event") == event:
                    return record
        raise AssertionError(f"no {event!r} log line: {self.stderr()[-2000:]}")

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM; the child must exit with status 0 within ``timeout_s``."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            status = await self.process.wait()
        assert status == 0, self.stderr()[-STDERR_TAIL:]


@asynccontextmanager
async def serve(
    service: str,
    *args: str,
    stderr_path: Path,
    start_timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[Served]:
    """``groundplane serve SERVICE ARGS`` until it prints ``SERVICE serving on HOST:PORT``
    (within ``start_timeout_s``; an earlier exit fails the test). The child's stderr goes to
    ``stderr_path``; ``env`` defaults to this process's environment. A ``--broker URL`` among
    ``args`` goes in the child's ``GROUNDPLANE_BROKER`` instead (as ``up`` passes it: a URL
    with a password is refused on a command line). Killed if the block leaves it running."""
    argv, child_env = list(args), dict(os.environ if env is None else env)
    if "--broker" in argv:
        at = argv.index("--broker")
        child_env["GROUNDPLANE_BROKER"] = argv[at + 1]
        del argv[at : at + 2]
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            GROUNDPLANE,
            "serve",
            service,
            *argv,
            env=child_env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    ready_line = f"{service} serving on "
    lines: list[str] = []
    try:
        async with asyncio.timeout(start_timeout_s):
            while not (lines and lines[-1].startswith(ready_line)):
                line = (await process.stdout.readline()).decode()
                if not line:
                    status = await process.wait()
                    pytest.fail(
                        f"serve {service} exited early (status {status}): "
                        f"{stderr_path.read_text(errors='replace')[-STDERR_TAIL:]}"
                    )
                lines.append(line.strip())
        yield Served(process, lines, lines[-1].rsplit(" ", 1)[1], stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def readiness(target: str, timeout_s: float, service: str = READINESS) -> int:
    """The health status of ``service`` (readiness by default) at ``target``."""
    async with grpc.aio.insecure_channel(target) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    return int(response.status)


async def wait_serving(target: str, timeout_s: float, service: str = READINESS) -> None:
    """Until ``service`` (readiness by default) at ``target`` reports SERVING (health Watch:
    the server pushes every change), within ``timeout_s``."""
    async with grpc.aio.insecure_channel(target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
        async for response in stream:
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                stream.cancel()
                return
    pytest.fail(f"{service or 'the server'} never became SERVING")
