"""What other services import from ``groundplane.links``: the link model's geometry.

The link emulator itself is reached only through MQTT (``docs/topics.md``); planners that
estimate a transfer over a future link (handoff) build the same :class:`LinkGeometry` the
emulator models, ask the same :class:`LinkConfig` for its delay and rate, and decide whether two
satellites see each other with the same :func:`line_of_sight` the emulator's ISLs use.
"""

from __future__ import annotations

from groundplane.links.model import LinkConfig, LinkGeometry, line_of_sight

__all__ = ["LinkConfig", "LinkGeometry", "line_of_sight"]
