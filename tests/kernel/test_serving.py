"""The gRPC serving helper: health, reflection, error mapping and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.kernel.serving import GrpcServer, ServiceBinding

SERVICE = "groundplane.test.v1.EchoService"


def _echo_binding() -> ServiceBinding:
    """A raw-bytes service whose methods raise domain errors or crash on request."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if request == b"bad":
            raise InvalidArgument("expected a greeting, got 'bad'")
        if request == b"missing":
            raise NotFound("no such thing: 'missing'")
        if request == b"crash":
            raise ZeroDivisionError("a bug")
        if request.startswith(b"sleep"):
            await asyncio.sleep(float(request[5:]))
        if request.startswith(b"long"):
            raise InvalidArgument(f"expected a short source, got {request.decode() * 3!r}")
        if request == b"late":
            # Blocking work that outlives the caller's deadline, however late the call started.
            time.sleep((context.time_remaining() or 0.0) + 0.1)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left")
        return request

    async def echo_stream(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield b"first"
        if request == b"bad":
            raise InvalidArgument("stream refused after one item")
        yield request

    async def echo_writes(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """The other shape grpc.aio allows: a coroutine writing to the context."""
        await context.write(b"first")
        if request == b"bad":
            raise InvalidArgument("stream refused after one item")
        await context.write(request)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "EchoStream": grpc.unary_stream_rpc_method_handler(echo_stream),
            "EchoWrites": grpc.unary_stream_rpc_method_handler(echo_writes),
        },
    )
    return ServiceBinding(SERVICE, lambda server: server.add_generic_rpc_handlers([handler]))


async def test_domain_errors_map_to_status_codes_and_service_keeps_serving() -> None:
    """InvalidArgument/NotFound keep their code and message; a bug becomes INTERNAL, not UNKNOWN;
    the server answers normally afterwards."""
    server = GrpcServer([_echo_binding()], drain_grace_s=0.1, unready_delay_s=0.0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await echo(b"bad", timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected a greeting" in (bad.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await echo(b"missing", timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as crash:
                await echo(b"crash", timeout=5)
            assert crash.value.code() == grpc.StatusCode.INTERNAL
            assert "a bug" not in (crash.value.details() or "")
            assert await echo(b"hello", timeout=5) == b"hello"

            for method in ("EchoStream", "EchoWrites"):  # async generator, coroutine
                stream = channel.unary_stream(f"/{SERVICE}/{method}", None, None)
                received: list[bytes] = []
                with pytest.raises(grpc.aio.AioRpcError) as streamed:
                    async for item in stream(b"bad", timeout=5):
                        received.append(item)
                assert received == [b"first"], method
                assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert [item async for item in stream(b"hello", timeout=5)] == [
                    b"first",
                    b"hello",
                ], method
    finally:
        await server.stop(0)


async def _next_status(call: Any, name: str) -> int:
    """The next status a Watch stream sends (its end is an error naming the entry)."""
    reply = await call.read()  # grpc.aio.EOF when the stream ended
    assert isinstance(reply, health_pb2.HealthCheckResponse), f"Watch({name!r}) ended early"
    status: int = reply.status
    return status


async def test_watch_sends_each_entry_then_not_serving_at_shutdown() -> None:
    """Health Watch (a coroutine handler writing to its context) works through the interceptor:
    on '', liveness, readiness and the service it first sends SERVING, an unknown name
    SERVICE_UNKNOWN; on stop every entry changes to NOT_SERVING, liveness included."""
    server = GrpcServer([_echo_binding()], drain_grace_s=5.0, unready_delay_s=0.0)
    await server.start()
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            names = ("", "liveness", "readiness", SERVICE)
            calls = {
                name: stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=30)
                for name in (*names, "no.such.Service")
            }
            first = {name: await _next_status(call, name) for name, call in calls.items()}
            assert first == {
                **dict.fromkeys(names, serving),
                "no.such.Service": health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
            }
            stopping = asyncio.create_task(server.stop(), name="stop-server")
            for name in names:
                assert await _next_status(calls[name], name) == not_serving, name
                calls[name].cancel()  # seen: the stream need not hold the drain
            calls["no.such.Service"].cancel()
            await stopping
    finally:
        await server.stop(0)


async def test_a_server_built_unready_serves_liveness_and_gates_readiness() -> None:
    """With ready_at_start=False, liveness is SERVING from the start while readiness, '' and the
    service are NOT_SERVING; set_ready(True) turns them SERVING (a Watch sees the change),
    set_ready(False) back, and calls are answered throughout (readiness gates traffic, not the
    port)."""
    server = GrpcServer(
        [_echo_binding()], drain_grace_s=0.1, unready_delay_s=0.0, ready_at_start=False
    )
    await server.start()
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def check(name: str) -> int:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                status: int = reply.status
                return status

            assert await check("liveness") == serving
            for name in ("", "readiness", SERVICE):
                assert await check(name) == not_serving, name

            def ready() -> bool:  # read anew each time (an assert would narrow the property)
                return server.ready

            assert not ready()
            echo = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
            assert await echo(b"hello", timeout=5) == b"hello"
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="readiness"), timeout=30)
            assert await _next_status(watch, "readiness") == not_serving
            await server.set_ready(True)
            assert await _next_status(watch, "readiness") == serving
            assert ready()
            for name in ("", "readiness", SERVICE):
                assert await check(name) == serving, name
            await server.set_ready(False)
            assert await _next_status(watch, "readiness") == not_serving
            assert await check("liveness") == serving
            watch.cancel()
    finally:
        await server.stop(0)


