"""Serving gRPC services: one helper every groundplane service uses.

:class:`GrpcServer` runs a ``grpc.aio`` server with

* the standard health service, with ``liveness`` and ``readiness`` entries besides each service
  name (Kubernetes gRPC probes name them with ``service:``),
* server reflection, so ``grpcurl`` lists and calls methods without the .proto files,
* the error mapping: a :class:`~groundplane.kernel.errors.GroundplaneError` raised by a servicer
  becomes its status code and message; anything else becomes INTERNAL (and is logged),
* one canonical log line per call (method, status code, duration),
* mutual TLS when the process (or the ``tls=`` argument) has certificates
  (:mod:`groundplane.kernel.tls`): only peers with a certificate from the CA get past the
  handshake, and each call is checked against the per-method policy
  (:mod:`groundplane.kernel.authz`); plaintext otherwise,
* graceful shutdown: readiness and every service go NOT_SERVING while the server still accepts
  calls for ``unready_delay_s`` (so a load balancer or a Kubernetes readiness probe sees it and
  stops sending), then the server stops taking new calls and liveness goes NOT_SERVING too (a
  ``Watch`` stream sees every entry end NOT_SERVING; no later ``set`` turns one back), in-flight
  calls drain for ``drain_grace_s`` (open ``Watch`` streams included: they end with UNAVAILABLE
  when the grace is over), and it stops. :meth:`GrpcServer.serve_until_signal` does this on
  SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from groundplane.kernel import tls as _tls
from groundplane.kernel import tracing
from groundplane.kernel.authz import DEFAULT_POLICY, AuthorisingInterceptor, Policy
from groundplane.kernel.errors import GroundplaneError, status_for

log = structlog.get_logger("groundplane.serving")

LIVENESS = "liveness"
READINESS = "readiness"


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to mount: its full name (``package.Service``) and how to add it."""

    name: str
    register: Callable[[grpc.aio.Server], None]


def _code_name(code: grpc.StatusCode) -> str:
    return str(code.name)


class _ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps domain errors to status codes and logs one line per call.

    grpc-stubs types handlers for the synchronous server; the aio behaviours are coroutines and
    async generators, so handlers are handled as ``Any`` here.
    """

    def __init__(self) -> None:
        # method -> (the handler it was given, its wrapped handler): the registered handlers
        # do not change once the server runs, so each method is wrapped once, not per call
        # (~4 µs a call). A handler made afresh per call (an inner interceptor's) is rewrapped.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _wrap(method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _call_over(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    """How the call already ended (its deadline passed, or the client went) when no status can
    be sent any more; None while it is open."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if context.done() or context.cancelled():
        return grpc.StatusCode.CANCELLED
    return None


