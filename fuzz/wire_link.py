"""Fuzz target: what the link side decodes from the broker: the retained ``LinkState``
(``routing.service.link_quality_from_proto``, as routing's ``_on_link_state`` does) and the
topics the link emulator parses (``parse_transmission``, ``parse_delivery``,
``parse_link_state``, ``node_of``, ``shard_of``, ``reply_via_downlink``).

The input is ``topic NUL payload`` (no NUL: all topic, empty payload).

Oracle: topic parsers let only ``GroundplaneError`` escape; the LinkState path only what
routing's handler catches (``DecodeError``, ``GroundplaneError``).
"""

from __future__ import annotations

import contextlib

from google.protobuf.message import DecodeError

from _harness import documented_errors_only, instrumented, main, text_of

with instrumented():
    from groundplane.kernel.errors import GroundplaneError
    from groundplane.link.v1 import link_pb2
    from groundplane.mqtt import topics
    from groundplane.routing.service import link_quality_from_proto


def test_one_input(data: bytes) -> None:
    raw_topic, _, payload = data.partition(b"\0")
    topic = text_of(raw_topic)
    for parse in (
        topics.parse_transmission,
        topics.parse_delivery,
        topics.parse_link_state,
        topics.node_of,
        topics.shard_of,
    ):
        with documented_errors_only():
            parse(topic)
    with documented_errors_only():
        transmission = topics.parse_transmission(topic)
        assert topics.parse_delivery(transmission.delivery_topic) == transmission, topic
    with documented_errors_only():
        topics.reply_via_downlink(topic.split("/")[5] if topic.count("/") >= 5 else "", topic)
    with contextlib.suppress(DecodeError, GroundplaneError):  # what routing's handler catches
        link_quality_from_proto(link_pb2.LinkState.FromString(payload))


if __name__ == "__main__":
    main(test_one_input)
