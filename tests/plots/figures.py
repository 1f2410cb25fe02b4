"""Finding the data-carrying artists of a figure by the ``gid`` the plots give them."""

from __future__ import annotations

from matplotlib.artist import Artist
from matplotlib.figure import Figure


def artists(figure: Figure, prefix: str) -> dict[str, Artist]:
    """Every artist of ``figure`` whose gid starts with ``prefix``, by gid (gids are unique)."""
    found: dict[str, Artist] = {}
    for artist in figure.findobj(lambda a: (a.get_gid() or "").startswith(prefix)):
        gid = artist.get_gid()
        assert gid is not None
        assert gid not in found, f"two artists with gid {gid!r}"
        found[gid] = artist
    return found


def artist(figure: Figure, gid: str) -> Artist:
    """The one artist with this gid."""
    (match,) = [a for key, a in artists(figure, gid).items() if key == gid]
    return match
