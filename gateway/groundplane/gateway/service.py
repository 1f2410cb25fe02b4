"""The gateway's domain: admission, idempotency, routing, retries and mid-stream failover.

A call (:class:`InferCall`) from an authenticated :class:`~groundplane.gateway.auth.Tenant` runs
like this:

1. **Deadline.** The caller's remaining time (or ``default_deadline_s`` when it set none, capped
   at ``max_deadline_s``) minus ``deadline_margin_s`` is the call's budget; every node hop gets
   that absolute deadline, and every local wait (admission queue, coverage) is bounded by it.
2. **Idempotency.** With a key, a repeated call joins the running execution or replays the
   finished one (:class:`~groundplane.gateway.execution.IdempotencyCache`); the node request id is
   derived from (tenant, key), so even a retry after a failure is de-duplicated by the nodes.
3. **Admission.** The tenant's bounded slots and queue
   (:class:`~groundplane.gateway.admission.AdmissionControl`).
4. **Routing.** The latest route table decides locally (through the :class:`SessionRouter`
   hook) with the gateway's own in-flight counts per satellite. Nothing usable: UNAVAILABLE with
   the next opportunity, or, with ``wait_for_coverage``, a wait for it within the deadline.
5. **Attempts.** The request goes to the first candidate. A retryable failure (node died, node
   full, link went down, node refused) moves to the next candidate, up to ``max_attempts``.
   Tokens already delivered are never sent again: the next satellite answers the same request
   (the synthetic model is deterministic given context and prompt) and the gateway skips what was
   delivered, checking that it matches, so the caller sees every token exactly once. A
   continuation that does not match (a session's context was lost) fails the call.

**Session turns.** With a :class:`~groundplane.gateway.turns.SessionTurns` (``session_turns=``),
a call with a ``session_id`` skips steps 4 and 5: the turn goes to the handoff manager, which
serves it on the session's current assignment (holding it across a handoff), with the caller's
idempotency key as the turn id (a fresh id without one) and the call's remaining deadline. Session
ids are scoped by tenant (``<tenant>:<session id>`` in the manager). The answer arrives whole (the
manager records it before returning it), so a streamed session turn yields one token. Without
``session_turns`` sessions stick to their satellite through the :class:`SessionRouter`.

**Unary calls** (:meth:`InferenceGateway.infer`) ask the node for the answer whole
(``InferRequest.result_only``): no ``InferChunk`` crosses the link, only the ``InferResult`` (a
chunk costs two link messages and a broker round trip on the node before the next). A streaming
call that joins a unary call through its idempotency key therefore gets the answer as one token.

One canonical log line per call: ``gateway_request`` with request id, tenant, model, satellite,
station, attempts, outcome and latency_ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from opentelemetry.trace import Span

from groundplane.gateway.admission import AdmissionControl
from groundplane.gateway.auth import Tenant
from groundplane.gateway.execution import (
    Execution,
    IdempotencyCache,
    InferAnswer,
    Token,
    request_id_for,
)
from groundplane.gateway.metrics import GatewayMetrics
from groundplane.gateway.sources import LinkWatch, RouteTableSource, SessionRouter
from groundplane.gateway.sources import StickySessionRouter as _Sticky
from groundplane.gateway.turns import SessionTurns
from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.client import OFFLINE, NodeDirectory
from groundplane.node.v1 import node_pb2
from groundplane.routing.client import Candidate, InFlightCounter, RouteDecision, RouteRequest

log = structlog.get_logger("groundplane.gateway")
_SCOPE = "groundplane.gateway"
"""The gateway's tracing scope (its spans: ``routing.decide``, ``gateway.attempt``)."""

UNARY = "infer"
STREAMING = "infer_stream"
"""The two methods of a call (:meth:`InferenceGateway.infer` and ``stream``), as metrics and the
canonical log line name them."""

NodeEvent = node_pb2.InferChunk | node_pb2.InferResult


