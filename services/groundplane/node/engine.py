"""The node's serving engine: slots, a bounded queue, de-duplication and sessions.

A request is admitted (or rejected at once with a clear error), waits in the queue for its session
(turns of one session run one after another, each seeing the previous ones) and for one of a fixed
number of slots, then streams from the backend. Each admitted request becomes one *execution*,
a task owned by the engine's TaskGroup and named after the request id:

- a duplicate that arrives while the execution is queued or running joins it (same pieces, same
  result); a duplicate that arrives after it finished gets the stored result again, for
  ``result_ttl_s`` of the clock's time (bounded by ``max_cached_results``). A failed execution is
  not stored: nothing was produced, so a retry runs again.
- callers that go away do not cancel an execution (a retry can still join it); closing the engine
  through an exception or cancellation cancels them all.
- ``drain`` stops admission (new work gets Unavailable; joins and stored results still answer),
  lets queued and running work finish, then returns.

Sessions follow :mod:`groundplane.node.sessions`: a finished turn is appended only if the session
is still at the epoch the turn started under; results carry that epoch so callers can reject work
done under a superseded one.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType

import structlog

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.backends import GenerateRequest, InferenceBackend
from groundplane.node.sessions import (
    SessionState,
    SessionStore,
    Turn,
    decode_session,
    encode_session,
)

log = structlog.get_logger("groundplane.node.engine")

DEFAULT_BYTES_PER_TOKEN = 131_072
"""Modelled session bytes per context token when a model has no figure of its own (the order of
a small model's KV cache per token)."""

_SERVICE_EWMA_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One inference call as the node receives it.

    ``session_id`` makes it a turn of that session (created at epoch 0 on first use);
    ``session_epoch``, when given, is the epoch the caller believes the session is at here, and a
    mismatch is refused with FailedPrecondition. ``deadline`` (on the engine's clock) is when the
    caller stops waiting: the backend is given the time left when generation starts (a replay or
    a join of the same request id keeps the first one's).
    """

    request_id: str
    model: str
    prompt: str
    max_tokens: int = 64
    session_id: str | None = None
    session_epoch: int | None = None
    # Not part of the request's identity: a retry with the same id may carry a later deadline.
    deadline: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """A finished request. Times are in the clock's (simulated) seconds.

    ``session_epoch`` is the epoch the turn ran under; ``session_applied`` is False when the
    session moved to a newer epoch while the turn ran (the turn was not added to the context and
    the answer should be rejected by whoever holds the newer epoch).
    """

    request_id: str
    model: str
    pieces: tuple[str, ...]
    context_tokens: int
    session_id: str | None
    session_epoch: int | None
    session_applied: bool
    queued_s: float
    service_s: float

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A snapshot of the node's load, for load reports and routing."""

    slots: int
    in_flight: int
    free_slots: int
    queue_depth: int
    queue_limit: int
    served_models: tuple[str, ...]
    accepting: bool
    sessions: int
    session_bytes: int
    executed_total: int
    deduplicated_total: int
    rejected_total: int
    tokens_total: int = 0
    """Output tokens generated since the engine started (what the energy model charges)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Capacity and memory of the engine.

    ``queue_limit`` counts admitted requests not yet holding a slot; ``result_ttl_s`` is in the
    clock's time; ``bytes_per_token`` maps a model to its modelled session bytes per token.
    """

    slots: int = 4
    queue_limit: int = 16
    result_ttl_s: float = 600.0
    max_cached_results: int = 10_000
    max_tokens_limit: int = 8192
    bytes_per_token: Mapping[str, int] = field(default_factory=dict)
    default_bytes_per_token: int = DEFAULT_BYTES_PER_TOKEN
    initial_service_estimate_s: float = 1.0

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise InvalidArgument(f"expected at least 1 slot, got {self.slots}")
        if self.queue_limit < 0:
            raise InvalidArgument(f"expected a queue limit ≥ 0, got {self.queue_limit}")
        if self.result_ttl_s < 0 or self.max_cached_results < 0:
            raise InvalidArgument(
                f"expected a result TTL ≥ 0 s and a cache size ≥ 0, got {self.result_ttl_s} s "
                f"and {self.max_cached_results}"
            )
        if self.max_tokens_limit < 1:
            raise InvalidArgument(f"expected max_tokens_limit ≥ 1, got {self.max_tokens_limit}")
        sizes = [self.default_bytes_per_token, *self.bytes_per_token.values()]
        if any(size < 0 for size in sizes):
            raise InvalidArgument(f"expected bytes per token ≥ 0, got {sizes}")


class _Execution:
    """One run of one request, shared by every caller with its request id."""

    def __init__(self, request: InferenceRequest) -> None:
        self.request = request
        self.pieces: list[str] = []
        self.result: InferenceResult | None = None
        self.error: BaseException | None = None
        self.finished = False
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()
        """Set once finished: :meth:`wait` sleeps on it, not on every piece."""

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def push(self, piece: str) -> None:
        self.pieces.append(piece)
        self._notify()

    def finish(self, result: InferenceResult) -> None:
        self.result, self.finished = result, True
        self._ended.set()
        self._notify()

    def fail(self, error: BaseException) -> None:
        self.error, self.finished = error, True
        self._ended.set()
        self._notify()

    async def follow(self) -> AsyncIterator[str]:
        index = 0
        while True:
            while index < len(self.pieces):
                yield self.pieces[index]
                index += 1
            if self.finished:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()

    async def wait(self) -> InferenceResult:
        await self._ended.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Ticket:
    """A caller's handle on an admitted request (new, joined or replayed)."""

    def __init__(self, execution: _Execution, deduplicated: bool) -> None:
        self._execution = execution
        self.deduplicated = deduplicated
        """True when this call did not start work: it joined a running one or got a stored
        result."""

    @property
    def request_id(self) -> str:
        return self._execution.request.request_id

    def pieces(self) -> AsyncIterator[str]:
        """The answer's pieces from the first one, live while the execution runs.

        Raises the execution's error after the pieces produced before it.
        """
        return self._execution.follow()

    async def result(self) -> InferenceResult:
        """The finished result (or the execution's error)."""
        return await self._execution.wait()


class Engine:
    """Serves inference requests on one backend; use as ``async with Engine(...) as engine``.

    Leaving the block normally drains the engine; leaving it with an exception or by cancellation
    cancels queued and running work (their callers get Unavailable).
    """

    def __init__(
        self, backend: InferenceBackend, clock: Clock, config: EngineConfig | None = None
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config or EngineConfig()
        self._slots = asyncio.Semaphore(self._config.slots)
        self._task_group: asyncio.TaskGroup | None = None
        self._accepting = False
        self._active: dict[str, _Execution] = {}
        self._done: OrderedDict[str, tuple[datetime, _Execution]] = OrderedDict()
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._sessions = SessionStore()
        self._session_locks: dict[str, asyncio.Lock] = {}
        self._service_estimate_s = self._config.initial_service_estimate_s
        self._executed_total = 0
        self._tokens_total = 0
        self._deduplicated_total = 0
        self._rejected_total = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        if self._task_group is not None:
            raise FailedPrecondition("this engine was already started; make a new one")
        task_group = asyncio.TaskGroup()
        await task_group.__aenter__()
        self._task_group = task_group
        self._accepting = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        self._accepting = False
        if exc is None:
            try:
                await self.drain()
            except BaseException as error:
                await self._task_group.__aexit__(type(error), error, error.__traceback__)
                raise
        try:
            await self._task_group.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            # Executions never raise, so the group only wraps the body's own exception: let that
            # propagate as itself rather than wrapped.
            if exc is None or group.exceptions != (exc,):
                raise

    async def drain(self) -> None:
        """Stop admitting new work, wait until queued and running work has finished."""
        self._accepting = False
        await self._idle.wait()

    # ---- serving -----------------------------------------------------------------------------

    def start(self, request: InferenceRequest) -> Ticket:
        """Admit ``request`` (or join/replay the execution with its request id).

        Raises at once: InvalidArgument for a malformed request or a request id reused for a
        different request; NotFound for a model not served; FailedPrecondition for a session that
        moved away or is at another epoch than ``session_epoch``; Unavailable while draining or
        before the engine is started; ResourceExhausted (with ``retry_after_s``) when every slot
        is busy and the queue is full.
        """
        self._validate(request)
        self._expire_results()
        stored = self._done.get(request.request_id)
        existing = self._active.get(request.request_id) or (stored[1] if stored else None)
        if existing is not None:
            if existing.request != request:
                self._rejected_total += 1
                raise InvalidArgument(
                    f"request id {request.request_id!r} was already used for a different request "
                    f"({_describe(existing.request)}); got {_describe(request)}. "
                    "Use a new request id for new work"
                )
            self._deduplicated_total += 1
            return Ticket(existing, deduplicated=True)
        if self._task_group is None or not self._accepting:
            self._rejected_total += 1
            raise Unavailable(
                "this node is draining or not started and takes no new requests; "
                "send the request to another node"
            )
        try:
            self._check_model(request.model)
            if request.session_id is not None:
                self._check_session(request)
        except (NotFound, InvalidArgument, FailedPrecondition):
            self._rejected_total += 1
            raise
        capacity = self._config.slots + self._config.queue_limit
        if len(self._active) >= capacity:
            self._rejected_total += 1
            queue_depth = len(self._active) - self._running
            retry_after_s = self._service_estimate_s * math.ceil(
                (queue_depth + 1) / self._config.slots
            )
            raise ResourceExhausted(
                f"node is full: {self._running} of {self._config.slots} slots busy and "
                f"{queue_depth} of {self._config.queue_limit} queue places taken; "
                f"retry in about {retry_after_s:.3g} s or on another node",
                retry_after_s=retry_after_s,
            )
        execution = _Execution(request)
        self._active[request.request_id] = execution
        self._idle.clear()
        self._task_group.create_task(
            self._run(execution), name=f"node-execution:{request.request_id}"
        )
        return Ticket(execution, deduplicated=False)

    async def submit(self, request: InferenceRequest) -> InferenceResult:
        """Admit ``request`` and wait for its result (see :meth:`start` for the errors)."""
        return await self.start(request).result()

    def load(self) -> LoadReport:
        """The current load snapshot."""
        session_bytes = sum(
            state.size_bytes(self._bytes_per_token(state.model))
            for state in self._sessions.states()
        )
        return LoadReport(
            slots=self._config.slots,
            in_flight=self._running,
            free_slots=self._config.slots - self._running,
            queue_depth=len(self._active) - self._running,
            queue_limit=self._config.queue_limit,
            served_models=tuple(sorted(self._backend.models)),
            accepting=self._accepting,
            sessions=len(self._sessions),
            session_bytes=session_bytes,
            executed_total=self._executed_total,
            deduplicated_total=self._deduplicated_total,
            rejected_total=self._rejected_total,
            tokens_total=self._tokens_total,
        )

    # ---- sessions ----------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionState:
        """The session's current state (NotFound / FailedPrecondition when moved away)."""
        return self._sessions.get(session_id)

    def session_size_bytes(self, session_id: str) -> int:
        """Modelled state size of the session: context tokens × its model's bytes per token."""
        state = self._sessions.get(session_id)
        return state.size_bytes(self._bytes_per_token(state.model))

    async def export_session(self, session_id: str, *, fence_epoch: int | None = None) -> bytes:
        """Snapshot a session once its running turn (if any) has finished.

        With ``fence_epoch`` the session is fenced here in the same step (later turns here are
        refused) and the snapshot carries ``fence_epoch``, ready for the importing node.
        """
        async with self._session_lock(session_id):
            state = self._sessions.get(session_id)
            if fence_epoch is not None:
                self._sessions.fence(session_id, fence_epoch)
                state = state.with_epoch(fence_epoch)
            return encode_session(state)

    def import_session(self, snapshot: bytes, *, epoch: int | None = None) -> SessionState:
        """Install a session from a snapshot, optionally under another ``epoch``.

        The epoch must be higher than the one held here (re-importing the identical snapshot is
        a no-op); a turn still running under the old epoch will not be added to the context.
        """
        state = decode_session(snapshot)
        if epoch is not None:
            state = state.with_epoch(epoch)
        self._check_model(state.model)
        self._sessions.import_state(state)
        return state

    def fence_session(self, session_id: str, epoch: int) -> None:
        """Record that the session moved to ``epoch`` on another node; drop it here."""
        self._sessions.fence(session_id, epoch)

    # ---- internals ---------------------------------------------------------------------------

    async def _run(self, execution: _Execution) -> None:
        request = execution.request
        clock = self._clock
        admitted = clock.monotonic()
        lock: AbstractAsyncContextManager[None] = (
            self._session_lock(request.session_id)
            if request.session_id is not None
            else nullcontext()
        )
        try:
            async with lock:
                context: tuple[Turn, ...] = ()
                epoch: int | None = None
                if request.session_id is not None:
                    self._check_session(request)
                    state = self._sessions.open(request.session_id, request.model)
                    context, epoch = state.turns, state.epoch
                async with self._slots:
                    self._running += 1
                    started = clock.monotonic()
                    try:
                        generate = GenerateRequest(
                            request_id=request.request_id,
                            model=request.model,
                            prompt=request.prompt,
                            context=context,
                            max_tokens=request.max_tokens,
                            timeout_s=(
                                None
                                if request.deadline is None
                                else (request.deadline - clock.now()).total_seconds() / clock.speed
                            ),
                        )
                        async for piece in self._backend.generate(generate):
                            execution.push(piece)
                    finally:
                        self._running -= 1
                    finished = clock.monotonic()
                applied = False
                if request.session_id is not None and epoch is not None:
                    turn = Turn(request.prompt, "".join(execution.pieces))
                    applied = self._sessions.append(request.session_id, epoch, turn)
            service_s = (finished - started) * clock.speed
            result = InferenceResult(
                request_id=request.request_id,
                model=request.model,
                pieces=tuple(execution.pieces),
                context_tokens=sum(turn.tokens for turn in context),
                session_id=request.session_id,
                session_epoch=epoch,
                session_applied=applied,
                queued_s=(started - admitted) * clock.speed,
                service_s=service_s,
            )
            self._executed_total += 1
            self._tokens_total += len(execution.pieces)
            self._service_estimate_s += _SERVICE_EWMA_WEIGHT * (
                service_s - self._service_estimate_s
            )
            self._store(execution, result)
        except asyncio.CancelledError:
            execution.fail(
                Unavailable(
                    f"request {request.request_id!r} was cancelled because the node engine "
                    "stopped; retry on another node"
                )
            )
            raise
        except GroundplaneError as error:
            execution.fail(error)
        except Exception as error:
            # A backend bug must not escape the reply tasks that await this execution (and take
            # the agent, its host and every other node down): log it, answer UNAVAILABLE.
            log.error("backend_failed", request_id=request.request_id, exc_info=error)
            execution.fail(
                Unavailable(
                    f"the node's backend failed on request {request.request_id!r} "
                    f"({type(error).__name__}); retry on another node"
                )
            )
        finally:
            del self._active[request.request_id]
            if not self._active:
                self._idle.set()

    def _store(self, execution: _Execution, result: InferenceResult) -> None:
        execution.finish(result)
        if self._config.max_cached_results == 0:
            return
        self._done[result.request_id] = (self._clock.now(), execution)
        while len(self._done) > self._config.max_cached_results:
            self._done.popitem(last=False)

    def _expire_results(self) -> None:
        oldest_kept = self._clock.now() - timedelta(seconds=self._config.result_ttl_s)
        while self._done:
            completed, _ = next(iter(self._done.values()))
            if completed > oldest_kept:
                break
            self._done.popitem(last=False)

    def _validate(self, request: InferenceRequest) -> None:
        if not request.request_id:
            raise InvalidArgument("expected a non-empty request id, got ''")
        if not request.model:
            raise InvalidArgument(f"expected a model name in request {request.request_id!r}")
        if not request.prompt:
            raise InvalidArgument(f"expected a non-empty prompt in request {request.request_id!r}")
        if not 1 <= request.max_tokens <= self._config.max_tokens_limit:
            raise InvalidArgument(
                f"expected 1 ≤ max_tokens ≤ {self._config.max_tokens_limit} in request "
                f"{request.request_id!r}, got {request.max_tokens}"
            )
        if request.session_id == "":
            raise InvalidArgument(
                f"expected a non-empty session id or none in request {request.request_id!r}"
            )

    def _check_model(self, model: str) -> None:
        if model not in self._backend.models:
            raise NotFound(
                f"model {model!r} is not served by this node; served models: "
                f"{sorted(self._backend.models)}"
            )

    def _check_session(self, request: InferenceRequest) -> None:
        assert request.session_id is not None
        try:
            state = self._sessions.get(request.session_id)
        except NotFound:
            held_epoch = 0
        else:
            held_epoch = state.epoch
            if state.model != request.model:
                raise InvalidArgument(
                    f"session {request.session_id!r} talks to model {state.model!r}; got a turn "
                    f"for model {request.model!r}"
                )
        if request.session_epoch is not None and request.session_epoch != held_epoch:
            raise FailedPrecondition(
                f"session {request.session_id!r} is at epoch {held_epoch} on this node; the "
                f"request expects epoch {request.session_epoch}"
            )

    def _session_lock(self, session_id: str) -> asyncio.Lock:
        lock = self._session_locks.get(session_id)
        if lock is None:
            lock = self._session_locks[session_id] = asyncio.Lock()
        return lock

    def _bytes_per_token(self, model: str) -> int:
        return self._config.bytes_per_token.get(model, self._config.default_bytes_per_token)


def _describe(request: InferenceRequest) -> str:
    session = f", session {request.session_id!r}" if request.session_id else ""
    return (
        f"model {request.model!r}, prompt {request.prompt!r:.40}, "
        f"max_tokens {request.max_tokens}{session}"
    )
