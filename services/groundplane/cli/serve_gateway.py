"""``groundplane serve gateway``: the inference gateway as its own process.

Serves ``groundplane.gateway.v1.InferenceService`` (``Infer``, ``InferStream``) with gRPC health
and reflection. It reaches the other services only through their contracts: the route table
from routing's ``WatchRouteTable`` stream (``--routing``), session turns through
``HandoffService`` (``--handoff``), the nodes, their liveness and the link states over MQTT
(``--broker``). Tenants and their bearer tokens come from ``--tenants`` (JSON, the shape
:func:`groundplane.scenario.default_tenants` returns:
``{"tenant": {"tokens": ["…"], "max_concurrent": 8, "max_queued": 32}}``); without it the
built-in demo tenant and its published dev token are used, with a warning.

With ``--http-listen HOST:PORT`` the same gateway also serves the OpenAI-compatible HTTP API
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``; :mod:`groundplane.gateway.http`)
at ``http://HOST:PORT/v1``, the tenants' tokens being the API keys.

Readiness is NOT_SERVING until the gateway holds a route table and its MQTT client is connected
and subscribed, and again while routing has been unreachable for more than a few seconds
(:mod:`groundplane.gateway.app`). SIGTERM: NOT_SERVING for ``--unready-delay``, in-flight calls
drain within ``--drain-grace``, exit 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from groundplane.gateway.app import GatewayApp, GatewaySettings
from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.service import GatewayConfig
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_float
from groundplane.scenario import DEFAULT_TENANT, default_tenants

from . import inputs
from .process import (
    add_broker_argument,
    add_process_arguments,
    broker_address,
    listen_address,
    process_clock,
    run_service,
)

log = structlog.get_logger("groundplane.cli.serve_gateway")

DEFAULT_PORT = 50056
DEFAULT_INSTANCE_ID = "gw-1"


def register(services: Any) -> None:
    """Add ``gateway`` to the ``serve`` subcommands."""
    parser = services.add_parser(
        "gateway",
        help="the inference gateway (tenants, routing, failover, session turns)",
        description="Serve groundplane.gateway.v1.InferenceService: authenticated inference "
        "calls routed by the --routing service's route table to node agents over --broker, "
        "with failover, and session turns through the --handoff service. Readiness is "
        "NOT_SERVING until a route table is held and MQTT is connected, and while routing is "
        "unreachable for more than a few seconds. SIGTERM: NOT_SERVING for --unready-delay, "
        f"drain, exit 0. Times: {inputs.TIME_HELP}.",
    )
    add_process_arguments(parser, default_port=DEFAULT_PORT)
    parser.add_argument(
        "--routing",
        required=True,
        type=inputs.address,
        metavar="HOST:PORT",
        help="the routing service whose route table (WatchRouteTable) the gateway decides on",
    )
    parser.add_argument(
        "--handoff",
        required=True,
        type=inputs.address,
        metavar="HOST:PORT",
        help="the handoff service that answers session turns (calls with a session id)",
    )
    add_broker_argument(parser)
    parser.add_argument(
        "--tenants",
        metavar="FILE",
        help='JSON {"TENANT": {"tokens": ["TOKEN", ...], "max_concurrent": N, '
        '"max_queued": N}, ...}; default: the demo tenant with its published dev token',
    )
    parser.add_argument(
        "--http-listen",
        type=http_listen,
        metavar="HOST:PORT",
        help="also serve the OpenAI-compatible HTTP API (base URL http://HOST:PORT/v1; port 0 "
        "picks a free one); default: gRPC only",
    )
    parser.add_argument(
        "--instance-id",
        default=DEFAULT_INSTANCE_ID,
        metavar="ID",
        help="this gateway's name on MQTT (its reply topic); unique per gateway process",
    )
    parser.add_argument(
        "--default-deadline",
        type=finite_float,
        default=GatewayConfig().default_deadline_s,
        metavar="S",
        help="wall seconds a call may take when the caller sets no deadline",
    )
    parser.set_defaults(handler=run_gateway)


def http_listen(text: str) -> str:
    """argparse type of ``--http-listen``: HOST:PORT with a port 0..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port 0..65535 (0: a free one), got {text!r}"
        )
    return text


def load_tenants(path: str | None) -> TenantRegistry:
    """The tenants of ``--tenants`` (InvalidArgument naming what is wrong), or the demo
    tenant with a warning on stderr when no file is given."""
    if path is None:
        print(
            f"warning: no --tenants file: serving the demo tenant {DEFAULT_TENANT!r} with its "
            "published dev token; do not expose this gateway",
            file=sys.stderr,
            flush=True,
        )
        log.warning("gateway_dev_token", tenant=DEFAULT_TENANT)
        return TenantRegistry.from_mapping(default_tenants())
    text = inputs.read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"--tenants {path}: not JSON ({error})") from None
    if not isinstance(data, Mapping) or not data:
        raise InvalidArgument(
            f'--tenants {path}: expected a non-empty object {{"TENANT": {{"tokens": [...]}}}}, '
            f"got {type(data).__name__}"
        )
    for tenant_id, entry in data.items():
        if not isinstance(entry, Mapping):
            raise InvalidArgument(
                f"--tenants {path}: tenant {tenant_id!r} must be an object with 'tokens', got "
                f"{type(entry).__name__}"
            )
    try:
        return TenantRegistry.from_mapping(data)
    except InvalidArgument as error:
        raise InvalidArgument(f"--tenants {path}: {error.message}") from None


def gateway_settings(args: argparse.Namespace, tenants: TenantRegistry) -> GatewaySettings:
    """The app's settings from the parsed flags; InvalidArgument naming a bad one."""
    deadline_s = args.default_deadline
    if not (math.isfinite(deadline_s) and deadline_s > 0):
        raise InvalidArgument(f"--default-deadline must be positive seconds, got {deadline_s}")
    if not args.instance_id or any(c in args.instance_id for c in "/+#"):
        raise InvalidArgument(
            f"--instance-id must be a non-empty MQTT topic level (no '/', '+', '#'), got "
            f"{args.instance_id!r}"
        )
    defaults = GatewayConfig()
    return GatewaySettings(
        broker=broker_address(args),
        tenants=tenants,
        instance_id=args.instance_id,
        grpc_address=listen_address(args),
        routing_target=args.routing,
        handoff_target=args.handoff,
        metrics_host=args.host,
        metrics_port=args.metrics_port,
        http_address=args.http_listen,
        config=GatewayConfig(
            default_deadline_s=deadline_s,
            max_deadline_s=max(defaults.max_deadline_s, deadline_s),
        ),
        drain_grace_s=args.drain_grace,
        unready_delay_s=args.unready_delay,
    )


def run_gateway(args: argparse.Namespace) -> int:
    clock = process_clock(args)
    settings = gateway_settings(args, load_tenants(args.tenants))
    return run_service("gateway", args, lambda: GatewayApp(settings, clock))
