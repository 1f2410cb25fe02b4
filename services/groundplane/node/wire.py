"""The node's MQTT wire format: channels, envelopes and errors, shared by node and ground.

A request to a node is a :class:`~groundplane.link.v1.link_pb2.Envelope` whose ``payload`` is one
of the ``groundplane.node.v1`` messages and whose ``payload_type`` names it. Replies are envelopes
with the request's id, ``sender_id`` = the satellite id and ``epoch`` = the node incarnation the
request was admitted under. Errors travel as :class:`InferError` with the gRPC status code name,
and become the matching :class:`~groundplane.kernel.errors.GroundplaneError` again on the ground.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from groundplane.kernel.errors import (
    GroundplaneError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    error_from_status,
)
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.link.v1 import link_pb2
from groundplane.node.v1 import node_pb2

INFER_CHANNEL = "infer/req"
"""Channel of inference requests: ``gp/v1/node/<sat>/rx/gs/<station>/infer/req``."""
SESSION_EXPORT_CHANNEL = "session/export"
SESSION_IMPORT_CHANNEL = "session/import"
SESSION_FENCE_CHANNEL = "session/fence"
REPLY_CHANNEL_PREFIX = "resp"
"""Replies arrive on ``gp/v1/ground/<station>/rx/<sat>/resp/<requester instance>``."""

_M = TypeVar("_M", bound=Message)


def type_name(message: Message) -> str:
    """The full protobuf name that goes into ``Envelope.payload_type``."""
    return str(message.DESCRIPTOR.full_name)


def envelope(  # noqa: PLR0913 - one argument per Envelope field
    payload: Message,
    *,
    request_id: str,
    sender_id: str,
    epoch: int = 0,
    reply_topic: str = "",
    deadline: datetime | None = None,
    traceparent: str = "",
) -> link_pb2.Envelope:
    """Wrap ``payload`` with its type name and the routing fields."""
    wrapped = link_pb2.Envelope(
        request_id=request_id,
        reply_topic=reply_topic,
        traceparent=traceparent,
        payload=payload.SerializeToString(),
        sender_id=sender_id,
        epoch=epoch,
        payload_type=type_name(payload),
    )
    if deadline is not None:
        wrapped.deadline.CopyFrom(to_timestamp(deadline))
    return wrapped


def parse_envelope(data: bytes) -> link_pb2.Envelope:
    """Decode an envelope; InvalidArgument when the bytes are not one."""
    parsed = link_pb2.Envelope()
    try:
        parsed.ParseFromString(data)
    except DecodeError as error:
        raise InvalidArgument(
            f"expected a groundplane.link.v1.Envelope, got {len(data)} bytes that do not decode "
            f"({error})"
        ) from None
    return parsed


def deadline_of(wrapped: link_pb2.Envelope) -> datetime | None:
    """The envelope's deadline, or None when it has none."""
    return from_timestamp(wrapped.deadline) if wrapped.HasField("deadline") else None


def unpack(wrapped: link_pb2.Envelope, kind: type[_M]) -> _M:
    """The payload as ``kind``; InvalidArgument on another payload type or undecodable bytes."""
    expected = str(kind.DESCRIPTOR.full_name)
    if wrapped.payload_type != expected:
        raise InvalidArgument(
            f"expected payload_type {expected!r} in request {wrapped.request_id!r}, "
            f"got {wrapped.payload_type!r}"
        )
    message = kind()
    try:
        message.ParseFromString(wrapped.payload)
    except DecodeError as error:
        raise InvalidArgument(
            f"payload of request {wrapped.request_id!r} is not a valid {expected} ({error})"
        ) from None
    return message


def error_message(error: BaseException) -> node_pb2.InferError:
    """What a caller is told about ``error``: its status code name and message.

    Anything that is not a :class:`GroundplaneError` is our bug: INTERNAL with a generic message
    (the node logs the details).
    """
    if not isinstance(error, GroundplaneError):
        return node_pb2.InferError(
            code=grpc.StatusCode.INTERNAL.name,
            message="internal error on the node; the node logged the details",
        )
    reply = node_pb2.InferError(code=error.code.name, message=error.message)
    if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
        reply.retry_after_s = error.retry_after_s
    if isinstance(error, Unavailable) and error.next_opportunity is not None:
        reply.next_opportunity.CopyFrom(to_timestamp(error.next_opportunity))
    return reply


def error_from_message(reply: node_pb2.InferError, *, where: str) -> GroundplaneError:
    """The :class:`GroundplaneError` a node reported, with ``where`` (who said it) prefixed.

    A code outside the error tree (or none) is UNAVAILABLE: the node failed.
    """
    code = grpc.StatusCode.__members__.get(reply.code, grpc.StatusCode.UNKNOWN)
    error = error_from_status(code, reply.message, where)
    if isinstance(error, ResourceExhausted) and reply.HasField("retry_after_s"):
        error.retry_after_s = reply.retry_after_s
    if isinstance(error, Unavailable) and reply.HasField("next_opportunity"):
        error.next_opportunity = from_timestamp(reply.next_opportunity)
    return error