class NodeCaller(Protocol):
    """How the gateway reaches a node (``groundplane.node.requester.Requester``)."""

    def stream(  # noqa: PLR0913 - the target node plus each wire field of a request
        self,
        satellite_id: str,
        station_id: str,
        request: node_pb2.InferRequest,
        *,
        request_id: str,
        deadline: datetime,
        traceparent: str = "",
    ) -> AsyncIterator[NodeEvent]: ...


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Deadlines (wall seconds), retries, defaults and the idempotency memory."""

    default_deadline_s: float = 30.0
    max_deadline_s: float = 300.0
    deadline_margin_s: float = 0.05
    max_attempts: int = 4
    default_max_tokens: int = 256
    max_tokens_limit: int = 8192
    expected_duration_s: float = 0.0
    idempotency_ttl_s: float = 600.0
    max_idempotency_entries: int = 10_000
    max_prompt_chars: int = 100_000

    def __post_init__(self) -> None:
        if not 0 < self.default_deadline_s <= self.max_deadline_s:
            raise InvalidArgument(
                f"expected 0 < default_deadline_s ≤ max_deadline_s, got "
                f"{self.default_deadline_s} and {self.max_deadline_s}"
            )
        if not 0 <= self.deadline_margin_s < self.default_deadline_s:
            raise InvalidArgument(
                f"expected 0 ≤ deadline_margin_s < default_deadline_s, got {self.deadline_margin_s}"
            )
        if self.max_attempts < 1 or self.default_max_tokens < 1:
            raise InvalidArgument(
                f"expected max_attempts ≥ 1 and default_max_tokens ≥ 1, got "
                f"{self.max_attempts} and {self.default_max_tokens}"
            )


@dataclass(frozen=True, slots=True)
class InferCall:
    """One inference call as the gateway's domain sees it (protobuf-free)."""

    model: str
    prompt: str
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    terminal_site_id: str = ""
    session_id: str = ""
    idempotency_key: str = ""
    max_tokens: int = 0
    wait_for_coverage: bool = False

    def fingerprint(self) -> str:
        """Everything that makes two calls the same call (not the waiting preference)."""
        return json.dumps(
            [
                self.model,
                self.prompt,
                self.lat_deg,
                self.lon_deg,
                self.terminal_site_id,
                self.session_id,
                self.max_tokens,
            ]
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """A call's deadline as wall monotonic seconds (local waits) and as a clock instant (hops)."""

    until_monotonic: float
    deadline: datetime
    clock: Clock

    def left_s(self) -> float:
        return self.until_monotonic - self.clock.monotonic()


def hop_budget(clock: Clock, remaining_s: float | None, config: GatewayConfig) -> Budget:
    """The call's budget: caller's remaining time (or the default), capped, minus the margin.

    ``remaining_s`` is wall seconds (gRPC ``time_remaining()``); the hop deadline is on the
    system clock, so a simulated clock running ``speed`` times faster gets ``speed`` times more
    simulated seconds.
    """
    granted_s = config.default_deadline_s if remaining_s is None else remaining_s
    budget_s = min(granted_s, config.max_deadline_s) - config.deadline_margin_s
    if budget_s <= 0.0:
        raise DeadlineExceeded(
            f"the call's deadline leaves {granted_s * 1e3:.1f} ms, less than the gateway's "
            f"margin of {config.deadline_margin_s * 1e3:.1f} ms for a hop to a satellite"
        )
    return Budget(
        clock.monotonic() + budget_s,
        clock.now() + timedelta(seconds=budget_s * clock.speed),
        clock,
    )


class _PathLost(Exception):
    """The attempt's link went down; the request may still run on the node."""


class _Diverged(Exception):
    """The next satellite's answer does not continue the tokens already delivered."""


_RETRYABLE = (Unavailable, ResourceExhausted, NotFound, FailedPrecondition, _PathLost)


@dataclass
class _Record:
    """What the canonical log line and the metrics say about one call."""

    tenant: str
    model: str
    method: str
    started: float
    request_id: str = ""
    satellite_id: str = ""
    station_id: str = ""
    attempts: int = 0
    outcome: str = "OK"
    deduplicated: bool = False
    answered: bool = False
    failures: list[str] = field(default_factory=list)


class InferenceGateway:
    """The domain facade: :meth:`infer` and :meth:`stream` for an authenticated tenant."""

    def __init__(  # noqa: PLR0913 - every collaborator by keyword; all but three optional
        self,
        *,
        clock: Clock,
        caller: NodeCaller,
        tables: RouteTableSource,
        config: GatewayConfig | None = None,
        sessions: SessionRouter | None = None,
        links: LinkWatch | None = None,
        directory: NodeDirectory | None = None,
        metrics: GatewayMetrics | None = None,
        admission: AdmissionControl | None = None,
        session_turns: SessionTurns | None = None,
    ) -> None:
        self.clock = clock
        self.config = config or GatewayConfig()
        self.metrics = metrics or GatewayMetrics()
        self.in_flight = InFlightCounter()
        self.idempotency = IdempotencyCache(
            clock,
            ttl_s=self.config.idempotency_ttl_s,
            max_entries=self.config.max_idempotency_entries,
        )
        self.admission = admission or AdmissionControl(clock)
        self.sessions: SessionRouter = sessions if sessions is not None else _Sticky()
        self._caller = caller
        self._tables = tables
        self._links = links
        self._directory = directory
        self._session_turns = session_turns

    # -- public ----------------------------------------------------------------------------------

    async def infer(
        self, call: InferCall, tenant: Tenant, remaining_s: float | None
    ) -> InferAnswer:
        """Answer ``call`` whole (see the module doc)."""
        async with contextlib.aclosing(self._serve(call, tenant, remaining_s, UNARY)) as events:
            async for event in events:
                if isinstance(event, InferAnswer):
                    return event
        raise AssertionError("unreachable: a call ends with an answer or an error")

    def stream(
        self, call: InferCall, tenant: Tenant, remaining_s: float | None
    ) -> AsyncGenerator[Token | InferAnswer, None]:
        """Each :class:`Token` as it is produced, then the :class:`InferAnswer`."""
        return self._serve(call, tenant, remaining_s, STREAMING)

    # -- one call --------------------------------------------------------------------------------

    async def _serve(
        self, call: InferCall, tenant: Tenant, remaining_s: float | None, method: str
    ) -> AsyncGenerator[Token | InferAnswer, None]:
        record = _Record(tenant.tenant_id, call.model, method, self.clock.monotonic())
        self.metrics.started(tenant.tenant_id)
        try:
            self._validate(call)
            budget = hop_budget(self.clock, remaining_s, self.config)
            async for event in self._admitted(call, tenant, budget, record):
                record.answered = isinstance(event, InferAnswer)
                yield event
        except GroundplaneError as error:
            record.outcome = error.code.name
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if not record.answered:  # closed after the answer: a unary caller took it
                record.outcome = "CANCELLED"
            raise
        except Exception:
            record.outcome = "INTERNAL"
            raise
        finally:
            self._account(record)

    def served_models(self) -> list[str]:
        """The models some node of the current route table serves, sorted."""
        table = self._tables.current()
        if table is None:
            return []
        return sorted(
            {model for routes in table.stations for path in routes.paths for model in path.models}
        )

    def _validate(self, call: InferCall) -> None:
        if not call.model:
            served = ", ".join(repr(m) for m in self.served_models()) or "none yet"
            raise InvalidArgument(f"model is required: expected one of the served models: {served}")
        if not call.prompt:
            raise InvalidArgument("prompt is required: expected a non-empty prompt")
        if len(call.prompt) > self.config.max_prompt_chars:
            raise InvalidArgument(
                f"prompt too long: expected at most {self.config.max_prompt_chars} characters, "
                f"got {len(call.prompt)}"
            )
        if call.max_tokens < 0 or call.max_tokens > self.config.max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens must be 0 (the default) to {self.config.max_tokens_limit}, got "
                f"{call.max_tokens}"
            )
        self._route_request(call)  # model, location

    async def _admitted(
        self, call: InferCall, tenant: Tenant, budget: Budget, record: _Record
    ) -> AsyncIterator[Token | InferAnswer]:
        key = call.idempotency_key
        if key:
            execution, leader = self.idempotency.claim(tenant.tenant_id, key, call.fingerprint())
            record.request_id = execution.request_id
            if not leader:
                record.deduplicated = True
                async for event in execution.follow(budget.left_s()):
                    if isinstance(event, InferAnswer):
                        record.satellite_id, record.station_id = (
                            event.satellite_id,
                            event.station_id,
                        )
                    yield event
                return
        else:
            execution = Execution(uuid.uuid4().hex)
            record.request_id = execution.request_id
        try:
            async with self.admission.admit(tenant, budget.left_s()):
                async for event in self._run(call, execution, budget, record):
                    yield event
        except BaseException as error:
            if not execution.done:
                execution.fail(
                    error
                    if isinstance(error, GroundplaneError)
                    else Unavailable(
                        f"request {execution.request_id!r} stopped before it finished (the "
                        "first caller went away); retry with the same idempotency key"
                    )
                )
                if key:
                    self.idempotency.forget(tenant.tenant_id, key, execution)
            raise
        finally:
            if key and execution.answer is not None:
                self.idempotency.finished(tenant.tenant_id, key)

    def _route_request(self, call: InferCall) -> RouteRequest:
        return RouteRequest(
            model=call.model,
            lat_deg=call.lat_deg,
            lon_deg=call.lon_deg,
            terminal_site_id=call.terminal_site_id,
            expected_duration_s=self.config.expected_duration_s,
            session_key=call.session_id,
        )

    async def _run(
        self, call: InferCall, execution: Execution, budget: Budget, record: _Record
    ) -> AsyncIterator[Token | InferAnswer]:
        if call.session_id and self._session_turns is not None:
            async for event in self._session_turn(
                self._session_turns, call, execution, budget, record
            ):
                yield event
            return
        request = node_pb2.InferRequest(
            model=call.model,
            prompt=call.prompt,
            max_tokens=call.max_tokens or self.config.default_max_tokens,
            session_id=call.session_id,
            # A unary caller sees only the answer: the node sends it whole, no chunks.
            result_only=record.method == UNARY,
        )
        tried: set[tuple[str, str]] = set()
        errors: list[GroundplaneError] = []
        while True:
            if record.attempts >= self.config.max_attempts:
                raise self._exhausted(errors, record)
            candidate = await self._next_candidate(call, budget, tried, errors, record)
            tried.add((candidate.satellite_id, candidate.station_id))
            record.attempts += 1
            record.satellite_id, record.station_id = candidate.satellite_id, candidate.station_id
            try:
                async for event in self._attempt(candidate, request, execution, budget, record):
                    yield event
                return
            except _RETRYABLE as error:
                failure = (
                    error
                    if isinstance(error, GroundplaneError)
                    else Unavailable(
                        f"link {candidate.station_id}/{candidate.satellite_id} went down during "
                        "the request"
                    )
                )
                errors.append(failure)
                record.failures.append(f"{candidate.satellite_id}: {failure.code.name}")
                log.info(
                    "gateway_failover",
                    request_id=execution.request_id,
                    satellite_id=candidate.satellite_id,
                    station_id=candidate.station_id,
                    error=failure.message,
                    tokens_delivered=len(execution.tokens),
                )
            except _Diverged as error:
                if not record.failures:
                    # No failover yet: the satellite's result contradicts its own stream.
                    raise Unavailable(
                        f"request {execution.request_id!r}: {candidate.satellite_id}'s result "
                        f"does not continue the {len(execution.tokens)} tokens it streamed "
                        f"({error}); retry the call"
                    ) from None
                raise Unavailable(
                    f"request {execution.request_id!r} lost satellite {record.failures[-1]} "
                    f"after {len(execution.tokens)} tokens and {candidate.satellite_id} could "
                    f"not continue the same answer ({error}); retry the call"
                ) from None

    async def _session_turn(
        self,
        turns: SessionTurns,
        call: InferCall,
        execution: Execution,
        budget: Budget,
        record: _Record,
    ) -> AsyncIterator[Token | InferAnswer]:
        """One session turn through the handoff manager (see the module doc)."""
        record.attempts = 1
        try:
            async with asyncio.timeout(max(0.0, budget.left_s())):
                turn = await turns.send_turn(
                    f"{record.tenant}:{call.session_id}",
                    call.model,
                    call.prompt,
                    turn_id=call.idempotency_key or execution.request_id,
                    max_tokens=call.max_tokens or self.config.default_max_tokens,
                    deadline=budget.deadline,
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"turn {execution.request_id!r} of session {call.session_id!r} got no answer "
                "before the call's deadline; retry with the same idempotency key"
            ) from None
        record.attempts = max(1, turn.attempts)
        record.satellite_id, record.station_id = turn.satellite_id, turn.station_id
        if turn.text:
            yield execution.push(turn.text, turn.satellite_id)
        answer = InferAnswer(
            execution.request_id,
            execution.text,
            tuple(t.text for t in execution.tokens),
            turn.satellite_id,
            turn.station_id,
            record.attempts,
            call.model,
            deduplicated=turn.replayed,
        )
        execution.finish(answer)
        yield answer

    async def _next_candidate(
        self,
        call: InferCall,
        budget: Budget,
        tried: set[tuple[str, str]],
        errors: list[GroundplaneError],
        record: _Record,
    ) -> Candidate:
        """The best untried usable candidate, waiting for coverage when the call asks."""
        route_request = self._route_request(call)
        while True:
            table = self._tables.current()
            now = self.clock.now()
            next_opportunity: datetime | None = None
            if table is None:
                summary = "the gateway has no route table yet (routing not reachable)"
            else:
                with tracing.span(_SCOPE, "routing.decide") as traced:
                    decision = self.sessions.decide(
                        table, route_request, now, local_in_flight=self.in_flight
                    )
                    if traced is not None:
                        _describe_decision(traced, decision, tried)
                for ranked in decision.ranked:
                    candidate = ranked.candidate
                    if self._usable(candidate, tried):
                        return candidate
                next_opportunity = decision.next_opportunity
                summary = decision.summary
            if errors:
                raise self._exhausted(errors, record)
            if not call.wait_for_coverage:
                raise Unavailable(summary, next_opportunity=next_opportunity)
            await self._wait_for_coverage(summary, next_opportunity, budget, now)

    def _usable(self, candidate: Candidate, tried: set[tuple[str, str]]) -> bool:
        sat, station = candidate.satellite_id, candidate.station_id
        if (sat, station) in tried:
            return False
        if self._links is not None and self._links.is_down(station, sat):
            return False
        if self._directory is not None:
            view = self._directory.get(sat)
            if view is not None and view.state == OFFLINE:
                return False
        return True

    async def _wait_for_coverage(
        self, summary: str, next_opportunity: datetime | None, budget: Budget, now: datetime
    ) -> None:
        left_s = budget.left_s()
        if next_opportunity is not None:
            until_s = (next_opportunity - now).total_seconds() / self.clock.speed
            if until_s > left_s:
                raise Unavailable(
                    f"{summary}; the caller asked to wait for coverage but the next opportunity "
                    f"is {until_s:.3g} s away and the deadline {left_s:.3g} s",
                    next_opportunity=next_opportunity,
                )
            wake_s = max(0.0, until_s)
        else:
            wake_s = left_s
        if left_s <= 0.0:
            raise DeadlineExceeded(f"no coverage before the call's deadline: {summary}")
        # A new table (a pass began, a node came back) or the next opportunity, whichever first.
        await self._tables.wait_for_update(min(wake_s, left_s))
        if budget.left_s() <= 0.0:
            raise DeadlineExceeded(f"no coverage before the call's deadline: {summary}")

    def _exhausted(self, errors: list[GroundplaneError], record: _Record) -> GroundplaneError:
        tried = "; ".join(f"{f}" for f in record.failures) or "none"
        if errors and all(isinstance(e, ResourceExhausted) for e in errors):
            hints = [e.retry_after_s for e in errors if isinstance(e, ResourceExhausted)]
            # Nodes estimate in simulated seconds; callers wait in wall seconds.
            known = [h / self.clock.speed for h in hints if h is not None]
            return ResourceExhausted(
                f"every candidate satellite is full ({tried})",
                retry_after_s=min(known) if known else None,
            )
        last = errors[-1].message if errors else "no candidate"
        return Unavailable(
            f"no satellite could serve the request after {record.attempts} attempts ({tried}); "
            f"last: {last}"
        )

    async def _attempt(  # noqa: PLR0912, PLR0915 - one attempt, its span, its failover signals
        self,
        candidate: Candidate,
        request: node_pb2.InferRequest,
        execution: Execution,
        budget: Budget,
        record: _Record,
    ) -> AsyncIterator[Token | InferAnswer]:
        sat, station = candidate.satellite_id, candidate.station_id
        delivered = execution.text
        produced = ""
        next_index = 0
        gap = False
        lost = False
        loop = asyncio.get_running_loop()
        remove: Callable[[], None] = _nothing
        traced = tracing.start_span(  # None unless tracing is on; ended in the finally
            _SCOPE,
            "gateway.attempt",
            attributes={
                "groundplane.satellite_id": sat,
                "groundplane.station_id": station,
                "groundplane.attempt": record.attempts,
            },
        )
        failure: BaseException | None = None
        self.in_flight.started(sat)
        try:
            async with asyncio.timeout(None) as timer:

                def on_down() -> None:
                    nonlocal lost
                    lost = True
                    timer.reschedule(loop.time())

                if self._links is not None:
                    remove = self._links.on_down(station, sat, on_down)
                events = self._caller.stream(
                    sat,
                    station,
                    request,
                    request_id=execution.request_id,
                    deadline=budget.deadline,
                    traceparent=tracing.traceparent(traced) if traced is not None else "",
                )
                async with contextlib.aclosing(events) as replies:  # type: ignore[type-var]
                    async for event in replies:
                        if isinstance(event, node_pb2.InferChunk):
                            if event.index != next_index:
                                gap = True  # a piece was lost on the link: the result fills it
                            next_index = event.index + 1
                            if gap:
                                continue
                            produced += event.text
                            fresh = _continue(delivered, produced, sat)
                            if fresh:
                                delivered += fresh
                                yield execution.push(fresh, sat)
                            continue
                        rest = _rest_of(delivered, event, sat)
                        if record.method == UNARY:
                            # The unary caller takes only the answer: the tokens go to the
                            # execution (for idempotent joiners) at once, not up the generators.
                            execution.extend(rest, sat)
                        else:
                            for piece in rest:
                                yield execution.push(piece, sat)
                        answer = InferAnswer(
                            execution.request_id,
                            execution.text,
                            tuple(t.text for t in execution.tokens),
                            sat,
                            station,
                            record.attempts,
                            event.model or request.model,
                        )
                        execution.finish(answer)
                        if request.session_id:
                            self.sessions.assigned(
                                request.session_id, sat, station, self.clock.now()
                            )
                        yield answer
                        return
        except TimeoutError as error:
            failure = error
            if lost:
                raise _PathLost() from None
            raise
        except BaseException as error:
            failure = error
            raise
        finally:
            remove()
            self.in_flight.finished(sat)
            tracing.end(traced, failure)
        raise Unavailable(f"node {sat!r} via {station!r} ended the reply without a result")

    def _account(self, record: _Record) -> None:
        latency_s = self.clock.monotonic() - record.started
        tenant = record.tenant
        self.metrics.finished(
            tenant,
            outcome=record.outcome,
            method=record.method,
            duration_s=latency_s,
            attempts=None if record.deduplicated else record.attempts,
        )
        log.info(
            "gateway_request",
            request_id=record.request_id,
            tenant=tenant,
            model=record.model,
            method=record.method,
            satellite_id=record.satellite_id,
            station_id=record.station_id,
            attempts=record.attempts,
            outcome=record.outcome,
            deduplicated=record.deduplicated,
            failures=record.failures,
            latency_ms=round(latency_s * 1e3, 3),
        )


