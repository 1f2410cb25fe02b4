"""Checks of plain values that every service makes on what callers and configuration send.

Domain modules keep their own range checks (a latitude in [-90, 90], a positive step); what a
"number" is, and the error that teaches when something else came, is decided here once.
"""

from __future__ import annotations

import argparse
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


MAX_ID_CHARS = 128
"""The longest caller-chosen id (session, job, turn): ids are copied into every event and row."""


def bounded_id(name: str, value: str, *, max_chars: int = MAX_ID_CHARS) -> str:
    """``value`` when it is 1-``max_chars`` printable ASCII characters without spaces, else
    :class:`InvalidArgument` naming ``name``, the rule and (the start of) what came."""
    if (
        not value
        or len(value) > max_chars
        or not value.isascii()
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        shown = value[:32] + ("…" if len(value) > 32 else "")
        raise InvalidArgument(
            f"{name} must be 1-{max_chars} printable ASCII characters without spaces, got "
            f"{len(value)} characters: {shown!r}"
        )
    return value


def finite_float(text: str) -> float:
    """An argparse ``type`` for a float flag: the value when it is a finite number, else an
    argparse error (one line, exit 2) saying so; ``inf``, ``nan`` and ``1e400`` are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
