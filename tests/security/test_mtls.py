"""Mutual TLS on real grpc.aio servers: the handshake refuses strangers, each method checks who
calls it, and a rotated certificate is served to the next connection."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from groundplane.handoff.servicer import HandoffServicer
from groundplane.handoff.v1 import handoff_pb2, handoff_pb2_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import GrpcServer, ServiceBinding
from groundplane.kernel.tls import TlsFiles, open_channel
from groundplane.routing.policy import PolicyKind, RoutingPolicy
from groundplane.routing.service import RoutingService
from groundplane.routing.servicer import RoutingServicer
from groundplane.routing.table import StationInfo
from groundplane.routing.v1 import routing_pb2, routing_pb2_grpc
from groundplane.tracking.app import build_tracking
from groundplane.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from .conftest import Issue, write_identity

T0 = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
CALL_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def served(bindings: list[ServiceBinding], files: TlsFiles) -> AsyncIterator[GrpcServer]:
    server = GrpcServer(bindings, tls=files, drain_grace_s=0.1, unready_delay_s=0.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _health(target: str, tls: TlsFiles | None, credentials: Any = None) -> int:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else open_channel(target, tls=tls)
    )
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        return int(response.status)


def _routing_binding() -> ServiceBinding:
    class NoVisibility:
        def sightings(self, at: datetime) -> list[Any]:
            return []

    class NoNodes:
        def snapshot(self) -> dict[str, Any]:
            return {}

    service = RoutingService(
        clock=SimulatedClock(T0),
        stations=[StationInfo("london", 51.5074, -0.1278)],
        visibility=NoVisibility(),
        nodes=NoNodes(),
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
        tick_s=3600.0,
    )
    return RoutingServicer(service).binding()


async def test_handshake_refuses_a_client_without_a_certificate_or_from_another_ca(
    issue: Issue, ca: trustme.CA
) -> None:
    """A server with --tls-* files answers a client holding a certificate from its CA; a client
    that presents no certificate, one signed by another CA, or no TLS at all is refused at the
    handshake: the call fails UNAVAILABLE and nothing reaches the servicer."""
    server_files = issue("routing")
    async with served([_routing_binding()], server_files) as server:
        assert (
            await _health(server.target, issue("gateway")) == health_pb2.HealthCheckResponse.SERVING
        )

        # TLS, trusting the server, but no client certificate.
        anonymous = grpc.ssl_channel_credentials(root_certificates=server_files.ca.read_bytes())
        # A certificate from another CA (which also trusts the server's CA, so only the client
        # side of the handshake can fail).
        stranger = issue("gateway", trustme.CA())
        foreign = grpc.ssl_channel_credentials(
            root_certificates=server_files.ca.read_bytes(),
            private_key=stranger.key.read_bytes(),
            certificate_chain=stranger.cert.read_bytes(),
        )
        for credentials in (anonymous, foreign):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(server.target, None, credentials)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await _health(server.target, None)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_gateway_may_use_routing_but_another_identity_may_not_set_its_policy(
    issue: Issue,
) -> None:
    """Routing's policy table: the gateway reads the routing policy; a ``tenant`` identity (a
    valid certificate from the same CA) is refused PERMISSION_DENIED on GetRoutingPolicy and
    SetRoutingPolicy with a message naming the identity and the method, the gateway is refused
    SetRoutingPolicy (admin only), and ``admin`` may set it. Health and reflection stay open to
    every authenticated peer."""
    async with served([_routing_binding()], issue("routing")) as server:
        async with open_channel(server.target, tls=issue("gateway")) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            policy = await stub.GetRoutingPolicy(
                routing_pb2.GetRoutingPolicyRequest(), timeout=CALL_TIMEOUT_S
            )
            with pytest.raises(grpc.aio.AioRpcError) as gateway_set:
                await stub.SetRoutingPolicy(
                    routing_pb2.SetRoutingPolicyRequest(policy=policy.policy),
                    timeout=CALL_TIMEOUT_S,
                )
            assert gateway_set.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'gateway'" in str(gateway_set.value.details())

        tenant = issue("tenant")
        async with open_channel(server.target, tls=tenant) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            for call in (
                stub.GetRoutingPolicy(
                    routing_pb2.GetRoutingPolicyRequest(), timeout=CALL_TIMEOUT_S
                ),
                stub.SetRoutingPolicy(
                    routing_pb2.SetRoutingPolicyRequest(policy=policy.policy),
                    timeout=CALL_TIMEOUT_S,
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await call
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert (
                    "identity 'tenant' may not call /groundplane.routing.v1.RoutingService"
                    in str(denied.value.details())
                )
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            listed = [
                response
                async for response in reflection_pb2_grpc.ServerReflectionStub(
                    channel
                ).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=CALL_TIMEOUT_S,
                )
            ]
            names = {s.name for s in listed[0].list_services_response.service}
            assert "groundplane.routing.v1.RoutingService" in names

        async with open_channel(server.target, tls=issue("admin")) as channel:
            changed = await routing_pb2_grpc.RoutingServiceStub(channel).SetRoutingPolicy(
                routing_pb2.SetRoutingPolicyRequest(policy=policy.policy),
                timeout=CALL_TIMEOUT_S,
            )
            assert changed.policy == policy.policy


async def test_handoff_sessions_are_refused_to_every_identity_but_the_gateway(
    issue: Issue,
) -> None:
    """D3: handoff's GetSession, SendTurn and CloseSession from a ``tenant`` or a ``routing``
    identity are refused PERMISSION_DENIED before the servicer runs (its manager here would
    fail any call that reached it), and CloseSession is refused to the gateway too (admin
    only)."""

    class Unreachable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"a refused call reached the handoff manager ({name})")

    binding = HandoffServicer(Unreachable(), SimulatedClock(T0)).binding()  # type: ignore[arg-type]
    calls = {
        "GetSession": handoff_pb2.GetSessionRequest(session_id="s-1"),
        "SendTurn": handoff_pb2.SendTurnRequest(session_id="s-1", prompt="hi"),
        "CloseSession": handoff_pb2.CloseSessionRequest(session_id="s-1"),
    }
    async with served([binding], issue("handoff")) as server:
        for identity, refused in (
            ("tenant", set(calls)),
            ("routing", set(calls)),
            ("gateway", {"CloseSession"}),
        ):
            async with open_channel(server.target, tls=issue(identity)) as channel:
                stub = handoff_pb2_grpc.HandoffServiceStub(channel)
                for method in sorted(refused):
                    with pytest.raises(grpc.aio.AioRpcError) as denied:
                        await getattr(stub, method)(calls[method], timeout=CALL_TIMEOUT_S)
                    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
                    assert f"'{identity}'" in str(denied.value.details())
                    assert f"HandoffService/{method}" in str(denied.value.details())


async def test_tracking_writes_need_the_admin_identity(issue: Issue, tmp_path: Path) -> None:
    """Tracking's reads are open to the services that follow the catalog (routing lists the
    sites); its writes (UpsertSite, UpsertElements, DeleteElements) are refused to routing and
    the gateway and accepted from ``admin``."""
    app = build_tracking(SimulatedClock(T0), db_path=tmp_path / "tracking.sqlite")
    try:
        async with served([app.servicer.binding()], issue("tracking")) as server:
            site = tracking_pb2.UpsertSiteRequest(
                site=tracking_pb2.Site(id="london", lat_deg=51.5, lon_deg=-0.1)
            )
            for identity in ("routing", "gateway"):
                async with open_channel(server.target, tls=issue(identity)) as channel:
                    stub = tracking_pb2_grpc.TrackingServiceStub(channel)
                    await stub.ListSites(tracking_pb2.ListSitesRequest(), timeout=CALL_TIMEOUT_S)
                    for call in (
                        stub.UpsertSite(site, timeout=CALL_TIMEOUT_S),
                        stub.UpsertElements(
                            tracking_pb2.UpsertElementsRequest(), timeout=CALL_TIMEOUT_S
                        ),
                        stub.DeleteElements(
                            tracking_pb2.DeleteElementsRequest(), timeout=CALL_TIMEOUT_S
                        ),
                    ):
                        with pytest.raises(grpc.aio.AioRpcError) as denied:
                            await call
                        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            async with open_channel(server.target, tls=issue("admin")) as channel:
                stub = tracking_pb2_grpc.TrackingServiceStub(channel)
                await stub.UpsertSite(site, timeout=CALL_TIMEOUT_S)
                sites = await stub.ListSites(
                    tracking_pb2.ListSitesRequest(), timeout=CALL_TIMEOUT_S
                )
                assert [s.id for s in sites.sites] == ["london"]
    finally:
        app.close()


def _served_certificate(port: int, client: TlsFiles) -> x509.Certificate:
    """The certificate the server presents to a new TLS connection (the stdlib ssl client
    speaks the same handshake; grpc channels do not expose the peer certificate)."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    context.set_alpn_protocols(["h2"])
    with ssl_socket(context, port) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@contextlib.contextmanager
