"""The ground side of the node contract: what other services import to reach node agents.

Node agents speak only MQTT (``docs/topics.md``, ``groundplane.node.v1`` and
``groundplane.link.v1`` messages). This module is the one place another service imports from
``groundplane.node``: the :class:`Requester` that sends requests and session operations to an
agent and awaits its replies, and the :class:`NodeDirectory` that follows every agent's retained
status and load. The agents' runtime (agent, engine, backends, host) stays inside the package.
"""

from __future__ import annotations

from groundplane.node.directory import DRAINING, OFFLINE, ONLINE, NodeDirectory, NodeView
from groundplane.node.requester import Requester

__all__ = ["DRAINING", "OFFLINE", "ONLINE", "NodeDirectory", "NodeView", "Requester"]
