"""Fuzz target: the node wire (``node/wire.py``) and the ground's node directory, i.e. every
decoder of bytes a node or the ground receives from the broker.

The first byte picks the path, the rest is the MQTT payload:

* 0: an envelope (``parse_envelope``, ``deadline_of``) whose payload is unpacked as the type it
  names and as every ``groundplane.node.v1`` message (``unpack``), an ``InferError`` turned
  back into a domain error (``error_from_message``);
* 1, 2, 3: a retained ``NodeStatus``, ``LoadReport``, ``ShardStatus`` applied to a
  ``NodeDirectory`` (``observe_*``), as ``NodeDirectory._on_status`` & co. do.

Oracle: the envelope path lets only ``GroundplaneError`` escape; the directory path only what
its handlers catch (``DecodeError``, ``InvalidArgument``): anything else would end the
subscription's handler with a traceback.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from _harness import documented_errors_only, instrumented, main

with instrumented():
    from groundplane.kernel.errors import InvalidArgument
    from groundplane.node import wire
    from groundplane.node.directory import NodeDirectory
    from groundplane.node.v1 import node_pb2

_KINDS = {
    str(descriptor.full_name): getattr(node_pb2, name)
    for name, descriptor in node_pb2.DESCRIPTOR.message_types_by_name.items()
}


def _envelope(payload: bytes) -> None:
    with documented_errors_only():
        envelope = wire.parse_envelope(payload)
        wire.deadline_of(envelope)
        named = _KINDS.get(envelope.payload_type)
        if named is not None:
            with documented_errors_only():
                message = wire.unpack(envelope, named)
                if isinstance(message, node_pb2.InferError):
                    wire.error_from_message(message, where="fuzz")
        for full_name, kind in _KINDS.items():
            envelope.payload_type = full_name
            with documented_errors_only():
                wire.unpack(envelope, kind)


def _directory(which: int, payload: bytes) -> None:
    directory = NodeDirectory()
    try:
        if which == 1:
            status = node_pb2.NodeStatus.FromString(payload)
            directory.observe_status(status)
            directory.observe_status(status)  # the same again: the epoch rules, not a crash
        elif which == 2:
            directory.observe_load(node_pb2.LoadReport.FromString(payload))
        else:
            directory.observe_shard(node_pb2.ShardStatus.FromString(payload))
    except (DecodeError, InvalidArgument):
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    which, payload = data[0] % 4, data[1:]
    if which == 0:
        _envelope(payload)
    else:
        _directory(which, payload)


if __name__ == "__main__":
    main(test_one_input)
