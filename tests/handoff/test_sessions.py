"""Sessions and jobs across passes over a real broker, real node agents and the link emulator."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from groundplane.handoff.manager import HandoffManager, ManagerConfig, TurnResult
from groundplane.handoff.nodes import Turn as GroundTurn
from groundplane.handoff.planner import HandoffSettings, PassSchedule, PassWindow
from groundplane.kernel.errors import Unavailable
from groundplane.node.backends import predict_answer
from groundplane.node.sessions import Turn

from .conftest import BATCH, CHAT, EPOCH, STATION, SystemFactory, cycling_schedule

MAX_TOKENS = 8
SETTINGS = HandoffSettings(
    lead_margin_s=2.0,
    min_dwell_s=5.0,
    ground_rate_bps=1e9,
    isl_rate_bps=10e9,
    bytes_per_token={"chat": 65_536},
)
"""State of 64 KiB per token: a context of 3,000 tokens takes 1.6 s down and 1.6 s up."""
CONFIG = ManagerConfig(settings=SETTINGS, replan_interval_s=3.0)
CONTROL_OVERHEAD_S = 4.0
"""Bound on a handoff's time beyond the transfer: export and import round trips through the
broker and the emulator, and the store commits, at 25× speed (a wall millisecond is 25 ms)."""


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Return once ``predicate()`` holds (polled every 10 ms of wall time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


@dataclass
class Conversation:
    """A client that talks to a session without pause and checks nothing fails."""

    session_id: str
    answers: list[tuple[str, TurnResult]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def talk(
    manager: Callable[[], HandoffManager],
    conversation: Conversation,
    clock_now: Callable[[], datetime],
    until: Callable[[], bool],
    *,
    pause_s: float = 1.0,
    sleep: Callable[[float], object],
) -> None:
    """Send turns one after another (same turn id on retry) until ``until()``."""
    index = 0
    while not until():
        prompt = f"question {index} about the orbit"
        turn_id = f"turn-{index}"
        for _attempt in range(20):
            try:
                result = await manager().send_turn(
                    conversation.session_id,
                    prompt,
                    deadline=clock_now() + timedelta(seconds=60),
                    max_tokens=MAX_TOKENS,
                    turn_id=turn_id,
                )
            except Unavailable as error:
                # Only a stopped manager may interrupt a turn; the client retries the same id.
                conversation.failures.append(f"retry {turn_id}: {error}")
                await asyncio.sleep(0.2)
                continue
            conversation.answers.append((prompt, result))
            break
        else:
            raise AssertionError(f"turn {turn_id} never got an answer")
        index += 1
        await sleep(pause_s)  # type: ignore[misc]


def assert_whole_context_each_time(
    conversation: Conversation, ground: Sequence[GroundTurn]
) -> None:
    """Every answer equals the synthetic model's answer over the whole preceding context, and
    the ground copy is that context."""
    context: list[Turn] = []
    for index, (prompt, result) in enumerate(conversation.answers):
        assert result.turn_index == index
        expected = predict_answer(CHAT, tuple(context), prompt, MAX_TOKENS).text
        assert result.text == expected, f"turn {index} answered from a wrong context"
        context.append(Turn(prompt, result.text))
    assert [(t.prompt, t.answer) for t in ground] == [(t.prompt, t.answer) for t in context]


@pytest.mark.slow
async def test_session_talks_across_five_handoffs_without_a_failed_turn(
    make_system: SystemFactory,
) -> None:
    """A session talking continuously while satellites rise and set is handed off at least five
    times (once over an inter-satellite link, otherwise through the ground): no turn fails, every
    answer equals the prediction over the full context (so the whole context arrived each time),
    every handoff completes before the LOS of the pass it leaves, starts no earlier than its
    plan, and its interruption is measured and bounded by the transfer time plus a few round
    trips; the old node refuses the session afterwards (fenced)."""
    isl = {frozenset(("sat-a", "sat-b"))}

    def isl_in_view(a: str, b: str, _at: datetime) -> bool:
        return frozenset((a, b)) in isl

    async with make_system(cycling_schedule(), config=CONFIG, isl_in_view=isl_in_view) as system:
        manager = await system.start_manager("handoff-1")
        info = await manager.create_session("chat")
        assert info.satellite_id == "sat-a"
        conversation = Conversation(info.session_id)

        def done() -> bool:
            completed = [
                e
                for e in manager.list_handoffs(subject_id=info.session_id)
                if e.state == "completed"
            ]
            return len(completed) >= 5 and system.clock.now() > completed[-1].at + timedelta(
                seconds=5
            )

        async with asyncio.timeout(40):
            await talk(
                lambda: manager, conversation, system.clock.now, done, sleep=system.clock.sleep
            )
        events = manager.list_handoffs(subject_id=info.session_id)
        ground = manager.session_turns(info.session_id)
        final = manager.get_session(info.session_id)
        engines = dict(system.engines)
    completed = [e for e in events if e.state == "completed"]
    assert conversation.failures == []
    assert_whole_context_each_time(conversation, ground)
    assert len(completed) >= 5
    assert {e.path for e in completed} == {"isl", "ground"}
    for event in completed:
        assert event.at < event.los, f"handoff {event} finished after LOS"
        assert event.at >= event.planned_at
        assert event.from_satellite != event.to_satellite
        assert event.bytes_moved > 0
        rate = SETTINGS.isl_rate_bps if event.path == "isl" else SETTINGS.ground_rate_bps / 2
        transfer_s = event.bytes_moved * 8 / rate
        assert transfer_s <= event.interruption_s < transfer_s + CONTROL_OVERHEAD_S
    # Every turn was answered by the node that held the session at that epoch, and the
    # session's holders along the way refuse it now.
    assert final.session_epoch == max(r.session_epoch for _, r in conversation.answers)
    for sat, engine in engines.items():
        if sat != final.satellite_id:
            with pytest.raises(Exception, match=r"moved away|no session"):
                engine.session(info.session_id)


async def test_gap_checkpoints_waits_and_resumes_at_the_next_aos(
    make_system: SystemFactory,
) -> None:
    """With no satellite in view from 40 s to 70 s the session is checkpointed before LOS; a turn
    whose deadline falls before the next AOS fails UNAVAILABLE naming that AOS; a turn sent in
    the gap with a longer deadline waits and is answered after the AOS by the next satellite,
    from the whole context."""
    schedule = PassSchedule(
        [
            PassWindow(
                "sat-a", STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=40)
            ),
            PassWindow(
                "sat-b", STATION, EPOCH + timedelta(seconds=70), EPOCH + timedelta(seconds=200)
            ),
        ]
    )
    async with make_system(schedule, config=CONFIG, speed=20.0) as system:
        manager = await system.start_manager("handoff-1")
        info = await manager.create_session("chat")
        context: list[Turn] = []
        for index in range(3):
            prompt = f"before the gap {index}"
            result = await manager.send_turn(
                info.session_id, prompt, deadline=system.at(30), max_tokens=MAX_TOKENS
            )
            assert result.text == predict_answer(CHAT, tuple(context), prompt, MAX_TOKENS).text
            context.append(Turn(prompt, result.text))
        await system.sleep_until(45)
        gap = manager.get_session(info.session_id)
        with pytest.raises(Unavailable) as refused:
            await manager.send_turn(
                info.session_id, "too impatient", deadline=system.at(55), max_tokens=MAX_TOKENS
            )
        waited = await manager.send_turn(
            info.session_id, "patient", deadline=system.at(100), max_tokens=MAX_TOKENS
        )
        answered_at = system.clock.now()
        events = manager.list_handoffs(subject_id=info.session_id)
    assert gap.state == "checkpointed"
    assert gap.resume_at == EPOCH + timedelta(seconds=70)
    assert refused.value.next_opportunity == EPOCH + timedelta(seconds=70)
    assert waited.satellite_id == "sat-b"
    assert answered_at >= EPOCH + timedelta(seconds=70)
    assert waited.text == predict_answer(CHAT, tuple(context), "patient", MAX_TOKENS).text
    states = [e.state for e in events]
    assert "checkpointed" in states
    assert "resumed" in states
    checkpointed = next(e for e in events if e.state == "checkpointed")
    assert checkpointed.at < checkpointed.los == EPOCH + timedelta(seconds=40)


async def test_killed_node_mid_turn_resumes_from_checkpoint_on_another_node(
    make_system: SystemFactory,
) -> None:
    """The serving node is killed while a turn runs on it: the session moves to the other node
    in view from the ground checkpoint under a new epoch, the turn is retried there and answered
    once from the whole context; no turn fails and none is recorded twice."""
    schedule = PassSchedule(
        PassWindow(sat, STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(seconds=900))
        for sat in ("sat-a", "sat-b")
    )
    slow = ManagerConfig(settings=SETTINGS, replan_interval_s=3.0, turn_attempt_s=30.0)
    async with make_system(
        schedule, config=slow, speed=10.0, satellites=("sat-a", "sat-b")
    ) as system:
        manager = await system.start_manager("handoff-1")
        info = await manager.create_session("chat")
        first = info.satellite_id
        conversation = Conversation(info.session_id)
        stop = asyncio.Event()
        talker = asyncio.ensure_future(
            talk(
                lambda: manager,
                conversation,
                system.clock.now,
                stop.is_set,
                pause_s=0.0,
                sleep=system.clock.sleep,
            )
        )
        await eventually(lambda: len(conversation.answers) >= 5)
        engine = system.engines[first]
        async with asyncio.timeout(5):
            await eventually(lambda: engine.load().in_flight > 0)
        in_flight_turn = len(conversation.answers)
        system.kill_node(first)
        await eventually(lambda: len(conversation.answers) >= in_flight_turn + 5)
        stop.set()
        await asyncio.wait_for(talker, 10)
        ground = manager.session_turns(info.session_id)
        final = manager.get_session(info.session_id)
    assert conversation.failures == []
    assert_whole_context_each_time(conversation, ground)
    assert final.satellite_id != first
    retried = conversation.answers[in_flight_turn][1]
    assert retried.satellite_id == final.satellite_id
    assert retried.attempts >= 2
    assert retried.session_epoch > conversation.answers[in_flight_turn - 1][1].session_epoch
    indexes = [r.turn_index for _, r in conversation.answers]
    assert indexes == sorted(set(indexes))


async def test_job_spans_three_passes_and_runs_every_item_exactly_once(
    make_system: SystemFactory,
) -> None:
    """A batch of 60 five-second items on satellites that are in view 60 s each runs on at least
    three satellites, moving at each LOS; every item is executed exactly once across all nodes
    and its kept result equals the model's answer."""
    prompts = [f"item {i}" for i in range(60)]
    async with make_system(cycling_schedule(), config=CONFIG) as system:
        manager = await system.start_manager("handoff-1")
        job = await manager.submit_job("batch", prompts, max_tokens=MAX_TOKENS)
        async with asyncio.timeout(30):
            await eventually(lambda: manager.get_job(job.job_id).state == "done")
        done = manager.get_job(job.job_id, include_results=True)
        events = manager.list_handoffs(subject_id=job.job_id)
        executions = list(system.executions)
    runs = Counter(rid for _, rid in executions if rid.startswith(job.job_id))
    assert runs == Counter({f"{job.job_id}.i{i}": 1 for i in range(len(prompts))})
    satellites = {sat for sat, rid in executions if rid.startswith(job.job_id)}
    assert len(satellites) == 3
    assert done.done_count == len(prompts)
    for index, prompt in enumerate(prompts):
        assert done.results[index] == predict_answer(BATCH, (), prompt, MAX_TOKENS).text
    moves = [e for e in events if e.state == "completed"]
    assert len(moves) >= 2
    for move in moves:
        assert move.at <= move.los + timedelta(seconds=1)


