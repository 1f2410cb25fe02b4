"""Figures of tracking data and of system runs, drawn with :class:`matplotlib.figure.Figure`.

Every module here is a set of pure functions from explicit inputs (arrays, passes, sites, trace
records) to a :class:`~matplotlib.figure.Figure`; nothing touches pyplot's global state, so the
figures can be built headless (the Agg canvas for PNG, the SVG canvas for SVG) and inspected by
the tests through their artists. Each plotted artist that carries data has a ``gid`` naming what
it is (``"pass:0"``, ``"aos:0"``, ``"track:25544"`` …) so it can be found again.

- :mod:`.sky`: a polar sky plot of passes over one site;
- :mod:`.groundtrack`: sub-satellite tracks and station footprints on a world map;
- :mod:`.timeline`: a pass timeline (Gantt) per station × satellite;
- :mod:`.run`: what a ``groundplane up`` run did, from its trace and summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from groundplane.kernel.errors import InvalidArgument

if TYPE_CHECKING:  # this package's root stays importable without loading matplotlib
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}


def output_format(path: Path) -> str:
    """``"png"`` or ``"svg"`` from the suffix of ``path``."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidArgument(
            f"-o {path}: the file name must end in .png or .svg (the format is chosen by the "
            f"suffix), got {suffix or 'no suffix'!r}"
        )
    return FORMATS[suffix]


def save(figure: Figure, path: Path, dpi: float = 100.0) -> None:
    """Write ``figure`` as PNG or SVG, chosen by the suffix of ``path``."""
    figure.savefig(path, format=output_format(path), dpi=dpi)
