"""Child processes that stay up: start, readiness over gRPC health, restart, orderly stop.

:class:`Supervisor` runs one child process per :class:`ChildSpec` (``groundplane serve …`` in
``groundplane up``) and keeps it running:

* **start** (:meth:`Supervisor.start`): the child is spawned with
  ``asyncio.create_subprocess_exec`` in a session (and so a process group) of its own, so a
  terminal's Ctrl-C (SIGINT to the foreground process group) reaches only the supervisor, which
  stops the children in order. Its stdout and stderr go to ``<workdir>/<name>.log`` (appended,
  one marker line per spawn). ``start`` returns once the child's gRPC health ``Check`` of the
  ``readiness`` service answers SERVING (the health ``Watch`` stream is followed, so readiness is
  seen when it happens, not at the next poll); a child that exits first, or is not ready within
  ``ready_timeout_s``, is an error naming it (:class:`ChildFailedError`) with its log tail.
* **death of the supervisor**: every child asks the kernel for SIGTERM when its parent dies
  (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``). Not in a ``preexec_fn``: that makes Python
  ``fork`` instead of ``vfork``, and gRPC's fork handlers then abort the child (seen: SIGABRT,
  "epoll_wait error: Bad file descriptor") once the supervisor has a gRPC channel open. Instead
  the child process first runs a few lines of Python (``python -I -S -c``, ctypes) that make the
  call and ``exec`` the child's command: same process, and the request survives ``exec``. The
  signal follows the *thread* that spawned the child: children are spawned from the event loop's
  thread, which lives as long as the supervisor does. A child whose parent is already gone when
  it makes the call exits at once. On other systems there is no such call: only an orderly stop
  stops the children there.
* **restart**: a watcher task per child waits for its exit. An exit the supervisor did not ask
  for is logged (``child_exited`` with the return code or the signal), counted
  (:attr:`Supervisor.restarts`, :attr:`Supervisor.by_service`), and the child is spawned again
  with the same argv (so on the same port) after a :class:`~groundplane.mqtt.client.Backoff`
  delay that grows with the exits in the recent window, then awaited ready again (a respawn that
  is not ready in time is killed and counts as one more exit). A child that exits
  ``RestartPolicy.max_exits`` times within ``RestartPolicy.window_s`` makes the supervisor give
  up: the watcher raises :class:`ChildFailedError`, which cancels the ``async with`` body, stops
  the other children and leaves the ``async with`` as that error.
* **stop** (:meth:`Supervisor.stop`, also on leaving the ``async with``): the children in the
  reverse order of their start, one at a time: SIGTERM to the child's process group, up to
  ``stop_grace_s`` for it to exit (a groundplane service drains in that time), then SIGKILL to
  the group. Every child is waited for (reaped), so none is left behind.

Every task belongs to a named ``asyncio.TaskGroup`` and has a name; every wait has a timeout,
except a watcher's wait for its child's exit, which lasts as long as the child runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.kernel.lifetime import dying_with_parent
from groundplane.kernel.serving import READINESS
from groundplane.kernel.tls import open_channel
from groundplane.mqtt.client import Backoff

log = structlog.get_logger("groundplane.system.supervisor")

DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_STOP_GRACE_S = 10.0
KILL_WAIT_S = 10.0
"""Wall seconds to wait for a SIGKILLed child to be reaped."""
LOG_TAIL_LINES = 20
_HEALTH_CHANNEL_OPTIONS = (
    # gRPC reconnects to a not-yet-listening child with its own backoff (1 s first by default);
    # a child that comes up within a second is seen within about 0.1 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_HEALTH_RETRY = Backoff(base_s=0.1, factor=1.6, cap_s=1.0, jitter=0.2)
"""Between health ``Watch`` attempts that ended without SERVING (the stream broke)."""


class ChildFailedError(Unavailable):
    """A child did not become ready, or kept exiting, and the supervisor gave up on it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"child process {name!r}: {message}")
        self.name = name


