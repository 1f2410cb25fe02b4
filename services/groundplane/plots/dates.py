"""Time axes: instants as matplotlib date numbers, and a concise UTC date axis.

``matplotlib.dates`` has no type annotations; its untyped calls are wrapped here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axis import Axis

from groundplane.orbit.geometry import FloatArray


def date_nums(moments: Sequence[datetime]) -> FloatArray:
    """Days since matplotlib's epoch (1970-01-01 UTC) of each instant."""
    if not moments:
        return np.empty(0, dtype=np.float64)
    # matplotlib.dates ships no annotations (mypy strict: no-untyped-call).
    values = mdates.date2num(list(moments))  # type: ignore[no-untyped-call]
    return np.asarray(values, dtype=np.float64)


def date_num(moment: datetime) -> float:
    """Days since matplotlib's epoch of one instant."""
    return float(date_nums([moment])[0])


def utc_date_axis(axis: Axis) -> None:
    """Automatic ticks on ``axis`` with concise labels (times are UTC)."""
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # untyped, as above
    axis.set_major_locator(locator)
    # Untyped, as above.
    axis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
