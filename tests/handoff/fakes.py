"""In-process stand-ins for the node side of the handoff manager: a node port whose nodes keep
sessions in memory (with fencing), a directory fed by hand, and a pass source that can be told to
fail. Fast and deterministic where the broker-based system of ``conftest`` is realistic."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.nodes import (
    ExportedState,
    SessionSnapshot,
    Turn,
    TurnAnswer,
)
from groundplane.handoff.planner import PassSchedule, PassSource, PassWindow
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    NotFound,
)
from groundplane.node.directory import ONLINE, NodeDirectory
from groundplane.node.v1 import node_pb2

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = "gs1"
BYTES_PER_TOKEN = 1_000


def answer_of(satellite_id: str, turns_seen: int, prompt: str) -> str:
    """The fake model's answer: names the node and the context length it saw."""
    return f"{satellite_id} saw {turns_seen} turns, then {prompt!r}"


@dataclass
class FakeNodes:
    """A :class:`NodePort` whose nodes hold sessions by (session id → snapshot) and refuse a
    fenced or unknown session.

    ``refuse`` lists satellites that answer every turn ``NOT_FOUND`` (as if they lost the
    session); ``export_error`` fails every export once the session is fenced;
    ``import_delay_s`` is simulated seconds an import takes on each satellite. With
    ``export_rate_bps`` set, the exports from one satellite share its down link: one at a time,
    each occupying it ``state bytes × 8 / export_rate_bps`` simulated seconds.
    """

    clock: SimulatedClock
    held: dict[str, dict[str, SessionSnapshot]] = field(default_factory=dict)
    fences: dict[tuple[str, str], int] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    import_delay_s: dict[str, float] = field(default_factory=dict)
    imports_done: list[tuple[str, int]] = field(default_factory=list)
    export_rate_bps: float | None = None
    down_links: dict[str, asyncio.Lock] = field(default_factory=dict)
    export_error: GroundplaneError | None = None
    """Raised by every export after fencing (as a node whose snapshot cannot be read)."""
    prompt_delay_s: dict[str, float] = field(default_factory=dict)
    """Simulated seconds a prompt's answer takes to come back from each satellite."""
    lose_replies: set[str] = field(default_factory=set)
    """Request ids whose next reply is lost after the prompt ran (the caller sees
    DeadlineExceeded, as when an answer misses its deadline); each is lost once."""
    executions: list[tuple[str, str]] = field(default_factory=list)
    """Every run of a prompt as (satellite, request id); a request id seen before on a
    satellite is answered from its first run there, as a node engine de-duplicates."""
    prompt_results: dict[tuple[str, str], str] = field(default_factory=dict)

    async def _wait(self, delay_s: float, deadline: datetime, what: str) -> None:
        budget_s = (deadline - self.clock.now()).total_seconds()
        await self.clock.sleep(min(delay_s, max(budget_s, 0.0)))
        if delay_s > budget_s:
            raise DeadlineExceeded(f"{what} got no reply before its deadline")

    def _state(self, satellite_id: str, session_id: str, model: str, epoch: int) -> SessionSnapshot:
        fence = self.fences.get((satellite_id, session_id), -1)
        state = self.held.get(satellite_id, {}).get(session_id)
        if state is None and epoch > fence and satellite_id not in self.refuse:
            state = SessionSnapshot(session_id, model, epoch, ())  # a first turn opens it
            self.held.setdefault(satellite_id, {})[session_id] = state
        if satellite_id in self.refuse or state is None:
            raise NotFound(f"no session {session_id!r} on {satellite_id}")
        if epoch <= fence or state.epoch != epoch:
            raise FailedPrecondition(f"session {session_id!r} moved away from {satellite_id}")
        return state

    async def run_turn(
        self,
        satellite_id: str,
        station_id: str,
        *,
        session_id: str,
        epoch: int,
        model: str,
        prompt: str,
        max_tokens: int,
        request_id: str,
        deadline: datetime,
    ) -> TurnAnswer:
        await asyncio.sleep(0)
        state = self._state(satellite_id, session_id, model, epoch)
        text = answer_of(satellite_id, len(state.turns), prompt)
        turns = (*state.turns, Turn(prompt, text))
        self.held[satellite_id][session_id] = dataclasses.replace(state, turns=turns)
        return TurnAnswer(text, applied=True, epoch=epoch)

    async def run_prompt(
        self,
        satellite_id: str,
        station_id: str,
        *,
        model: str,
        prompt: str,
        max_tokens: int,
        request_id: str,
        deadline: datetime,
    ) -> str:
        await asyncio.sleep(0)
        key = (satellite_id, request_id)
        if key not in self.prompt_results:
            self.executions.append(key)
            self.prompt_results[key] = f"{satellite_id} answers {prompt!r}"
        await self._wait(self.prompt_delay_s.get(satellite_id, 0.0), deadline, request_id)
        if request_id in self.lose_replies:
            self.lose_replies.discard(request_id)
            raise DeadlineExceeded(f"the reply to {request_id!r} was lost; it may have run")
        return self.prompt_results[key]

    async def export_state(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        *,
        fence_epoch: int,
        request_id: str,
        deadline: datetime,
    ) -> ExportedState:
        await asyncio.sleep(0)
        state = self.held.get(satellite_id, {}).get(session_id)
        if state is None:
            raise NotFound(f"no session {session_id!r} on {satellite_id}")
        self.fences[(satellite_id, session_id)] = fence_epoch
        if self.export_error is not None:
            raise self.export_error
        tokens = sum(turn.tokens for turn in state.turns)
        if self.export_rate_bps is not None:
            async with self.down_links.setdefault(satellite_id, asyncio.Lock()):
                await self.clock.sleep(tokens * BYTES_PER_TOKEN * 8 / self.export_rate_bps)
        return ExportedState(
            dataclasses.replace(state, epoch=fence_epoch), tokens * BYTES_PER_TOKEN, tokens
        )

    async def import_state(
        self,
        satellite_id: str,
        station_id: str,
        snapshot: SessionSnapshot,
        *,
        request_id: str,
        deadline: datetime,
    ) -> None:
        await self._wait(self.import_delay_s.get(satellite_id, 0.0), deadline, "import")
        self.held.setdefault(satellite_id, {})[snapshot.session_id] = snapshot
        self.imports_done.append((satellite_id, snapshot.epoch))

    async def fence(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        epoch: int,
        *,
        deadline: datetime,
    ) -> None:
        await asyncio.sleep(0)
        self.fences[(satellite_id, session_id)] = epoch

    def checkpoint_bytes(self, snapshot: SessionSnapshot) -> bytes:
        return repr(snapshot).encode()


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
    manager = HandoffManager(nodes, directory, clock, store, passes, config=config)
    task = asyncio.create_task(manager.run(), name="test-handoff-manager")
    try:
        await manager.wait_ready()
        yield Harness(manager, task, nodes, directory, clock, store)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
