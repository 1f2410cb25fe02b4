"""TrackingCore's site lookup: what an unknown site id tells the caller."""

from __future__ import annotations

import pytest

from groundplane.kernel.errors import NotFound
from groundplane.orbit.sites import Site
from groundplane.tracking.catalog import Catalog
from groundplane.tracking.core import TrackingCore


def _core_with_sites(count: int) -> TrackingCore:
    core = TrackingCore(Catalog())
    for index in range(count):
        core.upsert_site(Site(f"s{index:02d}", 0.0, float(index)))
    return core


def test_unknown_site_lists_the_first_ten_and_counts_the_rest() -> None:
    """With 12 stored sites, NOT_FOUND names the first ten and says "… and 2 more"."""
    with pytest.raises(NotFound) as caught:
        _core_with_sites(12).resolve_sites(["nope"], [])
    expected = ", ".join(f"s{i:02d}" for i in range(10))
    assert caught.value.message == f"no site 'nope'; stored sites: {expected}, … and 2 more"


@pytest.mark.parametrize(("count", "listed"), [(0, "none"), (3, "s00, s01, s02")])
def test_unknown_site_lists_all_sites_when_few(count: int, listed: str) -> None:
    """Up to ten stored sites are all named, without an ellipsis; none says "none"."""
    with pytest.raises(NotFound) as caught:
        _core_with_sites(count).resolve_sites(["nope"], [])
    assert caught.value.message == f"no site 'nope'; stored sites: {listed}"
