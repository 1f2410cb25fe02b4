"""The JPL DE421 ephemeris for the Sun references in the tests (skyfield-data ships the file)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def de421() -> Iterator[Any]:
    """Skyfield's DE421 kernel from the skyfield-data package (no download), closed afterwards."""
    import skyfield_data
    from skyfield.api import load_file

    kernel = load_file(str(Path(skyfield_data.__file__).parent / "data" / "de421.bsp"))
    try:
        yield kernel
    finally:
        kernel.close()
