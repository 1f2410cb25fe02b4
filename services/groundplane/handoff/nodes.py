"""What the handoff manager needs from the nodes: :class:`NodePort` and the values it carries.

The manager never sees a node's wire messages or its snapshot format: it runs turns and job
prompts, exports a session's state fenced at an epoch, imports a :class:`SessionSnapshot` under an
epoch and fences a closed session, all through a :class:`NodePort`. In the handoff process (and
the handoff benchmark) the port is :class:`groundplane.handoff.node_adapter.RequesterNodes`, the
node contract's requester over MQTT, which parses and writes the node's snapshot format.

A :class:`Turn` is the node contract's own value (:mod:`groundplane.node.client`): one definition,
with the nodes' token count, so a session's turns pass between the manager and the nodes as they
are.

Every operation raises :mod:`groundplane.kernel.errors`: ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``
when the node may or may not have done it (retry with the same request id), ``FAILED_PRECONDITION``
when the session moved away from that node, ``NOT_FOUND`` when the node does not hold it,
``RESOURCE_EXHAUSTED`` (with ``retry_after_s``) when the node is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from groundplane.node.client import Turn

__all__ = ["ExportedState", "NodePort", "SessionSnapshot", "Turn", "TurnAnswer"]


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session's content (id, model, turns) under a fencing epoch, as it moves between nodes."""

    session_id: str
    model: str
    epoch: int
    turns: tuple[Turn, ...]

    def same_content(self, other: SessionSnapshot) -> bool:
        """Same id, model and turns (the epoch is left out: it only says where the state is)."""
        return (self.session_id, self.model, self.turns) == (
            other.session_id,
            other.model,
            other.turns,
        )


@dataclass(frozen=True, slots=True)
class ExportedState:
    """A session as a node exported it."""

    snapshot: SessionSnapshot
    state_bytes: int
    """The node's modelled state size (context tokens × its bytes per token; 0 if unknown)."""
    context_tokens: int


@dataclass(frozen=True, slots=True)
class TurnAnswer:
    """A node's answer to a session turn."""

    text: str
    applied: bool
    """The node added the turn to the session's context (False: it was fenced meanwhile)."""
    epoch: int
    """The session epoch the turn ran under."""


class NodePort(Protocol):
    """The node operations of the handoff manager (see the module doc for the errors)."""

    async def run_turn(  # noqa: PLR0913 - a turn's wire fields, all keywords; the port mirrors the RPC
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
        """Run one turn of a session the node holds at ``epoch`` (or opens, at its first)."""
        ...

    async def run_prompt(  # noqa: PLR0913 - a job item's wire fields, all keywords, as in the RPC
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
        """Answer one prompt outside any session (a job item); the text of the answer."""
        ...

    async def export_state(  # noqa: PLR0913 - the export RPC: node, session, fence epoch, id, deadline
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        *,
        fence_epoch: int,
        request_id: str,
        deadline: datetime,
    ) -> ExportedState:
        """Snapshot a session and fence it there at ``fence_epoch`` in the same step;
        INVALID_ARGUMENT when the node's snapshot cannot be read (the fence still holds)."""
        ...

    async def import_state(
        self,
        satellite_id: str,
        station_id: str,
        snapshot: SessionSnapshot,
        *,
        request_id: str,
        deadline: datetime,
    ) -> None:
        """Install ``snapshot`` on the node under ``snapshot.epoch``."""
        ...

    async def fence(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        epoch: int,
        *,
        deadline: datetime,
    ) -> None:
        """Tell the node the session moved elsewhere (or closed) at ``epoch``."""
        ...

    def checkpoint_bytes(self, snapshot: SessionSnapshot) -> bytes:
        """``snapshot`` in the nodes' own format, as the ground store keeps checkpoints."""
        ...
