"""The handoff manager's :class:`~groundplane.handoff.nodes.NodePort` over the node contract.

The one module of handoff where the manager's values meet the node's messages: turns and job
prompts go out as ``InferRequest`` through the contract's
:class:`~groundplane.node.client.Requester`, exports, imports and fences as the session messages,
and snapshots are read and written in the node's snapshot format
(:func:`groundplane.node.client.encode_session`). Turns are the contract's own
:class:`~groundplane.node.client.Turn`, so a snapshot's turns pass through unconverted.
"""

from __future__ import annotations

from datetime import datetime

from groundplane.handoff.nodes import ExportedState, SessionSnapshot, TurnAnswer
from groundplane.node.client import Requester, SessionState, decode_session, encode_session
from groundplane.node.v1 import node_pb2


def to_node_state(snapshot: SessionSnapshot) -> SessionState:
    """The node's session value of ``snapshot`` (the same turns tuple, not a copy)."""
    return SessionState(snapshot.session_id, snapshot.model, snapshot.epoch, snapshot.turns)


def from_node_state(state: SessionState) -> SessionSnapshot:
    """The manager's snapshot of a node's session value (the same turns tuple, not a copy)."""
    return SessionSnapshot(state.session_id, state.model, state.epoch, state.turns)


def encode_snapshot(snapshot: SessionSnapshot) -> bytes:
    """``snapshot`` in the node's snapshot format (what a node imports and exports)."""
    return encode_session(to_node_state(snapshot))


class RequesterNodes:
    """Implements :class:`~groundplane.handoff.nodes.NodePort` with a :class:`Requester`."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    async def run_turn(  # noqa: PLR0913 - the NodePort.run_turn signature
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
        outcome = await self._requester.infer(
            satellite_id,
            station_id,
            node_pb2.InferRequest(
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                session_id=session_id,
                session_epoch=epoch,
                result_only=True,  # the turn's answer is its text: no chunks on the link
            ),
            request_id=request_id,
            deadline=deadline,
        )
        result = outcome.result
        return TurnAnswer(result.text, result.session_applied, result.session_epoch)

    async def run_prompt(  # noqa: PLR0913 - the NodePort.run_prompt signature
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
        outcome = await self._requester.infer(
            satellite_id,
            station_id,
            node_pb2.InferRequest(
                model=model, prompt=prompt, max_tokens=max_tokens, result_only=True
            ),
            request_id=request_id,
            deadline=deadline,
        )
        return outcome.text

    async def export_state(  # noqa: PLR0913 - the NodePort.export_state signature
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        *,
        fence_epoch: int,
        request_id: str,
        deadline: datetime,
    ) -> ExportedState:
        """Raises InvalidArgument when the node's snapshot is not a valid one."""
        exported = await self._requester.export_session(
            satellite_id,
            station_id,
            session_id,
            fence_epoch=fence_epoch,
            request_id=request_id,
            deadline=deadline,
        )
        return ExportedState(
            from_node_state(decode_session(exported.snapshot)),
            exported.state_bytes,
            exported.context_tokens,
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
        await self._requester.import_session(
            satellite_id,
            station_id,
            encode_snapshot(snapshot),
            session_epoch=snapshot.epoch,
            request_id=request_id,
            deadline=deadline,
        )

    async def fence(
        self,
        satellite_id: str,
        station_id: str,
        session_id: str,
        epoch: int,
        *,
        deadline: datetime,
    ) -> None:
        await self._requester.fence_session(
            satellite_id, station_id, session_id, epoch, deadline=deadline
        )

    def checkpoint_bytes(self, snapshot: SessionSnapshot) -> bytes:
        return encode_snapshot(snapshot)
