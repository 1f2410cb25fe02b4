"""The deterministic synthetic model: answers and timing as functions of context and prompt."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.node.backends import (
    GenerateRequest,
    InferenceBackend,
    SyntheticBackend,
    SyntheticModelSpec,
    predict_answer,
)
from groundplane.node.sessions import Turn, count_tokens

START = datetime(2026, 8, 15, tzinfo=UTC)
SPEED = 100.0
FLOAT_EXACT_S = 1e-9
# How late a streamed piece may arrive under a SimulatedClock at SPEED, in simulated seconds:
# 30 ms of wall-clock scheduling latency on a busy 2-core machine. Pieces never arrive early.
SCHEDULING_SLACK_SIM_S = 0.030 * SPEED

FREE = SyntheticModelSpec("free-1b", min_answer_tokens=8, max_answer_tokens=24)
COSTLY = SyntheticModelSpec(
    "costly-7b",
    prefill_s_per_token=0.02,
    decode_s_per_token=0.25,
    min_answer_tokens=6,
    max_answer_tokens=10,
)

HISTORY = (
    Turn("what is the orbital period of the station", "about ninety two minutes"),
    Turn("and its altitude", "roughly four hundred kilometres"),
)


class SteppingClock:
    """A clock whose sleeps take no wall time: each sleep advances it and is recorded."""

    speed = 1.0

    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps_s: list[float] = []

    def now(self) -> datetime:
        raise AssertionError("the synthetic model must not need the UTC time")

    def monotonic(self) -> float:
        return self.now_s

    async def sleep(self, simulated_s: float) -> None:
        self.sleeps_s.append(simulated_s)
        self.now_s += simulated_s
        await asyncio.sleep(0)


async def collect(backend: InferenceBackend, request: GenerateRequest) -> list[str]:
    return [piece async for piece in backend.generate(request)]


def request_for(
    prompt: str, context: tuple[Turn, ...] = (), *, model: str = FREE.name, max_tokens: int = 64
) -> GenerateRequest:
    return GenerateRequest("r-1", model, prompt, context, max_tokens)


async def test_same_context_and_prompt_give_the_same_tokens_on_independent_backends() -> None:
    """Two backend instances stream identical pieces for the same model, context and prompt,
    and the pieces equal predict_answer's prediction."""
    first = SyntheticBackend([FREE], SteppingClock())
    second = SyntheticBackend([FREE], SteppingClock())
    request = request_for("how long is the next pass", HISTORY)

    pieces_first = await collect(first, request)
    pieces_second = await collect(second, request)

    assert pieces_first == pieces_second
    assert tuple(pieces_first) == predict_answer(FREE, HISTORY, request.prompt, 64).pieces
    assert FREE.min_answer_tokens <= len(pieces_first) <= FREE.max_answer_tokens
    assert count_tokens("".join(pieces_first)) == len(pieces_first)


async def test_any_change_of_context_or_prompt_changes_the_answer() -> None:
    """A lost turn, an edited earlier answer, a different prompt or a different model each give
    a different answer, so a node with a stale or lost context is detectable from its answer."""
    backend = SyntheticBackend([FREE, COSTLY], SteppingClock())
    prompt = "how long is the next pass"
    reference = await collect(backend, request_for(prompt, HISTORY))
    variants = {
        "lost turn": request_for(prompt, HISTORY[:1]),
        "no context": request_for(prompt, ()),
        "edited answer": request_for(
            prompt, (HISTORY[0], Turn(HISTORY[1].prompt, "roughly four hundred kilometers"))
        ),
        "reordered turns": request_for(prompt, (HISTORY[1], HISTORY[0])),
        "other prompt": request_for(prompt + "?", HISTORY),
        "other model": request_for(prompt, HISTORY, model=COSTLY.name),
    }
    for name, request in variants.items():
        answer = predict_answer(
            FREE if request.model == FREE.name else COSTLY, request.context, request.prompt, 64
        )
        assert list(answer.pieces) != reference, name


async def test_a_smaller_token_budget_gives_a_prefix_of_the_answer() -> None:
    """max_tokens truncates the same hash chain: the answer under a budget of 3 is the first
    three pieces of the unbounded answer."""
    backend = SyntheticBackend([FREE], SteppingClock())
    full = await collect(backend, request_for("name three ground stations", HISTORY))
    short = await collect(backend, request_for("name three ground stations", HISTORY, max_tokens=3))
    assert short == full[:3]


