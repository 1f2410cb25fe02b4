"""Admission control: per tenant, a bounded number of running calls and a bounded queue.

A call that finds its tenant's running slots taken waits in the tenant's FIFO queue (within its
deadline); a call that finds the queue full too is refused at once with
:class:`ResourceExhausted` and a retry hint (the tenant's recent service time times the queue
rounds ahead of it). Tenants never share slots, so one tenant flooding the gateway does not slow
another down.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from groundplane.gateway.auth import Tenant
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, ResourceExhausted

_SERVICE_EWMA_WEIGHT = 0.2


@dataclass
class _Gate:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    service_estimate_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """A tenant's admission state."""

    running: int
    queued: int
    service_estimate_s: float


class AdmissionControl:
    """Per-tenant slots and queues; ``async with admission.admit(tenant, timeout_s):``."""

    def __init__(self, clock: Clock, *, initial_service_estimate_s: float = 1.0) -> None:
        self._clock = clock
        self._initial_s = initial_service_estimate_s
        self._gates: dict[str, _Gate] = {}

    def load(self, tenant_id: str) -> TenantLoad:
        gate = self._gates.get(tenant_id) or _Gate(service_estimate_s=self._initial_s)
        queued = sum(1 for f in gate.waiting if not f.done())
        return TenantLoad(gate.running, queued, gate.service_estimate_s)

    def retry_after_s(self, tenant: Tenant) -> float:
        """How long until a new call of ``tenant`` would likely be admitted (wall seconds)."""
        gate = self._gate(tenant.tenant_id)
        rounds = math.ceil((len(gate.waiting) + 1) / tenant.max_concurrent)
        return max(0.001, gate.service_estimate_s * rounds)

    def _gate(self, tenant_id: str) -> _Gate:
        gate = self._gates.get(tenant_id)
        if gate is None:
            gate = self._gates[tenant_id] = _Gate(service_estimate_s=self._initial_s)
        return gate

    @asynccontextmanager
    async def admit(self, tenant: Tenant, timeout_s: float) -> AsyncIterator[None]:
        """Hold one of the tenant's slots for the body (queueing at most ``timeout_s``)."""
        gate = self._gate(tenant.tenant_id)
        await self._acquire(gate, tenant, timeout_s)
        started = self._clock.monotonic()
        try:
            yield
        finally:
            held_s = self._clock.monotonic() - started
            gate.service_estimate_s += _SERVICE_EWMA_WEIGHT * (held_s - gate.service_estimate_s)
            self._release(gate)

    async def _acquire(self, gate: _Gate, tenant: Tenant, timeout_s: float) -> None:
        if gate.running < tenant.max_concurrent and not gate.waiting:
            gate.running += 1
            return
        if len(gate.waiting) >= tenant.max_queued:
            retry_s = self.retry_after_s(tenant)
            raise ResourceExhausted(
                f"tenant {tenant.tenant_id!r} is at its limit: {gate.running} of "
                f"{tenant.max_concurrent} calls running and {len(gate.waiting)} of "
                f"{tenant.max_queued} queued; retry in about {retry_s:.3g} s",
                retry_after_s=retry_s,
            )
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiting.append(ticket)
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await ticket
        except BaseException as error:
            if ticket.done() and not ticket.cancelled():
                self._release(gate)  # the slot was handed over but this call leaves
            else:
                ticket.cancel()
                if ticket in gate.waiting:
                    gate.waiting.remove(ticket)
            if isinstance(error, TimeoutError):
                raise DeadlineExceeded(
                    f"tenant {tenant.tenant_id!r}: the call waited {timeout_s:.3g} s in the "
                    "admission queue and its deadline ran out before a slot freed"
                ) from None
            raise

    @staticmethod
    def _release(gate: _Gate) -> None:
        while gate.waiting:
            ticket = gate.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the slot passes to the first waiter
                return
        gate.running -= 1
