"""The committed fuzz corpus and crash reproducers, replayed through the targets of ``fuzz/``
(what the campaign found keeps holding; see docs/security.md, "Fuzzing")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .targets import CRASHES_DIR, TARGETS, corpus_files, entry


def test_every_target_has_a_corpus() -> None:
    """Each target has a committed corpus, small enough to replay in CI (≤ 200 files, 1 MB)."""
    by_target = {t: [p for p in corpus_files() if p.parent.name == t] for t in TARGETS}
    assert all(by_target.values()), [t for t, files in by_target.items() if not files]
    for target, files in by_target.items():
        assert len(files) <= 250, (target, len(files))
        assert sum(p.stat().st_size for p in files) <= 1_000_000, target


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_through_target(target: str) -> None:
    """Every committed corpus input (of every target: inputs of one are hostile input for the
    others too) passes through ``target`` with only documented errors escaping."""
    test_one_input = entry(target)
    for path in corpus_files():
        test_one_input(path.read_bytes())


def _crashes() -> list[Any]:  # pytest.param's ParameterSet is not exported
    return [
        pytest.param(path.name.split("-crash-")[0], path, id=path.name)
        for path in sorted(CRASHES_DIR.glob("*-crash-*"))
    ]


@pytest.mark.parametrize(("target", "path"), _crashes())
def test_crash_reproducer_is_fixed(target: str, path: Path) -> None:
    """A crash the campaign found no longer crashes its target."""
    entry(target)(path.read_bytes())
