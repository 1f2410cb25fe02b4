"""In-process stand-ins for the node side of the handoff manager: a requester whose nodes keep
sessions in memory (with fencing), a directory fed by hand, and a pass source that can be told to
fail. Fast and deterministic where the broker-based system of ``conftest`` is realistic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.planner import PassSchedule, PassSource, PassWindow
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import DeadlineExceeded, FailedPrecondition, NotFound
from groundplane.node.directory import ONLINE, NodeDirectory
from groundplane.node.requester import InferOutcome, Requester
from groundplane.node.sessions import SessionState, Turn, decode_session, encode_session
from groundplane.node.v1 import node_pb2

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = "gs1"
BYTES_PER_TOKEN = 1_000


def answer_of(satellite_id: str, state: SessionState, prompt: str) -> str:
    """The fake model's answer: names the node and the context length it saw."""
    return f"{satellite_id} saw {len(state.turns)} turns, then {prompt!r}"


@dataclass
class FakeNodes:
    """Nodes that hold sessions by (session id → state) and refuse a fenced or unknown session.

    ``refuse`` lists satellites that answer every turn ``NOT_FOUND`` (as if they lost the
    session); ``import_delay_s`` is simulated seconds an import takes on each satellite. With
    ``export_rate_bps`` set, the exports from one satellite share its down link: one at a time,
    each occupying it ``state bytes × 8 / export_rate_bps`` simulated seconds.
    """

    clock: SimulatedClock
    held: dict[str, dict[str, SessionState]] = field(default_factory=dict)
    fences: dict[tuple[str, str], int] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    import_delay_s: dict[str, float] = field(default_factory=dict)
    imports_done: list[tuple[str, int]] = field(default_factory=list)
    export_rate_bps: float | None = None
    down_links: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def _wait(self, delay_s: float, deadline: datetime, what: str) -> None:
        budget_s = (deadline - self.clock.now()).total_seconds()
        await self.clock.sleep(min(delay_s, max(budget_s, 0.0)))
        if delay_s > budget_s:
            raise DeadlineExceeded(f"{what} got no reply before its deadline")

    def _state(self, satellite_id: str, session_id: str, model: str, epoch: int) -> SessionState:
        fence = self.fences.get((satellite_id, session_id), -1)
        state = self.held.get(satellite_id, {}).get(session_id)
        if state is None and epoch > fence and satellite_id not in self.refuse:
            state = SessionState(session_id, model, epoch)  # a session's first turn opens it
            self.held.setdefault(satellite_id, {})[session_id] = state
        if satellite_id in self.refuse or state is None:
            raise NotFound(f"no session {session_id!r} on {satellite_id}")
        if epoch <= fence or state.epoch != epoch:
            raise FailedPrecondition(f"session {session_id!r} moved away from {satellite_id}")
        return state

    async def infer(
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
    ) -> InferOutcome:
        await asyncio.sleep(0)
        if not request.session_id:
            text = f"{satellite_id} answers {request.prompt!r}"
            result = node_pb2.InferResult(text=text)
            return InferOutcome(satellite_id, station_id, request_id, 1, (text,), result)
        state = self._state(satellite_id, request.session_id, request.model, request.session_epoch)
        text = answer_of(satellite_id, state, request.prompt)
        self.held[satellite_id][request.session_id] = state.with_turn(Turn(request.prompt, text))
        result = node_pb2.InferResult(
            text=text,
            session_id=request.session_id,
            session_epoch=request.session_epoch,
            session_applied=True,
        )
        return InferOutcome(satellite_id, station_id, request_id, 1, (text,), result)

    async def export_session(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        *,
        deadline: datetime,
        fence_epoch: int | None = None,
        request_id: str | None = None,
    ) -> node_pb2.SessionExportResult:
        await asyncio.sleep(0)
        state = self.held.get(satellite_id, {}).get(session_id)
        if state is None:
            raise NotFound(f"no session {session_id!r} on {satellite_id}")
        if fence_epoch is not None:
            self.fences[(satellite_id, session_id)] = fence_epoch
        if self.export_rate_bps is not None:
            async with self.down_links.setdefault(satellite_id, asyncio.Lock()):
                bits = state.context_tokens * BYTES_PER_TOKEN * 8
                await self.clock.sleep(bits / self.export_rate_bps)
        snapshot = encode_session(state)
        return node_pb2.SessionExportResult(
            session_id=session_id,
            snapshot=snapshot,
            snapshot_bytes=len(snapshot),
            state_bytes=state.context_tokens * BYTES_PER_TOKEN,
            session_epoch=state.epoch,
            context_tokens=state.context_tokens,
        )

    async def import_session(
        self,
        satellite_id: str,
        station_id: str,
        snapshot: bytes,
        *,
        deadline: datetime,
        session_epoch: int | None = None,
        request_id: str | None = None,
    ) -> node_pb2.SessionImportResult:
        await self._wait(self.import_delay_s.get(satellite_id, 0.0), deadline, "import")
        state = decode_session(snapshot)
        if session_epoch is not None:
            state = state.with_epoch(session_epoch)
        self.held.setdefault(satellite_id, {})[state.session_id] = state
        self.imports_done.append((satellite_id, state.epoch))
        return node_pb2.SessionImportResult(session_id=state.session_id, session_epoch=state.epoch)

    async def fence_session(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        session_epoch: int,
        *,
        deadline: datetime,
        request_id: str | None = None,
    ) -> node_pb2.SessionFenceResult:
        await asyncio.sleep(0)
        self.fences[(satellite_id, session_id)] = session_epoch
        return node_pb2.SessionFenceResult(session_id=session_id, session_epoch=session_epoch)


