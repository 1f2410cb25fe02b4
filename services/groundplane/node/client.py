"""The ground side of the node contract: what other services import to reach node agents.

Node agents speak only MQTT (``docs/topics.md``, ``groundplane.node.v1`` and
``groundplane.link.v1`` messages). This module is the one place another service imports from
``groundplane.node``: the :class:`Requester` that sends requests and session operations to an
agent and awaits its replies, the :class:`NodeDirectory` that follows every agent's retained
status and load, and the session values of the contract: a :class:`Turn` (with the nodes' token
count, :func:`count_tokens`) and the session snapshot format a node exports and imports
(:class:`SessionState`, :func:`encode_session`, :func:`decode_session`). The agents' runtime
(agent, engine, backends, host) stays inside the package.
"""

from __future__ import annotations

from groundplane.node.directory import DRAINING, OFFLINE, ONLINE, NodeDirectory, NodeView
from groundplane.node.requester import Requester
from groundplane.node.sessions import (
    SessionState,
    Turn,
    count_tokens,
    decode_session,
    encode_session,
)

__all__ = [
    "DRAINING",
    "OFFLINE",
    "ONLINE",
    "NodeDirectory",
    "NodeView",
    "Requester",
    "SessionState",
    "Turn",
    "count_tokens",
    "decode_session",
    "encode_session",
]