async def test_time_spent_is_exactly_the_cost_model_on_a_stepping_clock() -> None:
    """With a clock that records every sleep, the first piece comes after prefill (context and
    prompt tokens × prefill cost) plus one decode step, and the whole answer after prefill plus
    decode cost × output tokens."""
    clock = SteppingClock()
    backend = SyntheticBackend([COSTLY], clock)
    request = request_for("plan the downlink", HISTORY, model=COSTLY.name)
    prefill_tokens = sum(turn.tokens for turn in HISTORY) + count_tokens(request.prompt)

    arrivals_s: list[float] = []
    async for _ in backend.generate(request):
        arrivals_s.append(clock.monotonic())

    expected_prefill_s = COSTLY.prefill_s_per_token * prefill_tokens
    assert arrivals_s[0] == pytest.approx(
        expected_prefill_s + COSTLY.decode_s_per_token, abs=FLOAT_EXACT_S
    )
    assert arrivals_s[-1] == pytest.approx(
        expected_prefill_s + COSTLY.decode_s_per_token * len(arrivals_s), abs=FLOAT_EXACT_S
    )
    assert backend.predict(request).total_s == pytest.approx(arrivals_s[-1], abs=FLOAT_EXACT_S)


async def test_zero_costs_take_no_clock_time() -> None:
    """A model with zero costs answers without advancing the clock."""
    clock = SteppingClock()
    pieces = await collect(SyntheticBackend([FREE], clock), request_for("hello", HISTORY))
    assert pieces
    assert clock.monotonic() == 0.0


async def test_zero_cost_answer_sleeps_once_not_once_per_piece() -> None:
    """At zero decode cost the whole answer comes after a single clock sleep (one event-loop
    turn, not one per piece); a costly model still sleeps once per piece."""
    free_clock = SteppingClock()
    pieces = await collect(SyntheticBackend([FREE], free_clock), request_for("hello", HISTORY))
    assert len(pieces) >= FREE.min_answer_tokens
    assert free_clock.sleeps_s == [0.0]

    costly_clock = SteppingClock()
    request = request_for("hello", HISTORY, model=COSTLY.name)
    costly = await collect(SyntheticBackend([COSTLY], costly_clock), request)
    assert len(costly_clock.sleeps_s) == len(costly)


async def test_timing_follows_the_cost_model_on_a_simulated_clock() -> None:
    """Under a SimulatedClock at 100× speed, time to first piece and to the last piece (in
    simulated seconds) match the cost model within SCHEDULING_SLACK_SIM_S for a short and a long
    context, and never come early; the long context pays its larger prefill."""
    clock = SimulatedClock(START, speed=SPEED)
    backend = SyntheticBackend([COSTLY], clock)
    long_history = HISTORY * 40
    for context in ((), long_history):
        request = request_for("plan the downlink", context, model=COSTLY.name)
        predicted = backend.predict(request)
        begin = clock.monotonic()
        arrivals_sim_s: list[float] = []
        async for _ in backend.generate(request):
            arrivals_sim_s.append((clock.monotonic() - begin) * SPEED)
        first_expected_s = predicted.prefill_s + predicted.decode_s_per_token
        assert first_expected_s - FLOAT_EXACT_S <= arrivals_sim_s[0]
        assert arrivals_sim_s[0] <= first_expected_s + SCHEDULING_SLACK_SIM_S
        assert predicted.total_s - FLOAT_EXACT_S <= arrivals_sim_s[-1]
        assert arrivals_sim_s[-1] <= predicted.total_s + SCHEDULING_SLACK_SIM_S
    long_prefill_s = predict_answer(COSTLY, long_history, "plan the downlink", 64).prefill_s
    assert long_prefill_s > 4 * SCHEDULING_SLACK_SIM_S


async def test_unknown_model_is_not_found_and_names_the_served_models() -> None:
    """Asking for a model the backend does not serve raises NotFound listing what it serves."""
    backend = SyntheticBackend([FREE], SteppingClock())
    with pytest.raises(NotFound, match=r"'mystery'.*free-1b"):
        await collect(backend, request_for("hello", model="mystery"))


def test_invalid_specs_are_refused_with_a_teaching_message() -> None:
    """Negative costs, an empty answer range and duplicate model names are InvalidArgument."""
    with pytest.raises(InvalidArgument, match="non-negative"):
        SyntheticModelSpec("m", prefill_s_per_token=-1.0)
    with pytest.raises(InvalidArgument, match="min_answer_tokens"):
        SyntheticModelSpec("m", min_answer_tokens=5, max_answer_tokens=2)
    with pytest.raises(InvalidArgument, match="distinct"):
        SyntheticBackend([FREE, FREE], SteppingClock())
    with pytest.raises(InvalidArgument, match="max_tokens"):
        predict_answer(FREE, (), "hello", 0)