class FlakyPasses:
    """A pass source that raises ``RuntimeError`` the next ``times`` calls made from a task whose
    name starts with ``task_prefix`` (armed with :meth:`fail`); ``raised`` counts them."""

    def __init__(self, inner: PassSource) -> None:
        self._inner = inner
        self._prefix = ""
        self._left = 0
        self.raised = 0

    def fail(self, task_prefix: str, times: int = 1) -> None:
        self._prefix, self._left = task_prefix, times

    def windows(self, start: datetime, stop: datetime) -> Sequence[PassWindow]:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        if self._left > 0 and name.startswith(self._prefix):
            self._left -= 1
            self.raised += 1
            raise RuntimeError("injected failure of the pass source")
        return self._inner.windows(start, stop)


def node_online(directory: NodeDirectory, satellite_id: str, models: tuple[str, ...]) -> None:
    directory.observe_status(
        node_pb2.NodeStatus(
            satellite_id=satellite_id, epoch=1, state=ONLINE, served_models=models, slots=4
        )
    )


def long_passes(*satellites: tuple[str, float]) -> PassSchedule:
    """One window per (satellite, seconds in view from just before ``EPOCH``)."""
    return PassSchedule(
        PassWindow(sat, STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=s))
        for sat, s in satellites
    )


@dataclass
class Harness:
    manager: HandoffManager
    task: asyncio.Task[None]
    nodes: FakeNodes
    directory: NodeDirectory
    clock: SimulatedClock
    store: HandoffStore


@contextlib.asynccontextmanager
async def running_manager(
    passes: PassSource,
    *,
    online: Sequence[str] = ("sat-a",),
    models: tuple[str, ...] = ("chat",),
    config: ManagerConfig | None = None,
    speed: float = 20.0,
    store: HandoffStore | None = None,
) -> AsyncIterator[Harness]:
    """A manager over :class:`FakeNodes` running in its own task until the block ends."""
    clock = SimulatedClock(EPOCH, speed=speed)
    directory = NodeDirectory()
    for sat in online:
        node_online(directory, sat, models)
    nodes = FakeNodes(clock)
    store = store or HandoffStore(":memory:")
    manager = HandoffManager(cast(Requester, nodes), directory, clock, store, passes, config=config)
    task = asyncio.create_task(manager.run(), name="test-handoff-manager")
    try:
        await manager.wait_ready()
        yield Harness(manager, task, nodes, directory, clock, store)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