def _failed_code(error: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    return _call_over(context) or status_for(error)[0]


async def _abort_for(
    method: str, error: BaseException, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """End the call with the status for ``error``; once only, and quietly when the call is
    already over (a servicer's own abort past the deadline fails inside grpc: that is the
    caller's deadline, not a bug, so one short line is logged and nothing is sent again)."""
    if _call_over(context) is not None:
        log.info("call_over", method=method, error=type(error).__name__)
        raise asyncio.CancelledError from None
    code, message = status_for(error)
    if not isinstance(error, GroundplaneError):
        log.error("call_failed", method=method, exc_info=error)
    await context.abort(code, message)


def _context_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    return code if code is not None else grpc.StatusCode.UNKNOWN


def _log_call(method: str, started: float, code: grpc.StatusCode) -> None:
    log.info(
        "rpc",
        method=method,
        code=_code_name(code),
        duration_ms=round((time.monotonic() - started) * 1000.0, 3),
    )


def _wrap_unary(
    method: str, behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            code = _context_code(context)
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            code = _failed_code(error, context)
            await _abort_for(method, error, context)
            raise  # pragma: no cover - abort always raises
        finally:
            _log_call(method, started, code)

    return wrapped


def _wrap_stream(
    method: str,
    behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
    """A response-streaming behaviour as a coroutine that writes each item to ``context``.

    grpc.aio takes both shapes of stream handler: an async generator yielding the responses, or
    a coroutine that writes them with ``context.write`` and returns None (grpcio-health's
    ``Watch`` is one). grpc.aio tells them apart with ``inspect.iscoroutinefunction`` on the
    handler, so the wrapper is always a coroutine and adapts to what ``behaviour`` returns.
    """

    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            produced = behaviour(request, context)
            if inspect.isawaitable(produced):
                await produced  # writes its responses to context itself
            else:
                # aclosing: a stream the client drops at a yield runs its finally blocks now,
                # not whenever the garbage collector finalises the generator.
                async with contextlib.aclosing(produced) as items:
                    async for item in items:
                        await context.write(item)
        except grpc.aio.AbortError:
            code = _context_code(context)
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            code = _failed_code(error, context)
            await _abort_for(method, error, context)
        finally:
            _log_call(method, started, code)

    return wrapped


class GrpcServer:
    """A grpc.aio server with health, reflection, error mapping and graceful shutdown."""

    def __init__(  # noqa: PLR0913 - server options by keyword, each with a default
        self,
        bindings: Sequence[ServiceBinding],
        address: str = "127.0.0.1:0",
        drain_grace_s: float = 5.0,
        unready_delay_s: float = 1.0,
        options: Sequence[tuple[str, Any]] = (),
        *,
        ready_at_start: bool = True,
        tls: _tls.TlsFiles | _tls.FromProcess | None = _tls.PROCESS,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self._bindings = tuple(bindings)
        self._tls = tls
        self._policy = policy
        self._ready_at_start = ready_at_start
        self._ready = ready_at_start
        self._address = address
        self._drain_grace_s = drain_grace_s
        self._unready_delay_s = unready_delay_s
        self._options = [("grpc.so_reuseport", 0), *options]
        # The grpc.aio server and the health servicer bind to the running event loop, so they
        # are made in start(): a GrpcServer can be built before asyncio.run().
        self._server: Any = None
        self._health: Any = None
        self._port: int | None = None
        self._stopped: asyncio.Event | None = None
        self._draining = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started; call start() first")
        return self._port

    @property
    def tls(self) -> _tls.TlsFiles | None:
        """The certificates this server requires its peers to be signed for (None: plaintext)."""
        return _tls.resolve(self._tls)

    @property
    def target(self) -> str:
        """``host:port`` a client dials to reach this server."""
        host = self._address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def _health_names(self) -> list[str]:
        return ["", READINESS, *(b.name for b in self._bindings)]

    async def start(self) -> int:
        """Bind, mount everything and start serving; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        files = self.tls
        # Error mapping outermost, so a refused call is logged with its PERMISSION_DENIED; the
        # tracing interceptor (none unless tracing is on) inside it.
        interceptors: list[Any] = [_ErrorMappingInterceptor(), *tracing.grpc_server_interceptors()]
        if files is not None:
            interceptors.append(AuthorisingInterceptor(self._policy))
        self._server = grpc.aio.server(interceptors=interceptors, options=self._options)
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._stopped = asyncio.Event()
        for binding in self._bindings:
            binding.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                *(b.name for b in self._bindings),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        cause: RuntimeError | None = None
        try:
            if files is None:
                port = int(self._server.add_insecure_port(self._address))
            else:
                credentials = _tls.server_credentials(files)
                port = int(self._server.add_secure_port(self._address, credentials))
        except RuntimeError as error:  # grpc raises RuntimeError when the port is taken
            port, cause = 0, error
        if port == 0:
            await self._server.stop(None)
            self._server = None
            raise OSError(f"could not bind gRPC server to {self._address}: {cause}")
        self._port = port
        _tls.warn_if_exposed(self._address.rsplit(":", 1)[0], files)
        await self._server.start()
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._publish_readiness()
        log.info(
            "serving",
            address=self.target,
            services=[b.name for b in self._bindings],
            ready=self._ready,
            tls=files is not None,
        )
        return port

    @property
    def ready(self) -> bool:
        """Whether readiness (and each service's entry) is SERVING now."""
        return self._ready and self._stopped is not None and not self._stopped.is_set()

    async def set_ready(self, ready: bool) -> None:
        """Readiness and every service's entry SERVING (``True``) or NOT_SERVING.

        A service built with ``ready_at_start=False`` calls this once its inputs are live (and
        with ``False`` when it loses them); ``liveness`` stays SERVING either way. Before
        :meth:`start` it sets what start publishes; after :meth:`stop` began it does nothing.
        """
        if self._ready == ready:
            return
        self._ready = ready
        if self._health is None or self._draining:
            return
        log.info("readiness", address=self.target, ready=ready)
        await self._publish_readiness()

    async def _publish_readiness(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._health_names():
            await self._health.set(name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, let in-flight calls drain, then stop."""
        if self._stopped is None or self._stopped.is_set():
            return
        grace = self._drain_grace_s if grace_s is None else grace_s
        self._draining = True
        for name in self._health_names():
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("unready", address=self.target, delay_s=self._unready_delay_s)
        await asyncio.sleep(self._unready_delay_s)
        # No new calls from here on (a liveness probe could not connect any more): every entry,
        # liveness too, is NOT_SERVING for good.
        await self._health.enter_graceful_shutdown()
        log.info("draining", address=self.target, grace_s=grace)
        await self._server.stop(grace)
        self._stopped.set()
        log.info("stopped", address=self.target)

    async def wait_stopped(self) -> None:
        if self._stopped is None:
            raise RuntimeError("the server is not started; call start() first")
        await self._stopped.wait()

    async def serve_until_signal(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start (unless started), serve until one of ``signals`` arrives, then stop gracefully."""
        if self._port is None:
            await self.start()
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, received.set)
        try:
            await received.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.stop()
