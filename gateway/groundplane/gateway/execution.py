"""One call's execution as the gateway sees it: the tokens delivered so far and the outcome.

The leader (the call that runs the work) pushes tokens and finishes or fails the execution;
callers that join it through an idempotency key follow it from the first token. A finished
execution stays in the :class:`IdempotencyCache` for ``ttl_s`` (system clock), so a retry with
the same key gets the same answer without running again; a failed one is forgotten, so a retry
runs it again (under the same node request id, which the nodes de-duplicate).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, GroundplaneError, InvalidArgument


@dataclass(frozen=True, slots=True)
class Token:
    """One token of an answer, numbered from 0 without gaps or repeats."""

    index: int
    text: str
    satellite_id: str


@dataclass(frozen=True, slots=True)
class InferAnswer:
    """A finished call."""

    request_id: str
    text: str
    tokens: tuple[str, ...]
    satellite_id: str
    station_id: str
    attempts: int
    model: str
    deduplicated: bool = False


class Execution:
    """Tokens and outcome of one call, followed by any number of joiners."""

    def __init__(self, request_id: str, fingerprint: str = "") -> None:
        self.request_id = request_id
        self.fingerprint = fingerprint
        self.tokens: list[Token] = []
        self.answer: InferAnswer | None = None
        self.error: GroundplaneError | None = None
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.answer is not None or self.error is not None

    @property
    def text(self) -> str:
        return "".join(token.text for token in self.tokens)

    def push(self, text: str, satellite_id: str) -> Token:
        token = Token(len(self.tokens), text, satellite_id)
        self.tokens.append(token)
        self._wake()
        return token

    def extend(self, texts: Sequence[str], satellite_id: str) -> None:
        """:meth:`push` each of ``texts``, waking joiners once."""
        if not texts:
            return
        first = len(self.tokens)
        self.tokens.extend(
            Token(first + offset, text, satellite_id) for offset, text in enumerate(texts)
        )
        self._wake()

    def finish(self, answer: InferAnswer) -> None:
        self.answer = answer
        self._wake()

    def fail(self, error: GroundplaneError) -> None:
        if not self.done:
            self.error = error
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, timeout_s: float) -> AsyncIterator[Token | InferAnswer]:
        """Every token from the first, then the answer (marked deduplicated), or the error."""
        sent = 0
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                while True:
                    while sent < len(self.tokens):
                        yield self.tokens[sent]
                        sent += 1
                    if self.answer is not None:
                        yield _replayed(self.answer)
                        return
                    if self.error is not None:
                        raise self.error
                    await self._changed.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the call joined request {self.request_id!r} (same idempotency key) and its "
                "deadline ran out before that request finished; retry with the same key"
            ) from None


def _replayed(answer: InferAnswer) -> InferAnswer:
    return InferAnswer(
        answer.request_id,
        answer.text,
        answer.tokens,
        answer.satellite_id,
        answer.station_id,
        answer.attempts,
        answer.model,
        deduplicated=True,
    )


def request_id_for(tenant_id: str, idempotency_key: str) -> str:
    """The node request id of an idempotent call: the same for every retry of the key."""
    digest = hashlib.sha256(f"{tenant_id}\0{idempotency_key}".encode()).hexdigest()
    return f"gw-{digest[:32]}"


class IdempotencyCache:
    """(tenant, key) → :class:`Execution`, running or finished (finished ones expire)."""

    def __init__(self, clock: Clock, *, ttl_s: float = 600.0, max_entries: int = 10_000) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise InvalidArgument(
                f"expected idempotency ttl_s ≥ 0 and max_entries ≥ 1, got {ttl_s} and {max_entries}"
            )
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[datetime, Execution]] = OrderedDict()
        self.executions_total = 0
        """Executions started (a joined or replayed call does not count)."""

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, tenant_id: str, key: str, fingerprint: str) -> tuple[Execution, bool]:
        """The execution for the key and whether the caller leads it (True: run it)."""
        self._expire()
        found = self._entries.get((tenant_id, key))
        if found is not None:
            execution = found[1]
            if execution.fingerprint != fingerprint:
                raise InvalidArgument(
                    f"idempotency key {key!r} was already used for a different call (another "
                    "model, prompt, location, session or token budget); use a new key for new work"
                )
            return execution, False
        execution = Execution(request_id_for(tenant_id, key), fingerprint)
        self._entries[(tenant_id, key)] = (self._clock.now(), execution)
        self.executions_total += 1
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return execution, True

    def finished(self, tenant_id: str, key: str) -> None:
        """Start the key's time to live at completion."""
        entry = self._entries.get((tenant_id, key))
        if entry is not None:
            self._entries[(tenant_id, key)] = (self._clock.now(), entry[1])
            self._entries.move_to_end((tenant_id, key))

    def forget(self, tenant_id: str, key: str, execution: Execution) -> None:
        entry = self._entries.get((tenant_id, key))
        if entry is not None and entry[1] is execution:
            del self._entries[(tenant_id, key)]

    def _expire(self) -> None:
        oldest = self._clock.now() - self._ttl
        while self._entries:
            stamp, execution = next(iter(self._entries.values()))
            if stamp >= oldest or not execution.done:
                return
            self._entries.popitem(last=False)