@pytest.mark.slow
async def test_manager_killed_and_restarted_loses_no_session_or_job(
    make_system: SystemFactory,
) -> None:
    """The manager is killed mid-run (its process gone: tasks and MQTT connection) while a
    session talks and a job runs; a new manager on the same SQLite file picks both up: the
    session keeps its whole context and keeps being handed off, the turn interrupted by the kill
    is answered once (retried with its turn id), and every job item runs and is kept once."""
    prompts = [f"item {i}" for i in range(30)]
    async with make_system(cycling_schedule(), config=CONFIG) as system:
        await system.start_manager("handoff-1")
        info = await system.manager.create_session("chat")
        job = await system.manager.submit_job("batch", prompts, max_tokens=MAX_TOKENS)
        conversation = Conversation(info.session_id)
        stop = asyncio.Event()
        talker = asyncio.ensure_future(
            talk(
                lambda: system.manager,
                conversation,
                system.clock.now,
                stop.is_set,
                pause_s=0.5,
                sleep=system.clock.sleep,
            )
        )
        await system.sleep_until(65)  # after the first handoff, during the job
        before = len(system.manager.list_handoffs(subject_id=info.session_id))
        system.kill_manager()
        await asyncio.sleep(0.3)
        restarted = await system.start_manager("handoff-2")
        async with asyncio.timeout(30):
            await eventually(lambda: restarted.get_job(job.job_id).state == "done")
            await eventually(lambda: system.clock.now() >= system.at(125))
        stop.set()
        await asyncio.wait_for(talker, 10)
        done = restarted.get_job(job.job_id, include_results=True)
        events = restarted.list_handoffs(subject_id=info.session_id)
        ground = restarted.session_turns(info.session_id)
        executions = list(system.executions)
    assert_whole_context_each_time(conversation, ground)
    assert all(
        "stopped" in f or "interrupted" in f or "not running" in f for f in conversation.failures
    )
    completed_after = [e for e in events[before:] if e.state == "completed"]
    assert completed_after, "the restarted manager handed the session off"
    runs = Counter(rid for _, rid in executions if rid.startswith(job.job_id))
    assert runs == Counter({f"{job.job_id}.i{i}": 1 for i in range(len(prompts))})
    assert done.done_count == len(prompts)
    for index, prompt in enumerate(prompts):
        assert done.results[index] == predict_answer(BATCH, (), prompt, MAX_TOKENS).text