def ssl_socket(context: ssl.SSLContext, port: int) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        yield sock


async def test_rotated_certificate_files_are_served_to_the_next_connection(
    issue: Issue, ca: trustme.CA, tmp_path: Path
) -> None:
    """cert-manager rewrites the mounted files in place: while the certificate file is half
    written (not PEM yet) new connections keep the current certificate; once the certificate
    and key files are replaced by a new pair from the same CA, a new connection is handed the
    new certificate (its serial differs) without a restart, and a gRPC call over a new channel
    still succeeds."""
    server_files = write_identity(ca, "routing", tmp_path / "server")
    client = issue("gateway")
    async with served([_routing_binding()], server_files) as server:
        before = _served_certificate(server.port, client)
        original = server_files.cert.read_bytes()
        server_files.cert.write_bytes(b"half written")
        assert _served_certificate(server.port, client).serial_number == before.serial_number
        server_files.cert.write_bytes(original)
        rotated = write_identity(ca, "routing", tmp_path / "rotated")
        os.replace(rotated.cert, server_files.cert)
        os.replace(rotated.key, server_files.key)
        after = _served_certificate(server.port, client)
        assert after.serial_number != before.serial_number
        assert after == x509.load_pem_x509_certificate(server_files.cert.read_bytes())
        assert await _health(server.target, client) == health_pb2.HealthCheckResponse.SERVING
