"""Ground sites and their horizon: where an observer stands and what it can see above.

A site's threshold at an azimuth is ``max(min_elevation_deg, mask(azimuth))``. The mask is a list
of ``(azimuth_deg, elevation_deg)`` points, interpolated linearly in azimuth and wrapping at 360°.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number

FloatArray = NDArray[np.float64]

MAX_MASK_POINTS = 3_600
"""The most points a horizon mask may have (one every 0.1° of azimuth)."""
MAX_SITE_ID_CHARS = 64
"""The longest site id; ids are printable text (no control characters, NUL included)."""


@dataclass(frozen=True)
class HorizonMask:
    """Minimum elevation as a function of azimuth (terrain, buildings, keyhole limits).

    ``points`` are ``(azimuth_deg, elevation_deg)``; azimuths in [0, 360), elevations in
    [-90, 90]. Between points the elevation is linear in azimuth; past the last point it wraps to
    the first. An empty mask is 0° everywhere (below any useful minimum elevation).
    """

    points: tuple[tuple[float, float], ...] = ()
    _az: FloatArray = field(init=False, repr=False, compare=False)
    _el: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.points) > MAX_MASK_POINTS:
            raise InvalidArgument(
                f"a horizon mask has at most {MAX_MASK_POINTS} points, got {len(self.points)}"
            )
        cleaned: list[tuple[float, float]] = []
        for index, (raw_az, raw_el) in enumerate(self.points):
            az_deg = finite_number(f"mask point {index} azimuth_deg", raw_az)
            el_deg = finite_number(f"mask point {index} elevation_deg", raw_el)
            if not 0.0 <= az_deg < 360.0:
                raise InvalidArgument(
                    f"mask point {index}: azimuth_deg must be in [0, 360), got {az_deg}"
                )
            if not -90.0 <= el_deg <= 90.0:
                raise InvalidArgument(
                    f"mask point {index}: elevation_deg must be in [-90, 90], got {el_deg}"
                )
            cleaned.append((az_deg, el_deg))
        cleaned.sort()
        for (a0, _), (a1, _) in itertools.pairwise(cleaned):
            if a0 == a1:
                raise InvalidArgument(f"mask has two points at azimuth {a0}°; keep one")
        object.__setattr__(self, "points", tuple(cleaned))
        az: FloatArray
        el: FloatArray
        if cleaned:
            points_az = np.array([p[0] for p in cleaned], dtype=np.float64)
            points_el = np.array([p[1] for p in cleaned], dtype=np.float64)
            # Close the circle: repeat the first point at +360 and the last at -360.
            az = np.concatenate(([points_az[-1] - 360.0], points_az, [points_az[0] + 360.0]))
            el = np.concatenate(([points_el[-1]], points_el, [points_el[0]]))
        else:
            az = np.array([0.0, 360.0])
            el = np.array([0.0, 0.0])
        object.__setattr__(self, "_az", az)
        object.__setattr__(self, "_el", el)

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> HorizonMask:
        return cls(tuple((float(a), float(e)) for a, e in points))

    @property
    def is_empty(self) -> bool:
        return not self.points

    def elevation_deg(self, azimuth_deg: FloatArray | float) -> FloatArray:
        """Mask elevation at the given azimuths (any shape; degrees, any real value)."""
        az = np.mod(np.asarray(azimuth_deg, dtype=np.float64), 360.0)
        return np.interp(az, self._az, self._el)


@dataclass(frozen=True)
class Site:
    """A ground observer on the WGS84 ellipsoid.

    ``lat_deg`` is geodetic latitude, ``lon_deg`` east longitude, ``alt_m`` metres above the
    ellipsoid, ``min_elevation_deg`` the site's minimum elevation (geometric, no refraction).
    """

    id: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    name: str = ""
    min_elevation_deg: float = 0.0
    mask: HorizonMask = field(default_factory=HorizonMask)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidArgument("site id must be a non-empty string")
        if len(self.id) > MAX_SITE_ID_CHARS or not self.id.isprintable():
            raise InvalidArgument(
                f"site id must be 1-{MAX_SITE_ID_CHARS} printable characters (no control "
                f"characters), got {len(self.id)} characters starting {self.id[:32]!r}"
            )
        lat = finite_number(f"site {self.id!r} lat_deg", self.lat_deg)
        lon = finite_number(f"site {self.id!r} lon_deg", self.lon_deg)
        alt = finite_number(f"site {self.id!r} alt_m", self.alt_m)
        min_el = finite_number(f"site {self.id!r} min_elevation_deg", self.min_elevation_deg)
        if not -90.0 <= lat <= 90.0:
            raise InvalidArgument(f"site {self.id!r}: lat_deg must be in [-90, 90], got {lat}")
        if not -180.0 <= lon <= 360.0:
            raise InvalidArgument(f"site {self.id!r}: lon_deg must be in [-180, 360], got {lon}")
        if not -12_000.0 <= alt <= 100_000.0:
            raise InvalidArgument(
                f"site {self.id!r}: alt_m must be metres above the WGS84 ellipsoid in "
                f"[-12000, 100000], got {alt}"
            )
        if not -90.0 <= min_el <= 90.0:
            raise InvalidArgument(
                f"site {self.id!r}: min_elevation_deg must be in [-90, 90], got {min_el}"
            )
        if lon > 180.0:
            lon -= 360.0
        object.__setattr__(self, "lat_deg", lat)
        object.__setattr__(self, "lon_deg", lon)
        object.__setattr__(self, "alt_m", alt)
        object.__setattr__(self, "min_elevation_deg", min_el)

    def threshold_deg(self, azimuth_deg: FloatArray | float) -> FloatArray:
        """Elevation a satellite must exceed at these azimuths to count as visible."""
        return np.maximum(self.min_elevation_deg, self.mask.elevation_deg(azimuth_deg))


def parse_sites_csv(
    text: str,
    min_elevation_deg: float = 0.0,
    mask: HorizonMask | None = None,
    source: str = "sites CSV",
) -> list[Site]:
    """Sites from CSV ``id,name,lat,lon,alt_m`` (altitude in metres; the column may be ``alt``).

    A header row is optional: it is recognised by a non-numeric latitude column. Every site gets
    ``min_elevation_deg`` and ``mask``.
    """
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]
    if rows and not _is_number(rows[0][2] if len(rows[0]) > 2 else ""):
        header = [c.strip().lower() for c in rows[0]]
        expected = ["id", "name", "lat", "lon"]
        if header[:4] != expected:
            raise InvalidArgument(
                f"{source} line 1: expected the header id,name,lat,lon,alt_m (or no header), "
                f"got {','.join(rows[0])}"
            )
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    if not rows:
        raise InvalidArgument(f"{source}: expected rows id,name,lat,lon,alt_m, got none")
    sites: list[Site] = []
    for line_no, row in enumerate(rows, start=first_line):
        if len(row) not in (4, 5):
            raise InvalidArgument(
                f"{source} line {line_no}: expected 4 or 5 columns id,name,lat,lon[,alt_m], "
                f"got {len(row)}: {','.join(row)}"
            )
        site_id, name, lat, lon = (c.strip() for c in row[:4])
        alt = row[4].strip() if len(row) == 5 and row[4].strip() else "0"
        for label, value in (("lat", lat), ("lon", lon), ("alt_m", alt)):
            if not _is_number(value):
                raise InvalidArgument(
                    f"{source} line {line_no}: {label} must be a number, got {value!r}"
                )
        try:
            sites.append(
                Site(
                    id=site_id,
                    name=name,
                    lat_deg=float(lat),
                    lon_deg=float(lon),
                    alt_m=float(alt),
                    min_elevation_deg=min_elevation_deg,
                    mask=mask or HorizonMask(),
                )
            )
        except InvalidArgument as bad:
            raise InvalidArgument(f"{source} line {line_no}: {bad.message}") from None
    counts = Counter(site.id for site in sites)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise InvalidArgument(f"{source}: site ids must be unique, repeated: {repeated}")
    return sites


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
