"""Session state: a multi-turn conversation, its size, its fencing epoch and its export format.

A session is the ordered list of turns (prompt, answer) one user had with one model. Its *content*
(session id, model, turns) is what a model conditions on, so the answer to the next prompt is a
function of that content; the content hash identifies it, and two nodes holding the same hash
answer alike. The *epoch* is a fencing token: every import on a new node carries a higher epoch,
and work done under an older epoch is recognisable (results carry the epoch they ran under) and
rejectable.

The modelled state size is ``context tokens × bytes per token``: the bytes a real node would move
to hand the session over (e.g. its KV cache), configured per model. The exported snapshot itself is
compact JSON; handoff sizes the transfer with ``size_bytes``, not with ``len(snapshot)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, NotFound

SNAPSHOT_FORMAT = "groundplane.node.session/1"

_T = TypeVar("_T")


def count_tokens(text: str) -> int:
    """The node's token accounting: whitespace-separated words.

    Real tokenizers differ per model; this count drives the synthetic cost model and the modelled
    session size, both of which only need a count that grows with the text.
    """
    return len(text.split())


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange of a conversation: what the user asked and what the model answered."""

    prompt: str
    answer: str

    @property
    def tokens(self) -> int:
        return count_tokens(self.prompt) + count_tokens(self.answer)


def context_tokens(turns: tuple[Turn, ...]) -> int:
    """Tokens of a whole context (every prompt and answer)."""
    return sum(turn.tokens for turn in turns)


