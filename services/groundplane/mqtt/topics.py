"""The ``gp/v1/`` topic namespace, built and parsed in one place (docs/topics.md explains it).

Ground side (service accounts only)::

    gp/v1/ground/<station>/tx/<sat>/<channel…>   ground hands a message to <station> for <sat>
    gp/v1/ground/<station>/rx/<sat>/<channel…>   what <station> received from <sat>

Satellite side (node ``<sat>`` may read and write only ``gp/v1/node/<sat>/#``)::

    gp/v1/node/<sat>/rx/gs/<station>/<channel…>  what <sat> received from <station>
    gp/v1/node/<sat>/tx/gs/<station>/<channel…>  <sat> transmits towards <station>
    gp/v1/node/<sat>/rx/isl/<peer>/<channel…>    what <sat> received over its link with <peer>
    gp/v1/node/<sat>/tx/isl/<peer>/<channel…>    <sat> transmits towards <peer>
    gp/v1/node/<sat>/status                      birth / will (retained)
    gp/v1/node/<sat>/load                        load report (retained)

Nodes shards (one connection carrying many node agents; account ``gp-shard-<shard>``)::

    gp/v1/shard/<shard>/status                   shard birth / will (retained): its members

Links (published by the link emulator, retained)::

    gp/v1/link/<station>/<sat>/state      LinkState
    gp/v1/link/<station>/<sat>/counters   LinkCounters
    gp/v1/isl/<sat_a>/<sat_b>/state       LinkState of an inter-satellite link (a < b)

The link emulator is the only component that moves a message from a ``tx`` topic to the matching
``rx`` topic, after the link's delay, or not at all when the link drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from groundplane.kernel.errors import InvalidArgument

PREFIX = "gp/v1"
SERVICE_USER_PREFIX = "gp-"
"""Usernames starting with this are service accounts; node ids may not start with it."""

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it can be one topic level (and a broker username), else raise.

    Ids are 1-64 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a letter
    or digit: MQTT wildcards (``+``, ``#``), separators (``/``) and ``$`` are refused because the
    broker's pattern ACL substitutes the username into a topic.
    """
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise InvalidArgument(
            f"{kind} must be 1-64 characters of letters, digits, '.', '_' or '-' starting with "
            f"a letter or digit (it becomes an MQTT topic level), got {value!r}"
        )
    return value


def check_node_id(node_id: str) -> str:
    """A satellite (node) id: a topic level that is not a reserved service account name."""
    check_id("satellite id", node_id)
    if node_id.startswith(SERVICE_USER_PREFIX):
        raise InvalidArgument(
            f"satellite id may not start with {SERVICE_USER_PREFIX!r} (reserved for service "
            f"accounts on the broker), got {node_id!r}"
        )
    return node_id


def _check_channel(channel: str) -> str:
    levels = channel.split("/")
    if not channel or any(not level or level in {"+", "#"} for level in levels):
        raise InvalidArgument(
            f"channel must be one or more non-empty topic levels without wildcards, such as "
            f"'infer/req', got {channel!r}"
        )
    return channel


class Hop(Enum):
    """Which kind of link a topic's message crosses."""

    UPLINK = "uplink"  # ground station → satellite
    DOWNLINK = "downlink"  # satellite → ground station
    ISL = "isl"  # satellite → satellite


@dataclass(frozen=True)
class Transmission:
    """A parsed ``tx`` topic: who sends to whom over which link, and the channel it carries."""

    hop: Hop
    source: str
    destination: str
    channel: str

    @property
    def delivery_topic(self) -> str:
        """The ``rx`` topic the emulator publishes to when the link delivers."""
        if self.hop is Hop.UPLINK:
            return node_rx_ground(self.destination, self.source, self.channel)
        if self.hop is Hop.DOWNLINK:
            return ground_rx(self.destination, self.source, self.channel)
        return node_rx_isl(self.destination, self.source, self.channel)


def ground_tx(station_id: str, sat_id: str, channel: str) -> str:
    """Where the ground publishes a message that ``station_id`` should send to ``sat_id``."""
    return f"{PREFIX}/ground/{check_id('station id', station_id)}/tx/{check_node_id(sat_id)}/" + (
        _check_channel(channel)
    )


