"""The topic namespace: every parser inverts its builder and refuses other topics by name."""

from __future__ import annotations

import pytest

from groundplane.kernel.errors import InvalidArgument
from groundplane.mqtt import topics
from groundplane.mqtt.topics import Hop, Transmission


@pytest.mark.parametrize(
    "sent",
    [
        Transmission(Hop.UPLINK, "svalbard", "25544", "infer/req"),
        Transmission(Hop.DOWNLINK, "25544", "svalbard", "reply/gw-1"),
        Transmission(Hop.ISL, "25544", "48274", "session/export"),
    ],
)
def test_parse_delivery_inverts_the_delivery_topic(sent: Transmission) -> None:
    """The rx topic a transmission is delivered on parses back to the same hop, source,
    destination and (multi-level) channel."""
    assert topics.parse_delivery(sent.delivery_topic) == sent


@pytest.mark.parametrize(
    "topic",
    [
        "gp/v1/ground/svalbard/tx/25544/infer",  # a tx topic, not a delivery
        "gp/v1/node/25544/rx/gs/svalbard",  # no channel
        "gp/v1/node/25544/rx/radio/x/infer",  # unknown link kind
        "gp/v1/ground/svalbard/rx/gp-routing/reply",  # a service account is no satellite
        "other/v1/ground/svalbard/rx/25544/reply",
    ],
)
def test_parse_delivery_refuses_other_topics(topic: str) -> None:
    """Anything but a delivery topic with valid ids and a channel is INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgument, match=r"expected|satellite id"):
        topics.parse_delivery(topic)


def test_link_state_topics_parse_to_station_and_satellite() -> None:
    """``link_state`` parses back to (station, satellite), matches LINK_STATE_FILTER's shape,
    and counters or malformed topics are refused."""
    topic = topics.link_state("svalbard", "25544")
    assert topics.parse_link_state(topic) == ("svalbard", "25544")
    assert topics.LINK_STATE_FILTER == "gp/v1/link/+/+/state"
    for other in (topics.link_counters("svalbard", "25544"), "gp/v1/link/svalbard/state"):
        with pytest.raises(InvalidArgument, match="gp/v1/link/<station>/<sat>/state"):
            topics.parse_link_state(other)


def test_shared_subscription_filters_match_on_their_inner_filter() -> None:
    """``$share/<group>/<filter>`` matches incoming topics by ``<filter>``; plain filters are
    unchanged and a share without a filter is refused."""
    assert topics.without_share_group("$share/routing/gp/v1/node/+/load") == "gp/v1/node/+/load"
    assert topics.without_share_group("gp/v1/node/+/status") == "gp/v1/node/+/status"
    with pytest.raises(InvalidArgument, match=r"\$share/<group>/<filter>"):
        topics.without_share_group("$share/routing")
