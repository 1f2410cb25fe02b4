"""HandoffStore queries that do not need a running manager."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from groundplane.handoff.store import HandoffEvent, HandoffStore

from .fakes import EPOCH


def _event(subject_id: str, seconds: float) -> HandoffEvent:
    at = EPOCH + timedelta(seconds=seconds)
    return HandoffEvent(
        "session", subject_id, "planned", at, at, at, "sat-a", "gs1", "", "", "none", 0, 0.0
    )


def test_last_event_id_is_the_newest_event_id_and_survives_a_reopen(tmp_path: Path) -> None:
    """``last_event_id`` is 0 for an empty history, then the id the newest ``add_event``
    returned (whatever its subject), and the same after the file is opened again."""
    path = tmp_path / "handoff.sqlite"
    store = HandoffStore(path)
    empty = store.last_event_id()
    ids = [store.add_event(_event(f"s-{i % 2}", i)) for i in range(5)]
    newest = store.last_event_id()
    store.close()
    reopened = HandoffStore(path)
    again = reopened.last_event_id()
    listed = reopened.events(after_id=0)
    reopened.close()
    assert empty == 0
    assert newest == ids[-1] == max(ids)
    assert again == newest == listed[-1].event_id