def ground_rx(station_id: str, sat_id: str, channel: str) -> str:
    """Where the ground receives what ``station_id`` got from ``sat_id``."""
    return f"{PREFIX}/ground/{check_id('station id', station_id)}/rx/{check_node_id(sat_id)}/" + (
        _check_channel(channel)
    )


def node_rx_ground(sat_id: str, station_id: str, channel: str) -> str:
    """Where satellite ``sat_id`` receives what ``station_id`` sent."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/rx/gs/{check_id('station id', station_id)}/" + (
        _check_channel(channel)
    )


def node_tx_ground(sat_id: str, station_id: str, channel: str) -> str:
    """Where satellite ``sat_id`` publishes a message for ``station_id``."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/tx/gs/{check_id('station id', station_id)}/" + (
        _check_channel(channel)
    )


def node_rx_isl(sat_id: str, peer_id: str, channel: str) -> str:
    """Where satellite ``sat_id`` receives what ``peer_id`` sent over their inter-satellite link."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/rx/isl/{check_node_id(peer_id)}/" + (
        _check_channel(channel)
    )


def node_tx_isl(sat_id: str, peer_id: str, channel: str) -> str:
    """Where satellite ``sat_id`` publishes a message for satellite ``peer_id``."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/tx/isl/{check_node_id(peer_id)}/" + (
        _check_channel(channel)
    )


def node_status(sat_id: str) -> str:
    """Retained birth / will of a node."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/status"


def node_load(sat_id: str) -> str:
    """Retained load report of a node."""
    return f"{PREFIX}/node/{check_node_id(sat_id)}/load"


NODE_STATUS_FILTER = f"{PREFIX}/node/+/status"
"""Every node's status (for directories of nodes)."""
NODE_LOAD_FILTER = f"{PREFIX}/node/+/load"
"""Every node's load report."""


def shard_status(shard_id: str) -> str:
    """Retained birth / will of a nodes shard (the liveness of its one connection)."""
    return f"{PREFIX}/shard/{check_id('shard id', shard_id)}/status"


SHARD_STATUS_FILTER = f"{PREFIX}/shard/+/status"
"""Every nodes shard's status (for directories of nodes)."""


def shard_of(topic: str) -> str:
    """The shard id of a ``gp/v1/shard/<shard>/status`` topic; InvalidArgument otherwise."""
    levels = topic.split("/")
    if len(levels) != 5 or levels[:3] != ["gp", "v1", "shard"] or levels[4] != "status":
        raise InvalidArgument(f"expected a topic gp/v1/shard/<shard>/status, got {topic!r}")
    return check_id("shard id", levels[3])


def node_of(topic: str) -> str:
    """The satellite id of a ``gp/v1/node/<sat>/…`` topic; InvalidArgument otherwise."""
    levels = topic.split("/")
    if len(levels) < 4 or levels[:3] != ["gp", "v1", "node"]:
        raise InvalidArgument(f"expected a topic gp/v1/node/<sat>/…, got {topic!r}")
    return check_node_id(levels[3])


def link_state(station_id: str, sat_id: str) -> str:
    """Retained LinkState of the ground link (station, satellite)."""
    return f"{PREFIX}/link/{check_id('station id', station_id)}/{check_node_id(sat_id)}/state"


def link_counters(station_id: str, sat_id: str) -> str:
    """Retained LinkCounters of the ground link (station, satellite)."""
    return f"{PREFIX}/link/{check_id('station id', station_id)}/{check_node_id(sat_id)}/counters"


LINK_STATE_FILTER = f"{PREFIX}/link/+/+/state"
"""Every ground link's retained LinkState."""


def parse_link_state(topic: str) -> tuple[str, str]:
    """``(station id, satellite id)`` of a ``gp/v1/link/<station>/<sat>/state`` topic."""
    levels = topic.split("/")
    if len(levels) != 6 or levels[:3] != ["gp", "v1", "link"] or levels[5] != "state":
        raise InvalidArgument(f"expected a topic gp/v1/link/<station>/<sat>/state, got {topic!r}")
    return check_id("station id", levels[3]), check_node_id(levels[4])


def isl_state(sat_a: str, sat_b: str) -> str:
    """Retained LinkState of the inter-satellite link between two satellites (order-free)."""
    first, second = sorted((check_node_id(sat_a), check_node_id(sat_b)))
    return f"{PREFIX}/isl/{first}/{second}/state"


