"""Checks of plain values that every service makes on what callers and configuration send.

Domain modules keep their own range checks (a latitude in [-90, 90], a positive step); what a
"number" is, and the error that teaches when something else came, is decided here once.
"""

from __future__ import annotations

import math
import numbers

from groundplane.kernel.errors import InvalidArgument


def finite_number(
    name: str, value: object, *, error: type[InvalidArgument] = InvalidArgument
) -> float:
    """``value`` as a float when it is a finite real number, else ``error`` naming ``name``.

    ``int``, ``float`` and numpy real scalars are numbers; ``bool``, strings and ``None`` are not
    (parse text before calling this). NaN and ±inf are refused. ``error`` lets a domain raise its
    own subclass of :class:`InvalidArgument` (e.g. ``ElementError``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number, got {value!r}")
    return number
