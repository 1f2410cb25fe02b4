"""The synthetic ground-user load: a gRPC client of the gateway with a bearer token.

* **Requests**: ``rate_rps`` stateless calls per wall second, paced on the event loop's clock
  (open loop: a call does not wait for the previous one; at most ``max_in_flight`` are
  outstanding, beyond that arrivals wait). Users take turns in order; each call is a unary
  ``Infer`` from the user's position with a deadline of ``deadline_s``.
* **Sessions**: ``sessions`` continuous multi-turn conversations, each of one user, one turn after
  another (``session_think_s`` wall seconds apart). Session ids are
  ``load-<run id>-session-<k>``. Every turn carries the idempotency key
  ``<session id>-turn-<n>``; a turn that fails UNAVAILABLE or DEADLINE_EXCEEDED is sent again
  with the same key (at most ``session_turn_tries`` times, so a turn that did run is answered
  from the record and never runs twice) and counts as failed only when no try answered. Every
  answer is checked against :func:`~groundplane.node.backends.predict_answer` of the session's
  full context as the user saw it: a node that lost (or never had) the context answers
  differently, which counts as a context mismatch.

Every call ends in exactly one :class:`~.report.Outcome`; UNAVAILABLE keeps the next opportunity
the gateway announced (trailing metadata ``groundplane-next-opportunity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from groundplane.gateway.servicer import NEXT_OPPORTUNITY_KEY
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock, parse_utc
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.kernel.tls import open_channel
from groundplane.node.backends import SyntheticModelSpec, predict_answer
from groundplane.node.sessions import Turn
from groundplane.scenario import GroundUser
from groundplane.system.report import Outcome, RunStats, TraceRecord

SESSION_MAX_TOKENS = 64
"""Answer budget of session turns (above every built-in model's natural answer length)."""


@dataclass(frozen=True)
class LoadConfig:
    """Who calls, how often, and with what."""

    target: str
    token: str
    users: Sequence[GroundUser]
    model: SyntheticModelSpec
    rate_rps: float
    sessions: int = 0
    session_think_s: float = 0.5
    deadline_s: float = 10.0
    max_in_flight: int = 256
    run_id: str = "run"
    session_turn_tries: int = 3

    def __post_init__(self) -> None:
        if not self.users:
            raise InvalidArgument("the load needs at least one ground user, got none")
        if not (math.isfinite(self.rate_rps) and self.rate_rps >= 0):
            raise InvalidArgument(f"--rate must be ≥ 0 requests per second, got {self.rate_rps}")
        if self.sessions < 0:
            raise InvalidArgument(f"--sessions must be ≥ 0, got {self.sessions}")
        if self.session_turn_tries < 1:
            raise InvalidArgument(f"expected session_turn_tries ≥ 1, got {self.session_turn_tries}")
        if not self.deadline_s > 0 or self.max_in_flight < 1:
            raise InvalidArgument(
                f"expected deadline_s > 0 and max_in_flight ≥ 1, got {self.deadline_s} and "
                f"{self.max_in_flight}"
            )


def load_users(path: str) -> list[GroundUser]:
    """Users from CSV ``id,name,lat,lon,alt`` (header optional, like ``cities-top100.csv``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidArgument(f"cannot read --users file {path!r}: {error.strerror}") from None
    users: list[GroundUser] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 4:
            raise InvalidArgument(
                f"{path}:{number}: expected id,name,lat,lon[,alt], got {len(row)} field(s)"
            )
        try:
            lat, lon = float(row[2]), float(row[3])
            alt = float(row[4]) if len(row) > 4 and row[4].strip() else 0.0
        except ValueError:
            if number == 1 and not users:
                continue  # a header line
            raise InvalidArgument(
                f"{path}:{number}: expected numeric lat,lon,alt, got {row[2:5]!r}"
            ) from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise InvalidArgument(
                f"{path}:{number}: expected lat in [-90, 90] and lon in [-180, 180], got "
                f"{lat}, {lon}"
            )
        users.append(GroundUser(row[0].strip(), row[1].strip(), lat, lon, alt))
    if not users:
        raise InvalidArgument(f"--users file {path!r} holds no users")
    return users


def random_users(count: int, seed: int = 0) -> list[GroundUser]:
    """``count`` users uniformly over the sphere (deterministic for a seed)."""
    if count < 1:
        raise InvalidArgument(f"--users N must be ≥ 1, got {count}")
    rng = random.Random(seed)
    users = []
    for index in range(count):
        lat = math.degrees(math.asin(rng.uniform(-1.0, 1.0)))
        lon = rng.uniform(-180.0, 180.0)
        users.append(GroundUser(f"user-{index}", f"random user {index}", lat, lon))
    return users


class GroundLoad:
    """Runs the load until :meth:`stop`; every call is a task of one TaskGroup."""

    def __init__(self, config: LoadConfig, clock: Clock, stats: RunStats) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_in_flight)

    def stop(self) -> None:
        """No new calls or turns; :meth:`run` returns once the outstanding ones ended."""
        self._stopping.set()

    async def run(self) -> None:
        auth = (("authorization", f"Bearer {self.config.token}"),)
        async with open_channel(self.config.target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            async with asyncio.TaskGroup() as tasks:
                for index in range(self.config.sessions):
                    tasks.create_task(
                        self._session(stub, auth, index), name=f"load-session:{index}"
                    )
                if self.config.rate_rps > 0:
                    await self._arrivals(stub, auth, tasks)
                else:
                    await self._stopping.wait()

    async def _arrivals(
        self,
        stub: pb_grpc.InferenceServiceAsyncStub,
        auth: tuple[tuple[str, str]],
        tasks: asyncio.TaskGroup,
    ) -> None:
        loop = asyncio.get_running_loop()
        interval_s = 1.0 / self.config.rate_rps
        due = loop.time()
        users = itertools.cycle(self.config.users)
        for number in itertools.count():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, due - loop.time()))
            if self._stopping.is_set():
                return
            due += interval_s
            await self._slots.acquire()
            self.stats.submitted += 1
            tasks.create_task(
                self._request(stub, auth, next(users), number), name=f"load-request:{number}"
            )

    async def _request(
        self,
        stub: pb_grpc.InferenceServiceAsyncStub,
        auth: tuple[tuple[str, str]],
        user: GroundUser,
        number: int,
    ) -> None:
        try:
            request = pb.InferRequest(
                model=self.config.model.name,
                prompt=f"question {number} from {user.name}",
                location=pb.UserLocation(lat_deg=user.lat_deg, lon_deg=user.lon_deg),
            )
            record = await self._call(stub, auth, request, user, f"load-{number}")
            self.stats.record(record)
        finally:
            self._slots.release()

    async def _call(
        self,
        stub: pb_grpc.InferenceServiceAsyncStub,
        auth: tuple[tuple[str, str]],
        request: pb.InferRequest,
        user: GroundUser,
        own_id: str,
    ) -> TraceRecord:
        loop = asyncio.get_running_loop()
        submitted_at, started = self.clock.now(), loop.time()
        station = satellite = detail = ""
        attempts = 0
        request_id = own_id
        next_opportunity: datetime | None = None
        # One trace per request when the run traces: its id goes into the trace record.
        with tracing.span("groundplane.load", "load.infer") as traced:
            try:
                reply = await stub.Infer(request, metadata=auth, timeout=self.config.deadline_s)
                status = Outcome.OK
                station, satellite = reply.station_id, reply.satellite_id
                attempts, request_id = reply.attempts, reply.request_id or own_id
            except grpc.aio.AioRpcError as error:
                code = error.code()
                detail = f"{code.name}: {error.details()}"
                if code is grpc.StatusCode.UNAVAILABLE:
                    status = Outcome.REJECTED_UNAVAILABLE
                    next_opportunity = _next_opportunity(error)
                elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    status = Outcome.REJECTED_OVERLOAD
                else:
                    status = Outcome.FAILED
        return TraceRecord(
            request_id=request_id,
            submitted_at=submitted_at,
            completed_at=self.clock.now(),
            status=status,
            user_lat=user.lat_deg,
            user_lon=user.lon_deg,
            station=station,
            satellite=satellite,
            attempts=attempts,
            latency_ms=(loop.time() - started) * 1000.0,
            next_opportunity=next_opportunity,
            detail=detail,
            trace_id=tracing.trace_id(traced) if traced is not None else "",
        )

    async def _session(
        self,
        stub: pb_grpc.InferenceServiceAsyncStub,
        auth: tuple[tuple[str, str]],
        index: int,
    ) -> None:
        user = self.config.users[index % len(self.config.users)]
        session_id = f"load-{self.config.run_id}-session-{index}"
        context: list[Turn] = []
        counters = self.stats.sessions
        for turn in itertools.count():
            if self._stopping.is_set():
                return
            prompt = f"turn {turn} of session {index} from {user.name}"
            request = pb.InferRequest(
                model=self.config.model.name,
                prompt=prompt,
                location=pb.UserLocation(lat_deg=user.lat_deg, lon_deg=user.lon_deg),
                session_id=session_id,
                max_tokens=SESSION_MAX_TOKENS,
                idempotency_key=f"{session_id}-turn-{turn}",
            )
            reply = await self._session_turn(stub, auth, request)
            counters.turns += 1
            if reply is None:
                counters.failed_turns += 1
            else:
                expected = predict_answer(
                    self.config.model, tuple(context), prompt, SESSION_MAX_TOKENS
                )
                if reply.text != expected.text:
                    counters.context_mismatches += 1
                context.append(Turn(prompt, reply.text))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.session_think_s)

    async def _session_turn(
        self,
        stub: pb_grpc.InferenceServiceAsyncStub,
        auth: tuple[tuple[str, str]],
        request: pb.InferRequest,
    ) -> pb.InferResponse | None:
        """The turn's answer, retried with the same idempotency key; None when none came."""
        for attempt in range(self.config.session_turn_tries):
            try:
                return await stub.Infer(request, metadata=auth, timeout=self.config.deadline_s)
            except grpc.aio.AioRpcError as error:
                retryable = error.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not retryable or attempt + 1 >= self.config.session_turn_tries:
                    return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.session_think_s)
        return None


def _next_opportunity(error: grpc.aio.AioRpcError) -> datetime | None:
    pairs: Any = error.trailing_metadata() or ()
    for key, value in pairs:
        if key == NEXT_OPPORTUNITY_KEY and isinstance(value, str):
            try:
                return parse_utc(value)
            except GroundplaneError:
                return None
    return None