@dataclass(frozen=True)
class ChildSpec:
    """One child process: how to run it and how to know it is ready.

    ``env`` is the child's whole environment (None: the supervisor's). ``health_target``
    (``host:port``) is where the child serves gRPC health; None: the child counts as ready once
    spawned.
    """

    name: str
    argv: Sequence[str]
    health_target: str | None
    env: Mapping[str, str] | None = None
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    stop_grace_s: float = DEFAULT_STOP_GRACE_S

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise InvalidArgument(f"a child needs a name without '/', got {self.name!r}")
        if not self.argv:
            raise InvalidArgument(f"child {self.name!r} needs a command, got an empty argv")
        for label, value in (
            ("ready_timeout_s", self.ready_timeout_s),
            ("stop_grace_s", self.stop_grace_s),
        ):
            if not value > 0:
                raise InvalidArgument(f"child {self.name!r}: {label} must be > 0, got {value}")


@dataclass(frozen=True)
class RestartPolicy:
    """How a child that exits is restarted, and when the supervisor gives up on it.

    The delay before a restart is ``backoff.delay_s(k)`` where ``k + 1`` is the number of the
    child's exits within the last ``window_s``; its ``max_exits``-th exit within the window
    makes the supervisor give up.
    """

    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, factor=2.0, cap_s=10.0))
    max_exits: int = 5
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_exits < 1 or not self.window_s > 0:
            raise InvalidArgument(
                f"expected max_exits ≥ 1 and window_s > 0, got {self.max_exits} and {self.window_s}"
            )


def describe_exit(returncode: int) -> dict[str, object]:
    """``returncode`` as log fields: ``{"returncode": 3}`` or ``{"signal": "SIGKILL"}``."""
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"returncode": returncode}


@dataclass
class _Child:
    spec: ChildSpec
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    spawns: int = 0
    ready_spawn: int = 0
    """The spawn number that last became ready (0: none yet)."""
    stopping: bool = False
    exits: deque[float] = field(default_factory=deque)
    watcher: asyncio.Task[None] | None = None


