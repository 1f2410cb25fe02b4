"""The handoff manager's node port: its values are the nodes' own (one turn type, one token
count), its checkpoints are the nodes' snapshot format, and the handoff core reaches nodes only
through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import groundplane.handoff
from groundplane.handoff import nodes
from groundplane.handoff.node_adapter import encode_snapshot, from_node_state, to_node_state
from groundplane.handoff.nodes import SessionSnapshot, Turn
from groundplane.node import sessions as node_sessions
from groundplane.node.sessions import SessionState, decode_session, encode_session

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
ADAPTER = "node_adapter.py"
"""The one handoff module that speaks the node contract's messages and snapshot format."""
APP = "app.py"
"""The process assembly: it makes the contract's requester the adapter wraps."""
CONTRACT_CODEC = (
    "groundplane.node.v1",
    "groundplane.node.client.Requester",
    "groundplane.node.client.SessionState",
    "groundplane.node.client.encode_session",
    "groundplane.node.client.decode_session",
)

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
    wire messages or snapshot format from the node's insides, and only the adapter uses the
    contract's messages and snapshot codec (and only it and the process assembly its
    requester): the manager reaches nodes through ``NodePort`` only."""
    if path.name == ADAPTER:
        banned = tuple(name for name in NODE_RUNTIME if name != "groundplane.node.v1")
    elif path.name == APP:
        banned = tuple(n for n in NODE_RUNTIME + CONTRACT_CODEC if not n.endswith(".Requester"))
    else:
        banned = NODE_RUNTIME + CONTRACT_CODEC
    crossing = {
        name
        for name in imported_modules(path)
        if any(name == ban or name.startswith(f"{ban}.") for ban in banned)
    }
    assert not crossing, f"{path.name} imports {sorted(crossing)}; go through handoff.nodes"


def test_a_turn_is_one_type_shared_with_the_nodes() -> None:
    """The manager's turn is the node contract's turn (not a copy to convert), with the nodes'
    own token count: the modelled state size the manager plans with is tokens × bytes per token,
    as the nodes report it."""
    assert nodes.Turn is node_sessions.Turn
    for prompt in TEXTS:
        assert Turn(prompt, "an answer").tokens == node_sessions.count_tokens(prompt) + 2


def test_conversions_pass_the_turns_through_unconverted() -> None:
    """Snapshot ↔ node state keeps the very same turns tuple: nothing is rebuilt per turn on a
    move."""
    assert to_node_state(SNAPSHOT).turns is SNAPSHOT.turns
    state = SessionState("s-3", "chat", 1, (Turn("q", "a"),))
    assert from_node_state(state).turns is state.turns


def test_checkpoint_bytes_are_the_nodes_snapshot_format() -> None:
    """The checkpoint the ground store keeps is a node snapshot: the node decodes it to the same
    session at the same epoch, byte for byte what the node itself would export."""
    data = encode_snapshot(SNAPSHOT)
    assert from_node_state(decode_session(data)) == SNAPSHOT
    node_state = SessionState(
        "s-1",
        "chat",
        7,
        (Turn("hello there", "hi, how can I help"), Turn("when is the pass", "in ünïcode 5 min")),
    )
    assert data == encode_session(node_state)


def test_a_node_snapshot_converts_both_ways_without_loss() -> None:
    """Node state → handoff snapshot → node state keeps id, model, epoch, turns and the content
    hash the nodes check."""
    state = SessionState("s-2", "chat", 3, (Turn("q", "a"), Turn("q2", "a b c")))
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