def _nothing() -> None:
    return None


def _describe_decision(traced: Span, decision: RouteDecision, tried: set[tuple[str, str]]) -> None:
    """The routing decision on its span (only when tracing)."""
    traced.set_attribute("groundplane.route_table_version", decision.table_version)
    traced.set_attribute("groundplane.candidates", len(decision.ranked))
    traced.set_attribute("groundplane.already_tried", len(tried))
    if decision.ranked:
        best = decision.ranked[0].candidate
        traced.set_attribute("groundplane.satellite_id", best.satellite_id)
        traced.set_attribute("groundplane.station_id", best.station_id)


def _rest_of(delivered: str, result: node_pb2.InferResult, satellite_id: str) -> list[str]:
    """The tokens of ``result`` not yet delivered: the result's own pieces when nothing was
    (a ``result_only`` answer carries them), else what its text adds as one token."""
    rest = _continue(delivered, result.text, satellite_id)
    if not rest:
        return []
    if not delivered and "".join(result.pieces) == result.text:
        return list(result.pieces)
    return [rest]


def _continue(delivered: str, produced: str, satellite_id: str) -> str:
    """The part of ``produced`` (this attempt's text so far) not yet delivered.

    Raises :class:`_Diverged` when ``produced`` and ``delivered`` disagree on their common
    prefix: the new satellite is not continuing the same answer.
    """
    common = min(len(delivered), len(produced))
    if produced[:common] != delivered[:common]:
        raise _Diverged(
            f"{satellite_id} produced {produced[:common][-40:]!r} where "
            f"{delivered[:common][-40:]!r} was delivered"
        )
    return produced[len(delivered) :] if len(produced) > len(delivered) else ""


__all__ = [
    "Budget",
    "GatewayConfig",
    "InferAnswer",
    "InferCall",
    "InferenceGateway",
    "NodeCaller",
    "Token",
    "hop_budget",
    "request_id_for",
]