def canonical_context(model: str, turns: tuple[Turn, ...]) -> list[Any]:
    """The JSON-ready form of a context that hashes and exports share."""
    return [model, [[turn.prompt, turn.answer] for turn in turns]]


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session at one epoch: immutable; a turn produces a new state."""

    session_id: str
    model: str
    epoch: int = 0
    turns: tuple[Turn, ...] = ()

    @property
    def context_tokens(self) -> int:
        return context_tokens(self.turns)

    def size_bytes(self, bytes_per_token: int) -> int:
        """Modelled state size: context tokens × ``bytes_per_token`` of this session's model."""
        return self.context_tokens * bytes_per_token

    @property
    def content_sha256(self) -> str:
        """Hex SHA-256 of the content (id, model, turns); the epoch is deliberately left out."""
        body = json.dumps(
            [self.session_id, *canonical_context(self.model, self.turns)],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def with_turn(self, turn: Turn) -> SessionState:
        return SessionState(self.session_id, self.model, self.epoch, (*self.turns, turn))

    def with_epoch(self, epoch: int) -> SessionState:
        """The same content under another fencing epoch (what a handoff imports elsewhere)."""
        return SessionState(self.session_id, self.model, epoch, self.turns)


def encode_session(state: SessionState) -> bytes:
    """Serialise a session to UTF-8 JSON carrying its content hash."""
    document = {
        "format": SNAPSHOT_FORMAT,
        "session_id": state.session_id,
        "model": state.model,
        "epoch": state.epoch,
        "turns": [[turn.prompt, turn.answer] for turn in state.turns],
        "content_sha256": state.content_sha256,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_session(data: bytes) -> SessionState:
    """Parse and verify a snapshot made by :func:`encode_session`.

    Raises InvalidArgument saying what was expected when the bytes are not a snapshot, a field is
    missing or mistyped, or the content does not match its hash (a corrupted or edited transfer).
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        # ValueError: not UTF-8, not JSON, or an integer past Python's int-string digit limit;
        # RecursionError: arrays or objects nested deeper than the decoder's recursion limit.
        raise InvalidArgument(
            f"expected a session snapshot (UTF-8 JSON, format {SNAPSHOT_FORMAT}), "
            f"got undecodable bytes: {error}"
        ) from None
    if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
        seen = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InvalidArgument(
            f"expected a session snapshot with format {SNAPSHOT_FORMAT!r}, got {seen!r}"
        )
    session_id = _field(document, "session_id", str)
    model = _field(document, "model", str)
    epoch = _field(document, "epoch", int)
    raw_turns = _field(document, "turns", list)
    expected_hash = _field(document, "content_sha256", str)
    turns: list[Turn] = []
    for index, raw in enumerate(raw_turns):
        if not (
            isinstance(raw, list) and len(raw) == 2 and all(isinstance(part, str) for part in raw)
        ):
            raise InvalidArgument(
                f"expected turn {index} of session {session_id!r} as [prompt, answer] strings, "
                f"got {raw!r:.80}"
            )
        turns.append(Turn(raw[0], raw[1]))
    if epoch < 0:
        raise InvalidArgument(f"expected a session epoch ≥ 0, got {epoch}")
    state = SessionState(session_id, model, epoch, tuple(turns))
    if state.content_sha256 != expected_hash:
        raise InvalidArgument(
            f"session snapshot {session_id!r} is corrupt: its content hashes to "
            f"{state.content_sha256}, the snapshot says {expected_hash}"
        )
    return state


def _field(document: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(
            f"expected session snapshot field {name!r} of type {kind.__name__}, got {value!r:.80}"
        )
    return value


@dataclass
class SessionStore:
    """The sessions one node holds, with the fencing rules.

    A session id maps to its current state, or to a fence: the epoch at which the session moved
    elsewhere. Pure bookkeeping (no I/O, no clock); the engine serialises turns per session.
    """

    _states: dict[str, SessionState] = field(default_factory=dict)
    _fences: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._states)

    def states(self) -> list[SessionState]:
        """Every session this node holds."""
        return list(self._states.values())

    def get(self, session_id: str) -> SessionState:
        """The current state; NotFound when unknown, FailedPrecondition when it moved away."""
        state = self._states.get(session_id)
        if state is not None:
            return state
        if session_id in self._fences:
            raise FailedPrecondition(
                f"session {session_id!r} moved away from this node at epoch "
                f"{self._fences[session_id]}; send its turns to the node that imported it"
            )
        raise NotFound(f"no session {session_id!r} on this node")

    def open(self, session_id: str, model: str) -> SessionState:
        """The session, created empty at epoch 0 if this node never saw it."""
        try:
            state = self.get(session_id)
        except NotFound:
            state = SessionState(session_id, model)
            self._states[session_id] = state
        if state.model != model:
            raise InvalidArgument(
                f"session {session_id!r} talks to model {state.model!r}; "
                f"got a turn for model {model!r}"
            )
        return state

    def append(self, session_id: str, epoch: int, turn: Turn) -> bool:
        """Append a finished turn if the session is still at ``epoch``; False if it was fenced."""
        state = self._states.get(session_id)
        if state is None or state.epoch != epoch:
            return False
        self._states[session_id] = state.with_turn(turn)
        return True

    def import_state(self, state: SessionState) -> bool:
        """Install ``state``; it must supersede what this node holds (a higher epoch).

        Re-importing the identical state (same epoch, same content) is an idempotent no-op that
        returns False; anything at or below the held epoch is rejected with FailedPrecondition.
        """
        held_epoch = self._held_epoch(state.session_id)
        current = self._states.get(state.session_id)
        if (
            current is not None
            and current.epoch == state.epoch
            and current.content_sha256 == state.content_sha256
        ):
            return False
        if held_epoch is not None and state.epoch <= held_epoch:
            raise FailedPrecondition(
                f"session {state.session_id!r} is already at epoch {held_epoch} here; an import "
                f"must carry a higher epoch, got {state.epoch}"
            )
        self._fences.pop(state.session_id, None)
        self._states[state.session_id] = state
        return True

    def fence(self, session_id: str, epoch: int) -> None:
        """Mark the session as moved to ``epoch`` elsewhere; its state here is dropped."""
        held_epoch = self._held_epoch(session_id)
        if held_epoch is not None and epoch <= held_epoch:
            raise FailedPrecondition(
                f"session {session_id!r} is at epoch {held_epoch} here; a fence must carry a "
                f"higher epoch, got {epoch}"
            )
        self._states.pop(session_id, None)
        self._fences[session_id] = epoch

    def _held_epoch(self, session_id: str) -> int | None:
        state = self._states.get(session_id)
        if state is not None:
            return state.epoch
        return self._fences.get(session_id)