class Supervisor:
    """Starts child processes, keeps them up, stops them in reverse order.

    ::

        async with Supervisor(workdir) as supervisor:
            await supervisor.start(ChildSpec("tracking", argv, "127.0.0.1:50051"))
            ...  # leaving the block stops every child; a child given up on cancels the block
    """

    def __init__(
        self,
        workdir: Path,
        *,
        policy: RestartPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._workdir = workdir
        self._policy = policy or RestartPolicy()
        self._rng = rng or random.Random()
        self._children: dict[str, _Child] = {}
        self._order: list[str] = []
        self._group: asyncio.TaskGroup | None = None
        self._stopping = False
        self._counted: dict[str, int] = {}
        self._readiness = asyncio.Condition()
        self.restarts = 0
        """Unexpected exits of all children (each followed by a restart, or by giving up)."""

    # -- what is running ----------------------------------------------------------------------

    @property
    def by_service(self) -> dict[str, int]:
        """Unexpected exits per child name (every started child, 0 when it never exited)."""
        return dict(self._counted)

    def summary(self) -> dict[str, object]:
        """``{"restarts": N, "by_service": {name: n, …}}`` for the run's summary."""
        return {"restarts": self.restarts, "by_service": self.by_service}

    def pid(self, name: str) -> int | None:
        """The running process id of child ``name`` (None between an exit and its restart)."""
        child = self._child(name)
        process = child.process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    def pids(self) -> dict[str, int]:
        """Process id of every child running now."""
        return {name: pid for name in self._order if (pid := self.pid(name)) is not None}

    def spawns(self, name: str) -> int:
        """How many times child ``name`` was spawned (1 until its first restart)."""
        return self._child(name).spawns

    async def wait_ready_after(self, name: str, spawn: int, timeout_s: float) -> int:
        """Wait until a spawn of ``name`` later than number ``spawn`` is ready; its pid."""
        child = self._child(name)
        async with asyncio.timeout(timeout_s), self._readiness:
            await self._readiness.wait_for(lambda: child.ready_spawn > spawn)
        process = child.process
        assert process is not None
        return process.pid

    def log_path(self, name: str) -> Path:
        return self._child(name).log_path

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self._child(name).log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def names(self) -> list[str]:
        """Children in start order."""
        return list(self._order)

    def _child(self, name: str) -> _Child:
        try:
            return self._children[name]
        except KeyError:
            raise InvalidArgument(
                f"no child named {name!r}; started: {', '.join(self._order) or 'none'}"
            ) from None

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._workdir.mkdir(parents=True, exist_ok=True)
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group = self._group
        assert group is not None, "__aexit__ without __aenter__"
        try:
            await self.stop()
        finally:
            try:
                await group.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as errors:
                # A watcher that gave up: leave as that error, not as a group of one.
                failed, _rest = errors.split(ChildFailedError)
                if failed is not None:
                    first = failed.exceptions[0]
                    while isinstance(first, BaseExceptionGroup):
                        first = first.exceptions[0]
                    raise first from errors
                raise

    async def start(self, spec: ChildSpec) -> int:
        """Spawn ``spec``'s child, wait until it is ready, watch it; returns its process id."""
        group = self._group
        if group is None:
            raise RuntimeError("start() outside `async with Supervisor(...)`")
        if self._stopping:
            raise Unavailable(f"the supervisor is stopping; {spec.name!r} not started")
        if spec.name in self._children:
            raise InvalidArgument(f"a child named {spec.name!r} was already started")
        child = _Child(spec, self._workdir / f"{spec.name}.log")
        self._children[spec.name] = child
        self._order.append(spec.name)
        self._counted[spec.name] = 0
        process = await self._spawn(child)
        try:
            await self._await_ready(child, process)
        except BaseException:
            child.stopping = True
            await self._terminate(child)
            raise
        await self._mark_ready(child)
        child.watcher = group.create_task(self._watch(child), name=f"supervisor-watch:{spec.name}")
        return process.pid

    async def stop(self) -> None:
        """Stop every child, last started first (SIGTERM, grace, SIGKILL); idempotent."""
        self._stopping = True
        for name in reversed(self._order):
            child = self._children[name]
            child.stopping = True
            watcher = child.watcher
            if watcher is not None and not watcher.done():
                watcher.cancel()
                # The watcher only waits (exit, backoff, readiness): it ends at the cancel.
                await asyncio.wait({watcher}, timeout=KILL_WAIT_S)
            await self._terminate(child)

    # -- one child ----------------------------------------------------------------------------

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        spec = child.spec
        child.spawns += 1
        env = dict(os.environ if spec.env is None else spec.env)
        with child.log_path.open("ab") as output:
            _mark(output, f"spawn {child.spawns} of {spec.name}: {' '.join(spec.argv)}")
            process = await asyncio.create_subprocess_exec(
                *dying_with_parent(spec.argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own session and process group: the terminal's SIGINT is not for it.
                start_new_session=True,
            )
        child.process = process
        log.info(
            "child_started",
            child=spec.name,
            pid=process.pid,
            spawn=child.spawns,
            log=str(child.log_path),
        )
        return process

    async def _await_ready(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        """Return once ``process`` is ready; ChildFailedError if it exits or times out first."""
        spec = child.spec
        if spec.health_target is None:
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(spec.ready_timeout_s), asyncio.TaskGroup() as race:
                exited = race.create_task(process.wait(), name=f"supervisor-exit:{spec.name}")
                ready = race.create_task(
                    _watch_until_serving(spec.health_target), name=f"supervisor-ready:{spec.name}"
                )
                await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
                exited.cancel()
                ready.cancel()
        except TimeoutError:
            raise ChildFailedError(
                spec.name,
                f"not ready (gRPC health {READINESS!r} at {spec.health_target} not SERVING) "
                f"within {spec.ready_timeout_s:g} s; log {child.log_path}, tail:\n"
                f"{self.log_tail(spec.name)}",
            ) from None
        if process.returncode is not None:
            raise ChildFailedError(
                spec.name,
                f"exited ({_exit_text(process.returncode)}) before it was ready; log "
                f"{child.log_path}, tail:\n{self.log_tail(spec.name)}",
            )
        log.info(
            "child_ready",
            child=spec.name,
            pid=process.pid,
            target=spec.health_target,
            after_s=round(time.monotonic() - started, 3),
        )

    async def _watch(self, child: _Child) -> None:
        """Restart ``child`` whenever it exits on its own; give up after too many exits."""
        spec, policy = child.spec, self._policy
        while True:
            process = child.process
            assert process is not None
            # A child's life has no deadline: this wait lasts as long as it runs.
            returncode = await process.wait()
            if child.stopping:
                return
            _kill_group(process.pid)  # anything the child left in its group
            now = time.monotonic()
            child.exits.append(now)
            while child.exits and child.exits[0] < now - policy.window_s:
                child.exits.popleft()
            self.restarts += 1
            self._counted[spec.name] += 1
            log.warning(
                "child_exited",
                child=spec.name,
                pid=process.pid,
                **describe_exit(returncode),
                exits_in_window=len(child.exits),
            )
            if len(child.exits) >= policy.max_exits:
                log.error("child_given_up", child=spec.name, exits=len(child.exits))
                raise ChildFailedError(
                    spec.name,
                    f"exited {len(child.exits)} times within {policy.window_s:g} s (last: "
                    f"{_exit_text(returncode)}); giving up. Log {child.log_path}, tail:\n"
                    f"{self.log_tail(spec.name)}",
                )
            delay_s = policy.backoff.delay_s(len(child.exits) - 1, self._rng)
            log.info("child_restarting", child=spec.name, delay_s=round(delay_s, 3))
            await asyncio.sleep(delay_s)
            respawned = await self._spawn(child)
            try:
                await self._await_ready(child, respawned)
                await self._mark_ready(child)
            except ChildFailedError as error:
                log.warning("child_not_ready", child=spec.name, error=error.message)
                _signal_group(respawned.pid, signal.SIGKILL)

    async def _mark_ready(self, child: _Child) -> None:
        async with self._readiness:
            child.ready_spawn = child.spawns
            self._readiness.notify_all()

    async def _terminate(self, child: _Child) -> None:
        """SIGTERM the child's group, wait ``stop_grace_s``, SIGKILL; the child is reaped."""
        process = child.process
        if process is None:
            return
        spec = child.spec
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(spec.stop_grace_s):
                    await process.wait()
            except TimeoutError:
                log.warning("child_stop_timed_out", child=spec.name, grace_s=spec.stop_grace_s)
        _kill_group(process.pid)
        if process.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await process.wait()
        if process.returncode is not None:
            log.info(
                "child_stopped",
                child=spec.name,
                pid=process.pid,
                **describe_exit(process.returncode),
            )


async def _watch_until_serving(target: str) -> None:
    """Follow gRPC health ``Watch`` of ``readiness`` at ``target`` until it is SERVING."""
    serving = health_pb2.HealthCheckResponse.SERVING
    attempt = 0
    rng = random.Random()
    async with open_channel(target, options=_HEALTH_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                # wait_for_ready: the call waits for the child to listen (the channel reconnects).
                stream = stub.Watch(
                    health_pb2.HealthCheckRequest(service=READINESS), wait_for_ready=True
                )
                async for response in stream:
                    if response.status == serving:
                        stream.cancel()
                        return
            except grpc.aio.AioRpcError as error:
                log.debug("health_watch_failed", target=target, code=error.code().name)
            await asyncio.sleep(_HEALTH_RETRY.delay_s(attempt, rng))
            attempt += 1


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the child's own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)


def _mark(output: IO[bytes], text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output.write(f"# {stamp} groundplane supervisor: {text}\n".encode())
    output.flush()


def _exit_text(returncode: int) -> str:
    fields = describe_exit(returncode)
    if "signal" in fields:
        return f"killed by {fields['signal']}"
    return f"exit status {returncode}"
