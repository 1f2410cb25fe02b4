"""Who may call which gRPC method: the per-method policy behind mutual TLS.

Every TLS peer has an identity (:func:`groundplane.kernel.tls.peer_identity`: ``gateway``,
``routing``, ``admin``, …). :data:`DEFAULT_POLICY` lists, per service and method, the identities
allowed to call it; ``admin`` may call everything, and health and reflection are open to every
authenticated peer (a peer without a certificate from the CA never got past the handshake).
Anything not listed is refused with PERMISSION_DENIED naming the identity and the method.

The table (D3 of issue 14: nothing behind the gateway was authenticated):

* tracking: its reads by every service that follows the catalog (routing, handoff, links,
  dashboard, gateway, hil, nodes); its writes (UpsertElements, DeleteElements, UpsertSite) by
  ``admin`` only;
* routing: Route, WatchRouteTable and GetRoutingPolicy by the gateway and the dashboard;
  SetRoutingPolicy by ``admin`` only;
* handoff: sessions, turns and jobs by the gateway; the handoff feed (WatchHandoffs,
  ListHandoffs) by the gateway and the dashboard; CloseSession by ``admin`` only;
* gateway: InferenceService by any authenticated peer (tenants are then told apart by their
  bearer tokens); GatewayMonitorService by the dashboard;
* hil: station control by ``admin``; its status by the dashboard.

Without TLS nothing is checked (the plaintext embedded default on loopback).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
import structlog

from groundplane.kernel.tls import peer_identity

log = structlog.get_logger("groundplane.authz")

ADMIN: Final = "admin"
ANY: Final = "*"
"""In a policy entry: every authenticated peer."""


@dataclass(frozen=True)
class Policy:
    """Allowed identities per full method name (``/package.Service/Method``) or per service
    (``/package.Service/*``); :data:`ADMIN` is allowed everywhere."""

    rules: Mapping[str, frozenset[str]]

    def allowed(self, identity: str, method: str) -> bool:
        if identity == ADMIN:
            return True
        callers = self.rules.get(method)
        if callers is None:
            service = method.rsplit("/", 1)[0]
            callers = self.rules.get(f"{service}/*", frozenset())
        return ANY in callers or identity in callers

    def denial(self, identity: str, method: str) -> str:
        """The PERMISSION_DENIED message: who, what, and who may."""
        callers = self.rules.get(method) or self.rules.get(
            f"{method.rsplit('/', 1)[0]}/*", frozenset()
        )
        who = ", ".join(sorted(callers | {ADMIN}))
        return f"identity {identity!r} may not call {method} (allowed: {who})"


def _rules(service: str, methods: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    return {f"/{service}/{method}": callers for method, callers in methods.items()}


_CATALOG_READERS = frozenset(
    {"routing", "handoff", "links", "dashboard", "gateway", "hil", "nodes"}
)
_TRACKING_READS = (
    "ListElements",
    "GetElements",
    "ExportElements",
    "ListSites",
    "GetLookAngles",
    "ListPasses",
    "GetVisibility",
    "WatchLookAngles",
    "WatchCatalog",
)
_ADMIN_ONLY: frozenset[str] = frozenset()
_GATEWAY = frozenset({"gateway"})
_WATCHERS = frozenset({"gateway", "dashboard"})

DEFAULT_POLICY: Final = Policy(
    {
        "/grpc.health.v1.Health/*": frozenset({ANY}),
        "/grpc.reflection.v1alpha.ServerReflection/*": frozenset({ANY}),
        "/grpc.reflection.v1.ServerReflection/*": frozenset({ANY}),
        **_rules(
            "groundplane.tracking.v1.TrackingService",
            {
                **dict.fromkeys(_TRACKING_READS, _CATALOG_READERS),
                "UpsertElements": _ADMIN_ONLY,
                "DeleteElements": _ADMIN_ONLY,
                "UpsertSite": _ADMIN_ONLY,
            },
        ),
        **_rules(
            "groundplane.routing.v1.RoutingService",
            {
                "Route": _WATCHERS,
                "WatchRouteTable": _WATCHERS,
                "GetRoutingPolicy": _WATCHERS,
                "SetRoutingPolicy": _ADMIN_ONLY,
            },
        ),
        **_rules(
            "groundplane.handoff.v1.HandoffService",
            {
                "CreateSession": _GATEWAY,
                "GetSession": _GATEWAY,
                "SendTurn": _GATEWAY,
                "SubmitJob": _GATEWAY,
                "GetJob": _GATEWAY,
                "WatchHandoffs": _WATCHERS,
                "ListHandoffs": _WATCHERS,
                "CloseSession": _ADMIN_ONLY,
            },
        ),
        "/groundplane.gateway.v1.InferenceService/*": frozenset({ANY}),
        "/groundplane.gateway.v1.GatewayMonitorService/*": frozenset({"dashboard"}),
        **_rules(
            "groundplane.hil.v1.StationControlService",
            {
                "StartTracking": _ADMIN_ONLY,
                "StopTracking": _ADMIN_ONLY,
                "GetStatus": frozenset({"dashboard"}),
                "WatchStatus": frozenset({"dashboard"}),
            },
        ),
    }
)


class AuthorisingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks each call's TLS peer against ``policy`` before the servicer runs.

    grpc.aio interceptors see the method but not the peer, so each handler is wrapped and the
    check runs on the call's context (``auth_context()``). A refused call is aborted with
    PERMISSION_DENIED and one ``permission_denied`` log line; a plaintext peer (no TLS) is not
    checked. Handlers are typed ``Any`` as in :mod:`groundplane.kernel.serving`.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for attribute, make, streaming in kinds:
            behaviour = getattr(handler, attribute)
            if behaviour is not None:
                wrap = self._wrap_stream if streaming else self._wrap_unary
                return make(
                    wrap(method, behaviour),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler  # pragma: no cover - a handler always has one behaviour

    async def _check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        identity = peer_identity(context.auth_context())
        if identity is None or self.policy.allowed(identity, method):
            return
        message = self.policy.denial(identity, method)
        log.warning("permission_denied", identity=identity, method=method)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    def _wrap_unary(
        self, method: str, behaviour: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._check(method, context)
            return await behaviour(request, context)

        return wrapped

    def _wrap_stream(
        self, method: str, behaviour: Callable[[Any, Any], Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        # A coroutine writing each item, whichever shape ``behaviour`` has (see
        # kernel.serving._wrap_stream for why the wrapper is always a coroutine).
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await self._check(method, context)
            produced = behaviour(request, context)
            if inspect.isawaitable(produced):
                await produced
                return
            async with contextlib.aclosing(produced) as items:
                async for item in items:
                    await context.write(item)

        return wrapped
