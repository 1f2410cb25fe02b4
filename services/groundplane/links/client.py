"""What other services import from ``groundplane.links``: the link model's geometry type.

The link emulator itself is reached only through MQTT (``docs/topics.md``); planners that
estimate a transfer over a future link (handoff) build the same :class:`LinkGeometry` the
emulator models and ask the same :class:`LinkConfig` for its delay and rate.
"""

from __future__ import annotations

from groundplane.links.model import LinkConfig, LinkGeometry

__all__ = ["LinkConfig", "LinkGeometry"]
