"""The fuzz targets of ``fuzz/``, imported the way the campaign runs them (``fuzz/`` on the
path, each target a module with ``test_one_input``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASHES_DIR = FUZZ_DIR / "crashes"
TARGETS = sorted(
    p.stem for p in FUZZ_DIR.glob("*.py") if not p.name.startswith("_") and p.name != "seed.py"
)
SERVICER_TARGETS = [t for t in TARGETS if t.startswith("servicer_")]


def load(target: str) -> ModuleType:
    """The target's module (``fuzz/<target>.py``)."""
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    return importlib.import_module(target)


def entry(target: str) -> Callable[[bytes], None]:
    function: Callable[[bytes], None] = load(target).test_one_input
    return function


def corpus_files() -> list[Path]:
    """Every committed corpus input, of every target."""
    return sorted(p for p in CORPUS_DIR.glob("*/*") if p.is_file())


def close_servicers() -> None:
    """Stop the servers the servicer targets started (each starts one on first use)."""
    for target in SERVICER_TARGETS:
        module = sys.modules.get(target)
        if module is not None:
            module.FUZZER.close()