def reply_via_downlink(sat_id: str, reply_topic: str) -> str:
    """The ``tx`` topic a node publishes a reply on so that it arrives at ``reply_topic``.

    A ground requester sets ``reply_topic`` to a ``ground_rx`` topic (where it listens); the node
    cannot publish there itself, so it publishes on its own downlink ``tx`` topic and the link
    emulator carries the reply down.
    """
    levels = reply_topic.split("/")
    if (
        len(levels) < 7
        or "/".join(levels[:3]) != f"{PREFIX}/ground"
        or levels[4] != "rx"
        or levels[5] != sat_id
    ):
        raise InvalidArgument(
            f"reply topic must be gp/v1/ground/<station>/rx/{sat_id}/<channel…> (a ground topic "
            f"that this satellite's downlink reaches), got {reply_topic!r}"
        )
    return node_tx_ground(sat_id, levels[3], "/".join(levels[6:]))


# Subscriptions of the link emulator: everything handed to a link for transmission.
EMULATOR_UPLINK_FILTER = f"{PREFIX}/ground/+/tx/#"
EMULATOR_NODE_TX_FILTER = f"{PREFIX}/node/+/tx/#"


def parse_transmission(topic: str) -> Transmission:
    """Parse a ``tx`` topic into the link it must cross; raise InvalidArgument otherwise."""
    levels = topic.split("/")
    if len(levels) >= 7 and levels[:3] == ["gp", "v1", "ground"] and levels[4] == "tx":
        return Transmission(
            Hop.UPLINK,
            check_id("station id", levels[3]),
            check_node_id(levels[5]),
            _check_channel("/".join(levels[6:])),
        )
    if len(levels) >= 8 and levels[:3] == ["gp", "v1", "node"] and levels[4] == "tx":
        kind = levels[5]
        source = check_node_id(levels[3])
        channel = _check_channel("/".join(levels[7:]))
        if kind == "gs":
            return Transmission(Hop.DOWNLINK, source, check_id("station id", levels[6]), channel)
        if kind == "isl":
            return Transmission(Hop.ISL, source, check_node_id(levels[6]), channel)
    raise InvalidArgument(
        "expected a transmission topic gp/v1/ground/<station>/tx/<sat>/<channel…>, "
        "gp/v1/node/<sat>/tx/gs/<station>/<channel…> or gp/v1/node/<sat>/tx/isl/<peer>/<channel…>"
        f", got {topic!r}"
    )


def parse_delivery(topic: str) -> Transmission:
    """Parse an ``rx`` topic into the transmission it delivers (the inverse of
    :attr:`Transmission.delivery_topic`); raise InvalidArgument otherwise."""
    levels = topic.split("/")
    if len(levels) >= 7 and levels[:3] == ["gp", "v1", "ground"] and levels[4] == "rx":
        return Transmission(
            Hop.DOWNLINK,
            check_node_id(levels[5]),
            check_id("station id", levels[3]),
            _check_channel("/".join(levels[6:])),
        )
    if len(levels) >= 8 and levels[:3] == ["gp", "v1", "node"] and levels[4] == "rx":
        kind = levels[5]
        destination = check_node_id(levels[3])
        channel = _check_channel("/".join(levels[7:]))
        if kind == "gs":
            return Transmission(Hop.UPLINK, check_id("station id", levels[6]), destination, channel)
        if kind == "isl":
            return Transmission(Hop.ISL, check_node_id(levels[6]), destination, channel)
    raise InvalidArgument(
        "expected a delivery topic gp/v1/ground/<station>/rx/<sat>/<channel…>, "
        "gp/v1/node/<sat>/rx/gs/<station>/<channel…> or gp/v1/node/<sat>/rx/isl/<peer>/<channel…>"
        f", got {topic!r}"
    )


SHARED_SUBSCRIPTION_PREFIX = "$share/"


def without_share_group(topic_filter: str) -> str:
    """The filter of a ``$share/<group>/<filter>`` subscription (any other filter unchanged),
    for matching incoming topics."""
    if topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX):
        levels = topic_filter.split("/", 2)
        if len(levels) < 3 or not levels[1] or not levels[2]:
            raise InvalidArgument(
                f"expected a shared subscription $share/<group>/<filter>, got {topic_filter!r}"
            )
        return levels[2]
    return topic_filter