async def test_health_entries_and_reflection() -> None:
    """Health answers SERVING for '', liveness, readiness and the service; reflection lists the
    service, and shutdown turns readiness NOT_SERVING."""
    server = GrpcServer([_echo_binding()], drain_grace_s=0.1, unready_delay_s=0.0)
    await server.start()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "liveness", "readiness", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names: set[str] = set()
        async for response in reflect.ServerReflectionInfo(ask(), timeout=5):
            names |= {s.name for s in response.list_services_response.service}
        assert SERVICE in names
        assert "grpc.health.v1.Health" in names

        slow = channel.unary_unary(f"/{SERVICE}/Echo", None, None)

        async def slow_call() -> bytes:
            reply: bytes = await slow(b"sleep0.5", timeout=5)
            return reply

        in_flight = asyncio.create_task(slow_call(), name="in-flight-call")
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop(2.0), name="stop-server")
        await asyncio.sleep(0.1)
        assert await in_flight == b"sleep0.5"
        await stopping


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from kernel.test_serving import _echo_binding
    from groundplane.kernel.logs import configure_logging
    from groundplane.kernel.serving import GrpcServer

    async def main():
        configure_logging("json")
        server = GrpcServer([_echo_binding()], drain_grace_s=5.0, unready_delay_s=1.5)
        await server.start()
        print(server.port, flush=True)
        await server.serve_until_signal()
        print("clean-exit", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_sigterm_drains_in_flight_call_then_exits_cleanly() -> None:
    """SIGTERM while a call is in flight: readiness goes NOT_SERVING while calls are still
    accepted, the in-flight call completes, the process exits 0."""
    tests_dir = str(Path(__file__).resolve().parent.parent)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT.format(tests=tests_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/Echo", None, None)

            async def slow_call() -> bytes:
                reply: bytes = await call(b"sleep1.0", timeout=10)
                return reply

            in_flight = asyncio.create_task(slow_call(), name="slow-call")
            await asyncio.sleep(0.3)
            os.kill(process.pid, signal.SIGTERM)
            # Readiness turns NOT_SERVING while calls are still accepted (1.5 s window): poll
            # for it rather than guess when the signal was handled on a loaded machine.
            health = health_pb2_grpc.HealthStub(channel)
            status = health_pb2.HealthCheckResponse.SERVING
            async with asyncio.timeout(1.4):
                while status != health_pb2.HealthCheckResponse.NOT_SERVING:
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service="readiness"), timeout=1
                    )
                    status = reply.status
                    await asyncio.sleep(0.05)
            assert await in_flight == b"sleep1.0"
        assert process.wait(timeout=10) == 0
        assert process.stdout.read().strip() == "clean-exit"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def test_a_port_in_use_is_a_clear_error_and_leaves_the_server_restartable() -> None:
    """Binding to a port another server holds raises OSError naming the address; the failed
    server can be started again (on a free port) instead of claiming it already runs."""
    first = GrpcServer([_echo_binding()], unready_delay_s=0.0)
    port = await first.start()
    second = GrpcServer([_echo_binding()], address=f"127.0.0.1:{port}", unready_delay_s=0.0)
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await second.start()
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await second.start()
    finally:
        await first.stop(0)
    assert await second.start() == port
    await second.stop(0)


@pytest.fixture
def structlog_config() -> Iterator[None]:
    """structlog's global configuration restored after the test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("structlog_config")
async def test_a_long_echoing_message_is_cut_and_an_abort_past_the_deadline_is_quiet() -> None:
    """An error message echoing 30 KB of input reaches the caller cut to ~2 KB (not "Stream
    removed": the trailer holds 8 KB), head and tail kept; a servicer's abort after the caller's
    deadline gives DEADLINE_EXCEEDED with one short log line, no traceback and no second abort."""
    server = GrpcServer([_echo_binding()], drain_grace_s=0.1, unready_delay_s=0.0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
            with pytest.raises(grpc.aio.AioRpcError) as long:
                await echo(b"long" + b"x" * 10_000, timeout=5)
            assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = long.value.details() or ""
            assert details.startswith("expected a short source")
            assert "bytes cut" in details
            assert len(details.encode()) <= 2_100
            # Every level reaches the capture, whatever level an earlier test configured (the
            # configuration is put back after the test).
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
            with structlog.testing.capture_logs() as logs:
                with pytest.raises(grpc.aio.AioRpcError) as late:
                    # A deadline the servicer is sure to start within, even on a loaded machine.
                    await echo(b"late", timeout=1.0)
                assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert await echo(b"hello", timeout=5) == b"hello"
            events = [entry["event"] for entry in logs]
            assert "call_failed" not in events
            assert events.count("call_over") == 1
            assert all("exc_info" not in entry for entry in logs)
    finally:
        await server.stop(0)
