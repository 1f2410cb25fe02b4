"""The node engine: slots, bounded queue, de-duplication, drain, sessions and their transfer."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.backends import (
    GenerateRequest,
    SyntheticBackend,
    SyntheticModelSpec,
    predict_answer,
)
from groundplane.node.engine import Engine, EngineConfig, InferenceRequest, Ticket
from groundplane.node.sessions import SessionState, Turn, decode_session, encode_session

START = datetime(2026, 8, 15, tzinfo=UTC)
MODEL = SyntheticModelSpec("synth-7b", min_answer_tokens=3, max_answer_tokens=8)
OTHER = SyntheticModelSpec("synth-1b", min_answer_tokens=3, max_answer_tokens=8)


class ManualTime:
    """A monotonic source the test advances by hand (for TTL in the clock's time)."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


class InstrumentedBackend:
    """A synthetic backend that counts calls per request id, measures concurrency and can hold
    every generation at a gate until the test opens it."""

    def __init__(self, clock: SimulatedClock, *, gated: bool = False, fail_first: int = 0) -> None:
        self.inner = SyntheticBackend([MODEL, OTHER], clock)
        self.calls: Counter[str] = Counter()
        self.seen: list[GenerateRequest] = []
        self.running = 0
        self.max_running = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.fail_first = fail_first

    @property
    def models(self) -> frozenset[str]:
        return self.inner.models

    async def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self.calls[request.request_id] += 1
        self.seen.append(request)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.gate.wait()
            if self.fail_first > 0:
                self.fail_first -= 1
                raise Unavailable("accelerator reset")
            async for piece in self.inner.generate(request):
                yield piece
        finally:
            self.running -= 1


def make_clock(monotonic: ManualTime | None = None) -> SimulatedClock:
    if monotonic is None:
        return SimulatedClock(START, speed=100.0)
    return SimulatedClock(START, speed=1.0, monotonic=monotonic)


def ask(
    request_id: str, prompt: str = "status of the downlink", **fields: object
) -> InferenceRequest:
    return InferenceRequest(request_id, MODEL.name, prompt, **fields)  # type: ignore[arg-type]


async def settle() -> None:
    """Let every ready task run until they all block."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_slots_limit_concurrency_and_load_reports_it() -> None:
    """With 3 slots and 10 admitted requests, exactly 3 run at once (never more), the load
    report shows 3 in flight, 0 free slots and 7 queued, and all 10 finish."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    async with Engine(backend, make_clock(), EngineConfig(slots=3, queue_limit=10)) as engine:
        tickets = [engine.start(ask(f"r{i}")) for i in range(10)]
        await settle()
        load = engine.load()
        assert (load.in_flight, load.free_slots, load.queue_depth) == (3, 0, 7)
        assert load.served_models == (OTHER.name, MODEL.name)
        assert backend.running == 3
        backend.gate.set()
        results = [await ticket.result() for ticket in tickets]
    assert backend.max_running == 3
    assert len({result.request_id for result in results}) == 10
    assert engine.load().executed_total == 10


async def test_full_queue_rejects_with_resource_exhausted_and_a_retry_hint() -> None:
    """With 1 slot and a queue of 2, the fourth request is refused with ResourceExhausted
    carrying a positive retry_after_s; a duplicate of a queued request still joins; once work
    finishes new requests are admitted again."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    async with Engine(backend, make_clock(), EngineConfig(slots=1, queue_limit=2)) as engine:
        tickets = [engine.start(ask(f"r{i}")) for i in range(3)]
        await settle()
        with pytest.raises(ResourceExhausted, match=r"full.*1 of 1 slots.*2 of 2 queue") as info:
            engine.start(ask("r3"))
        assert info.value.retry_after_s is not None
        assert info.value.retry_after_s > 0
        joined = engine.start(ask("r2"))
        assert joined.deduplicated
        assert engine.load().rejected_total == 1
        backend.gate.set()
        for ticket in tickets:
            await ticket.result()
        assert (await joined.result()) == (await tickets[2].result())
        await engine.submit(ask("r3"))
    assert backend.calls == Counter({"r0": 1, "r1": 1, "r2": 1, "r3": 1})


async def test_concurrent_duplicates_join_one_execution() -> None:
    """Five concurrent calls with one request id run the backend once; every caller gets the
    same result, and a caller that joins mid-stream still streams every piece from the first."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    async with Engine(backend, make_clock()) as engine:
        first = engine.start(ask("same"))
        others = [engine.start(ask("same")) for _ in range(4)]
        await settle()
        backend.gate.set()
        stream = [piece async for piece in others[-1].pieces()]
        results = [await ticket.result() for ticket in (first, *others)]
    assert backend.calls["same"] == 1
    assert not first.deduplicated
    assert all(ticket.deduplicated for ticket in others)
    assert all(result == results[0] for result in results)
    assert "".join(stream) == results[0].text
    assert engine.load().deduplicated_total == 4


async def test_a_retry_after_completion_returns_the_stored_result() -> None:
    """A request retried after it finished gets the stored result without running again; the
    same id with a different prompt is refused with InvalidArgument."""
    backend = InstrumentedBackend(make_clock())
    async with Engine(backend, make_clock()) as engine:
        original = await engine.submit(ask("once"))
        retried = engine.start(ask("once"))
        assert retried.deduplicated
        assert (await retried.result()) == original
        with pytest.raises(InvalidArgument, match="already used for a different request"):
            engine.start(ask("once", prompt="something else"))
    assert backend.calls["once"] == 1


async def test_stored_results_expire_after_their_ttl_and_the_cache_is_bounded() -> None:
    """A stored result answers retries until result_ttl_s of clock time has passed, after which
    the request runs again; beyond max_cached_results the oldest result is dropped."""
    time = ManualTime()
    clock = make_clock(time)
    backend = InstrumentedBackend(clock)
    config = EngineConfig(result_ttl_s=60.0, max_cached_results=2)
    async with Engine(backend, clock, config) as engine:
        await engine.submit(ask("a"))
        time.now_s += 59.0
        await engine.submit(ask("a"))
        assert backend.calls["a"] == 1
        time.now_s += 2.0
        await engine.submit(ask("a"))
        assert backend.calls["a"] == 2
        await engine.submit(ask("b"))
        await engine.submit(ask("c"))
        await engine.submit(ask("a"))
        assert backend.calls["a"] == 3
        await engine.submit(ask("c"))
        assert backend.calls["c"] == 1


async def test_a_failed_execution_is_not_stored_so_a_retry_runs_again() -> None:
    """When the backend fails, callers get its error and a retry with the same id runs again."""
    backend = InstrumentedBackend(make_clock(), fail_first=1)
    async with Engine(backend, make_clock()) as engine:
        with pytest.raises(Unavailable, match="accelerator reset"):
            await engine.submit(ask("flaky"))
        result = await engine.submit(ask("flaky"))
    assert backend.calls["flaky"] == 2
    assert result.output_tokens > 0


async def test_drain_finishes_accepted_work_and_rejects_new_work() -> None:
    """During drain new requests get Unavailable while duplicates of accepted ones still join;
    drain returns only after running and queued work finished, all of it successfully."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    async with Engine(backend, make_clock(), EngineConfig(slots=2, queue_limit=4)) as engine:
        tickets = [engine.start(ask(f"r{i}")) for i in range(4)]
        await settle()
        drain = asyncio.create_task(engine.drain(), name="test-drain")
        await settle()
        with pytest.raises(Unavailable, match="draining"):
            engine.start(ask("late"))
        assert engine.start(ask("r3")).deduplicated
        assert not engine.load().accepting
        assert not drain.done()
        backend.gate.set()
        await drain
        assert all(ticket._execution.finished for ticket in tickets)
        results = [await ticket.result() for ticket in tickets]
    assert [result.request_id for result in results] == ["r0", "r1", "r2", "r3"]
    assert "late" not in backend.calls


async def test_executions_are_named_tasks_and_cancelled_with_the_engine() -> None:
    """Each execution is a task named after its request id; leaving the engine through an
    exception cancels running and queued work, whose callers get Unavailable."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    tickets: list[Ticket] = []
    names: set[str] = set()

    async def operate() -> None:
        async with Engine(backend, make_clock(), EngineConfig(slots=1)) as engine:
            tickets.extend(engine.start(ask(f"r{i}")) for i in range(2))
            await settle()
            names.update(task.get_name() for task in asyncio.all_tasks())
            raise RuntimeError("operator stop")

    with pytest.raises(RuntimeError, match="operator stop"):
        await operate()
    assert {"node-execution:r0", "node-execution:r1"} <= names
    assert backend.running == 0
    for ticket in tickets:
        with pytest.raises(Unavailable, match="engine stopped"):
            await ticket.result()


async def test_cancelling_the_owner_cancels_every_execution() -> None:
    """Cancelling the task that owns the engine cancels running and queued executions (the
    backend's generators are closed) and their callers get Unavailable; the cancellation itself
    reaches the owner."""
    backend = InstrumentedBackend(make_clock(), gated=True)
    tickets: list[Ticket] = []
    started = asyncio.Event()

    async def owner() -> None:
        async with Engine(backend, make_clock(), EngineConfig(slots=2)) as engine:
            tickets.extend(engine.start(ask(f"r{i}")) for i in range(3))
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(owner(), name="test-owner")
    await started.wait()
    await settle()
    assert backend.running == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.running == 0
    for ticket in tickets:
        with pytest.raises(Unavailable, match="engine stopped"):
            await ticket.result()


async def test_bad_requests_are_refused_with_teaching_errors() -> None:
    """Unknown model → NotFound naming served models; empty prompt or out-of-range max_tokens →
    InvalidArgument; a request before the engine started → Unavailable."""
    backend = InstrumentedBackend(make_clock())
    engine = Engine(backend, make_clock(), EngineConfig(max_tokens_limit=100))
    with pytest.raises(Unavailable, match="not started"):
        engine.start(ask("early"))
    async with engine:
        with pytest.raises(NotFound, match=r"'mystery'.*synth-7b"):
            engine.start(InferenceRequest("x", "mystery", "hi"))
        with pytest.raises(InvalidArgument, match="non-empty prompt"):
            engine.start(ask("x", prompt=""))
        with pytest.raises(InvalidArgument, match=r"max_tokens ≤ 100.*got 101"):
            engine.start(ask("x", max_tokens=101))
    assert not backend.calls


# ---- sessions --------------------------------------------------------------------------------


async def test_turns_of_a_session_build_on_each_other_even_when_sent_together() -> None:
    """Two turns of one session sent at once run one after the other: the second answer is the
    model's answer given the first turn, and the session ends with both turns."""
    backend = InstrumentedBackend(make_clock())
    async with Engine(backend, make_clock(), EngineConfig(slots=4)) as engine:
        first = engine.start(ask("t1", "where is the station", session_id="s"))
        second = engine.start(ask("t2", "and when is the next pass", session_id="s"))
        one, two = await first.result(), await second.result()
    expected_one = predict_answer(MODEL, (), "where is the station", 64)
    assert one.text == expected_one.text
    context = (Turn("where is the station", one.text),)
    assert two.text == predict_answer(MODEL, context, "and when is the next pass", 64).text
    assert two.context_tokens == context[0].tokens
    state = engine.session("s")
    assert state.turns == (*context, Turn("and when is the next pass", two.text))
    assert (one.session_epoch, two.session_epoch) == (0, 0)
    assert one.session_applied
    assert two.session_applied


async def test_an_imported_session_answers_as_the_exporting_node_would() -> None:
    """A session exported from node A and imported on node B at a higher epoch gives, on B,
    exactly the answer A gives to the same next prompt; a node that got a stale snapshot
    (one turn missing) answers differently, which exposes the lost context."""
    clock = make_clock()
    async with (
        Engine(InstrumentedBackend(clock), clock) as node_a,
        Engine(InstrumentedBackend(clock), clock) as node_b,
        Engine(InstrumentedBackend(clock), clock) as node_c,
    ):
        await node_a.submit(ask("a1", "first question", session_id="s"))
        stale = await node_a.export_session("s")
        await node_a.submit(ask("a2", "second question", session_id="s"))
        snapshot = await node_a.export_session("s")

        imported = node_b.import_session(snapshot, epoch=1)
        node_c.import_session(stale, epoch=1)
        on_a = await node_a.submit(ask("a3", "third question", session_id="s"))
        on_b = await node_b.submit(ask("b3", "third question", session_id="s"))
        on_c = await node_c.submit(ask("c3", "third question", session_id="s"))

    assert imported.content_sha256 == decode_session(snapshot).content_sha256
    assert on_b.text == on_a.text
    assert on_b.session_epoch == 1
    assert on_a.session_epoch == 0
    assert on_c.text != on_a.text


async def test_fencing_moves_a_session_and_refuses_stale_epochs() -> None:
    """Exporting with a fence epoch makes the old node refuse further turns; the new node holds
    the session at that epoch, ignores an identical re-import, refuses imports at the same or a
    lower epoch, and refuses requests that expect an older epoch."""
    clock = make_clock()
    async with (
        Engine(InstrumentedBackend(clock), clock) as old,
        Engine(InstrumentedBackend(clock), clock) as new,
    ):
        await old.submit(ask("o1", "first question", session_id="s"))
        snapshot = await old.export_session("s", fence_epoch=1)
        with pytest.raises(FailedPrecondition, match=r"moved away.*epoch 1"):
            old.start(ask("o2", "second question", session_id="s"))

        assert new.import_session(snapshot).epoch == 1
        new.import_session(snapshot)
        lower = encode_session(decode_session(snapshot).with_epoch(0))
        with pytest.raises(FailedPrecondition, match="higher epoch, got 0"):
            new.import_session(lower)
        with pytest.raises(FailedPrecondition, match="higher epoch, got 1"):
            new.import_session(encode_session(SessionState("s", MODEL.name, 1)))
        with pytest.raises(FailedPrecondition, match=r"at epoch 1.*expects epoch 0"):
            new.start(ask("n2", "second question", session_id="s", session_epoch=0))
        result = await new.submit(ask("n2", "second question", session_id="s", session_epoch=1))
    assert result.session_epoch == 1
    assert len(new.session("s").turns) == 2


async def test_a_turn_running_when_its_session_is_superseded_is_not_applied() -> None:
    """If a newer epoch of the session is imported while a turn runs, the turn's result carries
    the old epoch with session_applied False, and the imported context stays untouched."""
    clock = make_clock()
    backend = InstrumentedBackend(clock, gated=True)
    async with Engine(backend, clock) as engine:
        ticket = engine.start(ask("t1", "first question", session_id="s"))
        await settle()
        newer = SessionState("s", MODEL.name, 5, (Turn("elsewhere", "answered elsewhere"),))
        engine.import_session(encode_session(newer))
        backend.gate.set()
        result = await ticket.result()
    assert (result.session_epoch, result.session_applied) == (0, False)
    assert engine.session("s") == newer


async def test_session_size_is_context_tokens_times_bytes_per_token_of_its_model() -> None:
    """The modelled size of a session is its context tokens × the configured bytes per token of
    its model (default for unconfigured models), and the load report sums them."""
    clock = make_clock()
    config = EngineConfig(bytes_per_token={MODEL.name: 1000}, default_bytes_per_token=7)
    async with Engine(InstrumentedBackend(clock), clock, config) as engine:
        await engine.submit(ask("a", "one two three", session_id="big"))
        await engine.submit(InferenceRequest("b", OTHER.name, "four five", session_id="small"))
        big, small = engine.session("big"), engine.session("small")
        assert engine.session_size_bytes("big") == big.context_tokens * 1000
        assert engine.session_size_bytes("small") == small.context_tokens * 7
        assert big.context_tokens == 3 + len(big.turns[0].answer.split())
        assert engine.load().session_bytes == big.context_tokens * 1000 + small.context_tokens * 7
        assert engine.load().sessions == 2


def test_snapshots_round_trip_and_corruption_is_refused() -> None:
    """A snapshot decodes to the same state; the content hash ignores the epoch; edited content,
    non-JSON bytes and a wrong format are refused with InvalidArgument."""
    state = SessionState("s", MODEL.name, 3, (Turn("q", "a b c"), Turn("q2 ünïcode", "d")))
    data = encode_session(state)
    assert decode_session(data) == state
    assert state.with_epoch(9).content_sha256 == state.content_sha256
    tampered = data.replace(b'"a b c"', b'"a b C"')
    with pytest.raises(InvalidArgument, match="corrupt"):
        decode_session(tampered)
    with pytest.raises(InvalidArgument, match="undecodable"):
        decode_session(b"\xff\x00")
    with pytest.raises(InvalidArgument, match="format"):
        decode_session(b'{"format": "something-else"}')
    with pytest.raises(InvalidArgument, match="'epoch' of type int"):
        decode_session(data.replace(b'"epoch":3', b'"epoch":"3"'))


class BuggyBackend(InstrumentedBackend):
    """A backend with a bug: its first generation raises a plain Python exception."""

    async def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self.calls[request.request_id] += 1
        if self.calls[request.request_id] == 1:
            raise KeyError("tokenizer table")
        async for piece in self.inner.generate(request):
            yield piece


async def test_a_backend_bug_is_unavailable_for_the_caller_and_the_engine_keeps_serving() -> None:
    """A non-domain exception from the backend reaches the caller as UNAVAILABLE naming the
    request (never the raw exception), and the engine answers the retry."""
    backend = BuggyBackend(make_clock())
    async with Engine(backend, make_clock()) as engine:
        with pytest.raises(Unavailable, match="backend failed on request 'buggy'"):
            await engine.submit(ask("buggy"))
        result = await engine.submit(ask("buggy"))
    assert backend.calls["buggy"] == 2
    assert result.output_tokens > 0
