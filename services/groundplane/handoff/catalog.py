"""Where the handoff process reads the satellite catalog from: a :class:`CatalogSource`.

In its own process (``groundplane serve handoff``) the source is tracking's catalog follower
(``groundplane.tracking.client.CatalogFollower``: the ``WatchCatalog`` stream, one
:class:`CatalogView` per catalog revision); in the in-process ``groundplane up`` and in tests it
is a :class:`StaticCatalog` over fixed elements and sites. Handoff reads of a view only what these
protocols name: its revision, the SGP4 batch of its satellites and the ground sites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site


class CatalogView(Protocol):
    """One revision of the catalog (``groundplane.tracking.client.CatalogView`` is one)."""

    @property
    def version(self) -> int:
        """The catalog's revision; grows with every change."""
        ...

    @property
    def batch(self) -> SatelliteBatch:
        """SGP4 batch of every active satellite."""
        ...

    @property
    def sites(self) -> Sequence[Site]:
        """Every ground site (minimum elevation, horizon mask)."""
        ...


class CatalogSource(Protocol):
    """The newest catalog view, and a call on the event loop after each new one."""

    def current(self) -> CatalogView | None:
        """The newest view; None before the first arrived."""
        ...

    def add_listener(self, callback: Callable[[CatalogView], None]) -> None:
        """Call ``callback`` on the event loop after each new view."""
        ...


@dataclass(frozen=True, slots=True)
class FixedView:
    """A catalog view that never changes."""

    version: int
    batch: SatelliteBatch
    sites: tuple[Site, ...]


class StaticCatalog:
    """A :class:`CatalogSource` over fixed satellites and sites: one view, revision 1."""

    def __init__(self, batch: SatelliteBatch, sites: Sequence[Site]) -> None:
        self._view = FixedView(1, batch, tuple(sites))

    def current(self) -> FixedView:
        return self._view

    def add_listener(self, callback: Callable[[CatalogView], None]) -> None:
        """Nothing to tell: the one view is there from the start."""