async def test_concurrent_calls_with_one_turn_id_run_the_turn_once(
    make_system: SystemFactory,
) -> None:
    """Three concurrent SendTurn calls with the same turn id (a client retrying before its first
    call returned) run the turn once on the node and all get the same recorded answer."""
    schedule = PassSchedule(
        [PassWindow("sat-a", STATION, EPOCH - timedelta(seconds=1), EPOCH + timedelta(hours=1))]
    )
    async with make_system(schedule, speed=10.0, satellites=("sat-a",)) as system:
        manager = await system.start_manager("handoff-1")
        info = await manager.create_session("chat")
        deadline = system.clock.now() + timedelta(seconds=60)
        results = await asyncio.gather(
            *(
                manager.send_turn(info.session_id, "hello", deadline=deadline, turn_id="turn-1")
                for _ in range(3)
            )
        )
        turns = manager.session_turns(info.session_id)
    assert len({r.text for r in results}) == 1
    assert {r.turn_index for r in results} == {0}
    assert len(turns) == 1
    assert [request_id for _, request_id in system.executions].count(
        f"{info.session_id}.t0.e{results[0].session_epoch}"
    ) == 1
    assert len([r for _, r in system.executions if r.startswith(info.session_id)]) == 1


async def test_a_turn_crosses_the_link_as_two_messages_and_answers_the_prediction(
    make_system: SystemFactory,
) -> None:
    """A session turn asks its node for the answer whole (``result_only``): the request up and
    one InferResult down are the turn's only link messages (the chat model's pieces would
    otherwise come in chunks), and the answer equals the model's prediction for the prompt."""
    async with make_system(cycling_schedule(), config=CONFIG) as system:
        manager = await system.start_manager("handoff-1")
        info = await manager.create_session("chat")
        assert system.emulator is not None
        before = system.emulator.traffic().sent_messages
        result = await manager.send_turn(
            info.session_id,
            "one whole answer",
            deadline=system.clock.now() + timedelta(seconds=30),
            max_tokens=MAX_TOKENS,
        )
        sent = system.emulator.traffic().sent_messages - before
    assert result.text == predict_answer(CHAT, (), "one whole answer", MAX_TOKENS).text
    assert sent == 2
