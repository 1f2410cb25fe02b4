"""The supervisor with real child processes: readiness, restart, giving up, orderly stop, no orphan.

Children are ``groundplane serve tracking`` (SERVING on readiness at start) and a tiny Python
service (``supervised_child.py``: gRPC health, exits or records the signals it gets on request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.mqtt.broker import free_loopback_port
from groundplane.mqtt.client import Backoff
from groundplane.system.supervisor import (
    ChildFailedError,
    ChildSpec,
    RestartPolicy,
    Supervisor,
    describe_exit,
)

pytestmark = pytest.mark.slow

GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
HERE = Path(__file__).parent
CHILD = str(HERE / "supervised_child.py")
HOST = str(HERE / "supervisor_host.py")
#: Generous: a cold start imports numpy, grpc and sgp4 on 2 shared cores.
READY_S = 90.0
GONE_S = 20.0
FAST = RestartPolicy(backoff=Backoff(base_s=0.05, factor=1.5, cap_s=0.2), max_exits=3)


def tracking(name: str, port: int) -> ChildSpec:
    return ChildSpec(
        name=name,
        argv=[
            GROUNDPLANE,
            "serve",
            "tracking",
            "--port",
            str(port),
            "--db",
            ":memory:",
            "--unready-delay",
            "0",
            "--log-format",
            "json",
        ],
        health_target=f"127.0.0.1:{port}",
        ready_timeout_s=READY_S,
        stop_grace_s=10.0,
    )


def tiny(name: str, port: int, *extra: str, stop_grace_s: float = 10.0) -> ChildSpec:
    return ChildSpec(
        name=name,
        argv=[sys.executable, CHILD, "--port", str(port), "--name", name, *extra],
        health_target=f"127.0.0.1:{port}",
        ready_timeout_s=READY_S,
        stop_grace_s=stop_grace_s,
    )


async def readiness(port: int) -> int:
    """The ``readiness`` health status at ``port`` (one Check, no waiting for the server)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=5.0
        )
    return int(response.status)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not terminated (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def wait_gone(pid: int, timeout_s: float = GONE_S) -> None:
    """Return once process ``pid`` has terminated (its pidfd turns readable), or fail."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(timeout_s):
            await exited.wait()
    except TimeoutError:
        pytest.fail(f"process {pid} still runs {timeout_s} s later")
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    assert not alive(pid)


async def test_start_returns_ready_children_and_stop_leaves_none(tmp_path: Path) -> None:
    """start() returns only when the child's readiness is SERVING; leaving the block stops every
    child and each pid is gone; their output is in <workdir>/<name>.log; no restart counted."""
    port_a, port_b = free_loopback_port(), free_loopback_port()
    async with Supervisor(tmp_path) as supervisor:
        pid_a = await supervisor.start(tracking("tracking", port_a))
        assert await readiness(port_a) == health_pb2.HealthCheckResponse.SERVING
        pid_b = await supervisor.start(tiny("tiny", port_b))
        assert await readiness(port_b) == health_pb2.HealthCheckResponse.SERVING
        assert supervisor.pids() == {"tracking": pid_a, "tiny": pid_b}
        assert alive(pid_a)
        assert alive(pid_b)
    assert not alive(pid_a)
    assert not alive(pid_b)
    assert supervisor.summary() == {"restarts": 0, "by_service": {"tracking": 0, "tiny": 0}}
    assert f"tracking serving on 127.0.0.1:{port_a}" in (tmp_path / "tracking.log").read_text()
    assert f"child serving on 127.0.0.1:{port_b}" in (tmp_path / "tiny.log").read_text()


async def test_a_killed_child_is_restarted_on_its_port_and_counted(tmp_path: Path) -> None:
    """kill -9 of a child: it is spawned again with the same argv, serves on the same port
    again, and the restart is counted for it (and logged in its log file)."""
    port = free_loopback_port()
    async with Supervisor(tmp_path, policy=FAST) as supervisor:
        first = await supervisor.start(tracking("tracking", port))
        os.kill(first, signal.SIGKILL)
        second = await supervisor.wait_ready_after("tracking", 1, READY_S)
        assert second != first
        assert not alive(first)
        assert await readiness(port) == health_pb2.HealthCheckResponse.SERVING
        assert supervisor.summary() == {"restarts": 1, "by_service": {"tracking": 1}}
        assert supervisor.spawns("tracking") == 2
    assert not alive(second)
    assert "spawn 2 of tracking" in (tmp_path / "tracking.log").read_text()


async def test_a_crash_looping_child_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    """A child that keeps exiting is restarted until its max_exits-th exit within the window;
    then the block is cancelled and left with ChildFailedError naming the child, and the other
    children are stopped too."""
    steady_port, flaky_port = free_loopback_port(), free_loopback_port()
    body_cancelled = False
    with pytest.raises(ChildFailedError, match=r"'flaky'.*exited 3 times") as caught:
        async with Supervisor(tmp_path, policy=FAST) as supervisor:
            steady = await supervisor.start(tiny("steady", steady_port))
            await supervisor.start(tiny("flaky", flaky_port, "--exit-after", "0.5"))
            try:
                await asyncio.sleep(READY_S)
            except asyncio.CancelledError:
                body_cancelled = True
                raise
    assert body_cancelled
    assert caught.value.name == "flaky"
    assert "exit status 3" in caught.value.message
    assert supervisor.summary() == {"restarts": 3, "by_service": {"steady": 0, "flaky": 3}}
    assert not alive(steady)
    assert supervisor.pids() == {}


async def test_a_child_that_exits_before_ready_fails_start(tmp_path: Path) -> None:
    """start() of a child that exits before it is ready raises ChildFailedError with the exit
    status and the tail of its log."""
    spec = ChildSpec(
        "broken",
        [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(2)"],
        health_target=f"127.0.0.1:{free_loopback_port()}",
    )
    async with Supervisor(tmp_path) as supervisor:
        with pytest.raises(ChildFailedError, match=r"'broken'.*exit status 2") as caught:
            await supervisor.start(spec)
    assert "bad flag --nope" in caught.value.message


async def test_a_child_never_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    """A child whose readiness stays NOT_SERVING fails start() after ready_timeout_s and is not
    left running."""
    port = free_loopback_port()
    spec = ChildSpec(
        "stuck",
        [sys.executable, CHILD, "--port", str(port), "--never-ready"],
        health_target=f"127.0.0.1:{port}",
        ready_timeout_s=8.0,
    )
    async with Supervisor(tmp_path) as supervisor:
        with pytest.raises(ChildFailedError, match="'stuck': not ready"):
            await supervisor.start(spec)
        assert supervisor.pids() == {}


async def test_stop_is_reverse_order_one_at_a_time_then_sigkill(tmp_path: Path) -> None:
    """stop: the last started child gets SIGTERM first and has exited before the next gets its
    SIGTERM; a child that ignores SIGTERM is SIGKILLed after its grace."""
    record = tmp_path / "signals.txt"
    ports = [free_loopback_port() for _ in range(3)]
    async with Supervisor(tmp_path / "work") as supervisor:
        first = await supervisor.start(
            tiny("first", ports[0], "--record", str(record), "--term-delay", "0.3")
        )
        second = await supervisor.start(
            tiny("second", ports[1], "--record", str(record), "--term-delay", "0.3")
        )
        deaf = await supervisor.start(
            tiny("deaf", ports[2], "--record", str(record), "--ignore-term", stop_grace_s=1.0)
        )
    assert record.read_text().splitlines() == [
        "deaf SIGTERM",
        "second SIGTERM",
        "second exit",
        "first SIGTERM",
        "first exit",
    ]
    for pid in (first, second, deaf):
        assert not alive(pid)


@contextlib.asynccontextmanager
async def hosted(
    tmp_path: Path, specs: list[ChildSpec]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, int]]]:
    """A supervisor in a process (and session) of its own running ``specs``; yields it and the
    children's pids once they are ready."""
    payload = json.dumps(
        [{"name": s.name, "argv": list(s.argv), "health_target": s.health_target} for s in specs]
    )
    with (tmp_path / "host.log").open("wb") as stderr:
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            HOST,
            str(tmp_path / "host"),
            payload,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    assert host.stdout is not None
    try:
        async with asyncio.timeout(READY_S * len(specs)):
            line = (await host.stdout.readline()).decode()
        if not line.startswith("pids "):
            pytest.fail(f"host did not start: {line!r}, {(tmp_path / 'host.log').read_text()}")
        yield host, json.loads(line.removeprefix("pids "))
    finally:
        if host.returncode is None:
            host.kill()
        await host.wait()


async def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL of the supervisor's process (no orderly stop): the kernel SIGTERMs each child
    (PR_SET_PDEATHSIG) and every child process is gone soon after."""
    specs = [tiny("a", free_loopback_port()), tracking("tracking", free_loopback_port())]
    async with hosted(tmp_path, specs) as (host, pids):
        assert set(pids) == {"a", "tracking"}
        for pid in pids.values():
            assert alive(pid)
        host.kill()
        for pid in pids.values():
            await wait_gone(pid)


async def test_ctrl_c_reaches_children_only_through_the_orderly_stop(tmp_path: Path) -> None:
    """SIGINT to the supervisor's whole process group (what a terminal's Ctrl-C does): the
    children, in sessions of their own, get no SIGINT; the supervisor SIGTERMs them in reverse
    order and exits 0; no child is left."""
    record = tmp_path / "signals.txt"
    specs = [
        tiny(name, free_loopback_port(), "--record", str(record), "--term-delay", "0.2")
        for name in ("a", "b")
    ]
    async with hosted(tmp_path, specs) as (host, pids):
        os.killpg(host.pid, signal.SIGINT)
        async with asyncio.timeout(GONE_S):
            assert await host.wait() == 0
        for pid in pids.values():
            await wait_gone(pid)
    assert record.read_text().splitlines() == ["b SIGTERM", "b exit", "a SIGTERM", "a exit"]


def test_exit_descriptions() -> None:
    """A return code reads as a status, a negative one as the signal that killed the child."""
    assert describe_exit(3) == {"returncode": 3}
    assert describe_exit(-9) == {"signal": "SIGKILL"}
