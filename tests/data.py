"""Where the tests find the data files: the repository's own ``data/`` (see data/README.md)."""

from __future__ import annotations

from pathlib import Path

#: The repository's ``data/`` folder: orbital elements and site coordinates the tests read.
DATA = Path(__file__).resolve().parents[1] / "data"
