"""Shared parts of the ``servicer_*`` fuzz targets: random protobuf requests built from the
service descriptors, sent to a real in-process ``GrpcServer`` (the kernel's, with its error
mapping) over a real loopback channel.

A request message is built field by field from the fuzzer's bytes (``FuzzedDataProvider``):
each field set or not, repeated fields 0–4 items, strings of any Unicode (sometimes long),
integers over their whole range, doubles including ±inf and NaN, enums including values the
contract does not name, nested messages (Timestamps too) to a bounded depth.

Oracle: every call ends OK or with a status of the error tree; INTERNAL and UNKNOWN (what the
server answers for an exception outside :class:`GroundplaneError`) are crashes, and so is a
unary call that does not answer within its deadline (a hang).
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Callable, Coroutine
from typing import Any

import atheris
import grpc
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from groundplane.kernel.logs import configure_logging

from _harness import fuzzing

Stop = Callable[[], Coroutine[Any, Any, None]]
"""Stops what a servicer target's ``start`` started."""
CRASH_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
UNARY_DEADLINE_S = 5.0
STREAM_DEADLINE_S = 1.0
MAX_DEPTH = 3
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(  # noqa: PLR0911 - one return per protobuf scalar kind
    field: Any,  # a FieldDescriptor, pure-Python or upb: the stubs type the two apart
    fdp: atheris.FuzzedDataProvider,
) -> object:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if fdp.ConsumeBool():
            return fdp.ConsumeIntInRange(low, high)
        return max(low, min(high, fdp.ConsumeIntInRange(-3, 100)))  # small values matter most
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = fdp.ConsumeFloat() if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-400, 400) / 4
        if kind == FieldDescriptor.TYPE_FLOAT and abs(value) > 3.4e38:
            value = float("inf") if value > 0 else float("-inf")
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        return fdp.ConsumeBool()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None  # an enum field has its enum's descriptor
        numbers = [v.number for v in field.enum_type.values]
        if fdp.ConsumeIntInRange(0, 7) == 0:
            return fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)  # open enums carry unknown values
        return numbers[fdp.ConsumeIntInRange(0, len(numbers) - 1)]
    if kind == FieldDescriptor.TYPE_BYTES:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    length = fdp.ConsumeIntInRange(0, 24) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 600)
    return fdp.ConsumeUnicodeNoSurrogates(length)


def fill(  # noqa: PLR0912 - one branch per field shape (map, repeated, message, scalar)
    message: Message, fdp: atheris.FuzzedDataProvider, depth: int = 0
) -> Message:
    """Set ``message``'s fields from the fuzzer's bytes (see the module doc)."""
    descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        if fdp.remaining_bytes() == 0:
            break
        if not fdp.ConsumeBool():
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and depth >= MAX_DEPTH:
            continue
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(fdp.ConsumeIntInRange(0, 3)):
                key = _scalar(key_field, fdp)
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    fill(target[key], fdp, depth + 1)
                else:
                    target[key] = _scalar(value_field, fdp)
        elif field.is_repeated:
            for _ in range(fdp.ConsumeIntInRange(0, 4)):
                if is_message:
                    fill(target.add(), fdp, depth + 1)
                else:
                    target.append(_scalar(field, fdp))
        elif is_message:
            fill(target, fdp, depth + 1)
            target.SetInParent()
        else:
            setattr(message, field.name, _scalar(field, fdp))
    return message


class ServicerFuzzer:
    """One service behind a real ``GrpcServer`` on its own event loop, and the call oracle.

    ``start`` (a coroutine function) starts the server and returns its target and an async
    ``stop``; it runs once, on the first input.
    """

    def __init__(
        self,
        service: Any,
        start: Callable[[], Coroutine[Any, Any, tuple[str, Stop]]],
    ) -> None:
        self.methods: list[MethodDescriptor] = list(service.methods)
        self._start = start
        self._runner: asyncio.Runner | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stop: Stop | None = None
        self.calls = 0

    def _ensure(self) -> tuple[asyncio.Runner, grpc.aio.Channel]:
        if self._runner is None or self._channel is None:
            if fuzzing():  # one "rpc" log line per call would dominate the campaign's time
                configure_logging(level="ERROR")
            self._runner = asyncio.Runner()
            target, self._stop = self._runner.run(self._start())
            self._channel = grpc.aio.insecure_channel(target)
            atexit.register(self.close)
        return self._runner, self._channel

    def close(self) -> None:
        """Stop the server and the loop (idempotent)."""
        runner, channel, stop = self._runner, self._channel, self._stop
        self._runner = self._channel = self._stop = None
        if runner is None:
            return
        if channel is not None:
            runner.run(channel.close(None))
        if stop is not None:
            runner.run(stop())
        runner.close()

    def request(self, data: bytes) -> tuple[MethodDescriptor, Message]:
        """The method and request message ``data`` describes."""
        fdp = atheris.FuzzedDataProvider(data)
        method = self.methods[fdp.ConsumeIntInRange(0, len(self.methods) - 1)]
        request = GetMessageClass(method.input_type)()
        return method, fill(request, fdp)

    def test_one_input(self, data: bytes) -> None:
        runner, channel = self._ensure()
        method, request = self.request(data)
        self.calls += 1
        runner.run(self._call(channel, method, request))

    async def _call(
        self, channel: grpc.aio.Channel, method: MethodDescriptor, request: Message
    ) -> None:
        path = f"/{method.containing_service.full_name}/{method.name}"
        serialize = type(request).SerializeToString
        parse = GetMessageClass(method.output_type).FromString
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path,
                    request_serializer=serialize,
                    response_deserializer=parse,
                )(request, timeout=STREAM_DEADLINE_S)
                try:
                    await stream.read()  # the first answer (or error) is where validation decides
                finally:
                    stream.cancel()
            else:
                await channel.unary_unary(
                    path,
                    request_serializer=serialize,
                    response_deserializer=parse,
                )(request, timeout=UNARY_DEADLINE_S)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in CRASH_CODES or (
                code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming
            ):
                raise AssertionError(
                    f"{path} answered {code.name} ({error.details()!r}) to {request!r:.2000}"
                ) from None
        except asyncio.CancelledError:
            pass
