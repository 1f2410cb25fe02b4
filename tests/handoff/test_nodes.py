"""The handoff manager's node port: its values match the nodes' accounting and format, and the
handoff core reaches nodes only through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import groundplane.handoff
from groundplane.handoff.nodes import SessionSnapshot, Turn, context_tokens
from groundplane.node.sessions import SessionState, decode_session, encode_session
from groundplane.node.sessions import Turn as NodeTurn
from groundplane.node.sessions import context_tokens as node_context_tokens
from groundplane.system.handoff_nodes import encode_snapshot, from_node_state, to_node_state

HANDOFF_DIR = Path(groundplane.handoff.__file__).parent
NODE_RUNTIME = (
    "groundplane.node.requester",
    "groundplane.node.sessions",
    "groundplane.node.engine",
    "groundplane.node.agent",
    "groundplane.node.host",
    "groundplane.node.v1",
)
"""Node modules (runtime, snapshot format, wire messages) the handoff core must not import."""

TEXTS = ("", "one", "two words", "  spaced\tout\nacross lines  ", "ünïcode wörds ok", "a " * 50)

SNAPSHOT = SessionSnapshot(
    "s-1",
    "chat",
    7,
    (Turn("hello there", "hi, how can I help"), Turn("when is the pass", "in ünïcode 5 min")),
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(HANDOFF_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_handoff_core_imports_no_node_runtime_or_format(path: Path) -> None:
    """No module of ``groundplane.handoff`` imports the node requester, engine, agent, host,
    wire messages or snapshot format: the manager reaches nodes through ``NodePort`` only."""
    crossing = {
        name
        for name in imported_modules(path)
        if any(name == banned or name.startswith(f"{banned}.") for banned in NODE_RUNTIME)
    }
    assert not crossing, f"{path.name} imports {sorted(crossing)}; go through handoff.nodes"


@pytest.mark.parametrize("prompt", TEXTS)
def test_turn_tokens_are_counted_as_the_nodes_count_them(prompt: str) -> None:
    """The handoff's token count of a turn, and of a context, equals the nodes' (the modelled
    state size the manager plans with is tokens × bytes per token, as the nodes report it)."""
    answer = prompt[::-1] + " and more"
    assert Turn(prompt, answer).tokens == NodeTurn(prompt, answer).tokens
    turns = (Turn(prompt, answer), Turn(answer, prompt))
    node_turns = (NodeTurn(prompt, answer), NodeTurn(answer, prompt))
    assert context_tokens(turns) == node_context_tokens(node_turns)


def test_checkpoint_bytes_are_the_nodes_snapshot_format() -> None:
    """The checkpoint the ground store keeps is a node snapshot: the node decodes it to the same
    session at the same epoch, byte for byte what the node itself would export."""
    data = encode_snapshot(SNAPSHOT)
    assert from_node_state(decode_session(data)) == SNAPSHOT
    node_state = SessionState(
        "s-1",
        "chat",
        7,
        (
            NodeTurn("hello there", "hi, how can I help"),
            NodeTurn("when is the pass", "in ünïcode 5 min"),
        ),
    )
    assert data == encode_session(node_state)


def test_a_node_snapshot_converts_both_ways_without_loss() -> None:
    """Node state → handoff snapshot → node state keeps id, model, epoch, turns and the content
    hash the nodes check."""
    state = SessionState("s-2", "chat", 3, (NodeTurn("q", "a"), NodeTurn("q2", "a b c")))
    again = to_node_state(from_node_state(state))
    assert again == state
    assert again.content_sha256 == state.content_sha256


def test_same_content_ignores_the_epoch_only() -> None:
    """Two snapshots have the same content when id, model and turns match, whatever the epoch;
    a different turn, model or id is different content."""
    assert SNAPSHOT.same_content(SessionSnapshot("s-1", "chat", 99, SNAPSHOT.turns))
    assert not SNAPSHOT.same_content(SessionSnapshot("s-1", "chat", 7, SNAPSHOT.turns[:1]))
    assert not SNAPSHOT.same_content(SessionSnapshot("s-1", "other", 7, SNAPSHOT.turns))
    assert not SNAPSHOT.same_content(SessionSnapshot("s-9", "chat", 7, SNAPSHOT.turns))
