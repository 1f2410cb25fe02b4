"""Fuzz target: the session snapshots a handoff moves between nodes over the broker
(``node.sessions.decode_session``, reached by a node's ``session/import`` and by the handoff
service reading a ``session/export`` answer through ``handoff.node_adapter``), and the
export/import/fence messages that carry them (``SessionExportResult`` & co. unpacked from an
envelope).

Oracle: only ``GroundplaneError`` may escape; a snapshot that decodes re-encodes to bytes that
decode to the same state.
"""

from __future__ import annotations

from _harness import documented_errors_only, instrumented, main

with instrumented():
    from groundplane.handoff.node_adapter import encode_snapshot, from_node_state
    from groundplane.node import wire
    from groundplane.node.sessions import decode_session
    from groundplane.node.v1 import node_pb2

_CARRY_SNAPSHOTS = (node_pb2.SessionExportResult, node_pb2.SessionImportRequest)
_MESSAGES = (
    node_pb2.SessionExportRequest,
    node_pb2.SessionExportResult,
    node_pb2.SessionImportRequest,
    node_pb2.SessionImportResult,
    node_pb2.SessionFenceRequest,
    node_pb2.SessionFenceResult,
)


def test_one_input(data: bytes) -> None:
    with documented_errors_only():
        state = decode_session(data)
        again = decode_session(encode_snapshot(from_node_state(state)))
        assert again == state, (state, again)
    with documented_errors_only():
        envelope = wire.parse_envelope(data)
        for kind in _MESSAGES:
            envelope.payload_type = kind.DESCRIPTOR.full_name
            with documented_errors_only():
                message = wire.unpack(envelope, kind)
                if isinstance(message, _CARRY_SNAPSHOTS):
                    with documented_errors_only():
                        decode_session(message.snapshot)


if __name__ == "__main__":
    main(test_one_input)
