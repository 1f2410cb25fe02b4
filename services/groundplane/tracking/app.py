"""Assembling a running tracking service: store, catalog, core, servicer, server, metrics.

Tracking is ready as soon as it serves: its inputs are its own store and preload, so its gRPC
server starts SERVING (``ready_at_start``), unless its store cannot be written (a read-only file
or mount): then readiness stays NOT_SERVING (liveness SERVING) and a warning is logged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Gauge

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import FailedPrecondition
from groundplane.kernel.serving import GrpcServer
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.sites import Site
from groundplane.tracking.catalog import Catalog
from groundplane.tracking.core import TrackingCore, TrackingSettings
from groundplane.tracking.servicer import TrackingServicer
from groundplane.tracking.store import TrackingStore

log = structlog.get_logger("groundplane.tracking")


@dataclass
class TrackingApp:
    """A tracking service ready to start: its server, servicer and store."""

    server: GrpcServer
    servicer: TrackingServicer
    store: TrackingStore
    registry: CollectorRegistry
    """``groundplane_tracking_*`` gauges: satellites, sites, open catalog streams."""

    def close(self) -> None:
        self.store.close()


def build_tracking(  # noqa: PLR0913 - every tracking setting by keyword, each with a default
    clock: Clock,
    *,
    db_path: str | Path = ":memory:",
    address: str = "127.0.0.1:0",
    settings: TrackingSettings | None = None,
    elements: Sequence[ElementSet] = (),
    elements_source: str = "preload",
    sites: Sequence[Site] = (),
    unready_delay_s: float = 1.0,
    drain_grace_s: float = 5.0,
) -> TrackingApp:
    """A tracking service on ``address`` persisting to ``db_path``, optionally preloaded."""
    store = TrackingStore(db_path)
    try:
        catalog = Catalog.load(store)
        core = TrackingCore(catalog, store, settings)
    except sqlite3.DatabaseError as bad:  # corrupt pages past the schema
        store.close()
        raise FailedPrecondition(
            f"{str(db_path)!r} is not a usable groundplane tracking database ({bad}); point "
            "the service at a new file or restore it from a backup"
        ) from None
    writable = store.writable()
    if not writable:
        log.warning("tracking_store_read_only", path=str(db_path), ready=False)
    if elements:
        catalog.upsert(elements, source=elements_source)
    for site in sites:
        core.upsert_site(site)
    servicer = TrackingServicer(core, clock)
    server = GrpcServer(
        [servicer.binding()],
        address=address,
        unready_delay_s=unready_delay_s,
        drain_grace_s=drain_grace_s,
        ready_at_start=writable,  # a read-only store cannot take the writes callers make
    )
    return TrackingApp(
        server=server, servicer=servicer, store=store, registry=tracking_registry(servicer)
    )


def tracking_registry(servicer: TrackingServicer) -> CollectorRegistry:
    """The tracking service's metrics, read when scraped."""
    registry = CollectorRegistry()
    core = servicer.core
    Gauge(
        "groundplane_tracking_catalog_satellites",
        "Satellites with at least one element record in the catalog",
        registry=registry,
    ).set_function(lambda: len(core.catalog))
    Gauge(
        "groundplane_tracking_sites", "Ground sites in the catalog", registry=registry
    ).set_function(lambda: len(core.list_sites()))
    Gauge(
        "groundplane_tracking_catalog_watchers",
        "Open WatchCatalog streams (links, routing, handoff, … following the catalog)",
        registry=registry,
    ).set_function(lambda: servicer.catalog_watchers)
    return registry
