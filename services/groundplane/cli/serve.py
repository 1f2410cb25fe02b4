"""``groundplane serve SERVICE``: run one service as a long-lived process (a container command)."""

from __future__ import annotations

from typing import Any

from . import (
    serve_dashboard,
    serve_gateway,
    serve_handoff,
    serve_hil,
    serve_links,
    serve_nodes,
    serve_routing,
    serve_tracking,
)
from .main import print_help_of


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run one service",
        description="Run one groundplane service until SIGTERM (a container's command).",
    )
    services = serve.add_subparsers(dest="service", metavar="SERVICE")
    serve.set_defaults(handler=print_help_of(serve))
    serve_tracking.register(services)
    serve_links.register(services)
    serve_routing.register(services)
    serve_gateway.register(services)
    serve_handoff.register(services)
    serve_hil.register(services)
    serve_nodes.register(services)
    serve_dashboard.register(services)
