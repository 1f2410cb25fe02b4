"""Which satellites each site sees now, their look angles, and how long each will stay visible.

``visibility(batch, sites, jd, fr)`` answers for one instant (call it once per tick of a time
grid). A satellite is visible from a site when its elevation exceeds the site's threshold
``max(min elevation, mask(azimuth))``.

Cost model (10,000 satellites × 1,000 sites: see ``bench/visibility.py``):

1. One SGP4 call for every satellite at the instant.
2. **Footprint pruning** before any per-pair work. A satellite at geocentric radius ``r`` can be
   above elevation ``ε`` from a site at radius ``R`` only when the angle between their geocentric
   directions is below ``γ(r) = arccos(R cos ε / r) − ε`` (the triangle Earth centre – site –
   satellite). With ``R`` the lowest site radius and ``ε`` the lowest threshold of all sites minus
   each site's tilt between the ellipsoid normal and the geocentric direction (≤ 0.19°), the bound
   holds for every site. Site directions are bucketed once per :class:`SiteFrames` into a voxel
   grid of the unit sphere (a few grids, one per footprint size class, built on first use and
   cached); a satellite looks up the precomputed list of sites near its voxel, so the candidate
   pairs cost ~ (visible pairs) instead of (satellites × sites).
3. Candidates get the exact test ``u > ρ sin(lowest threshold)`` (no trigonometry), then the
   survivors full look angles; those above the azimuth-dependent threshold are the visible pairs.
4. LOS: the visible pairs are stepped forward on the same coarse grid as pass search (step from
   the orbit; horizon half an orbit by default). Each grid column is propagated only for the
   satellites that still have a visible pair (so a LEO tick propagates a few columns, not half an
   orbit); for sites without a mask the sign test is ``u − ρ sin(threshold)`` (no trigonometry).
   Each setting is refined by safeguarded Newton on the cubic-Hermite interpolated state until
   converged (< 0.1 ms; most pairs need one step after a cubic guess). ``los=False`` skips this
   stage, which is most of a tick's cost (~6 future SGP4 columns for LEO, one root per pair);
   ``previous=`` (the last tick of a stream) lends the LOS of pairs that stayed visible, so
   only new passes are swept.

Stages 3–4 run over chunks of satellites holding about ``_CHUNK_PAIRS`` candidate pairs, so that a
chunk's arrays stay in cache (several times faster than one pass over all pairs).
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sgp4.api import SatrecArray

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import (
    SECONDS_PER_DAY,
    CodeArray,
    EarthRotation,
    FloatArray,
    IntArray,
    Propagation,
    SatelliteBatch,
    SiteFrames,
    as_site_frames,
    earth_rotation,
    error_reason,
    offset_jd_fr,
    propagate,
    teme_to_itrf,
)
from groundplane.orbit.passes import coarse_step_s
from groundplane.orbit.sites import Site

BoolArray = NDArray[np.bool_]
_DEG = 180.0 / math.pi
#: Candidate pairs per chunk of satellites (keeps a chunk's arrays in cache).
_CHUNK_PAIRS = 32_768
#: LOS refinement stops when the error (Newton step, its predicted error, or the bracket) is
#: below this, seconds (measured: within 3e-5 s of iterating to full convergence).
_TIME_TOL_S = 1e-5
#: Upper bound on refinement rounds (bisection alone would reach 1e-4 s of a 600 s step in 23).
_MAX_ITERATIONS = 40
#: Safety factor on the predicted Newton error |g''/2g'| d² (g'' estimated from the end slopes).
_NEWTON_SAFETY = 5.0


@dataclass(frozen=True)
class Visibility:
    """Visible (satellite, site) pairs at one instant (``P`` rows, sorted by site then satellite).

    ``los_in_s`` is the time until the pass ends (seconds; ``inf`` when the satellite is still
    visible at the end of the lookahead, which is half an orbit capped by ``max_lookahead_s``).
    ``error_code`` is ``(S,)``: the SGP4 error of each satellite at the instant (0 = ok); such
    satellites are never reported visible.
    """

    satellite_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    sat_index: IntArray
    site_index: IntArray
    azimuth_deg: FloatArray
    elevation_deg: FloatArray
    range_km: FloatArray
    range_rate_km_s: FloatArray
    los_in_s: FloatArray
    error_code: CodeArray
    #: The instant (two-part UTC Julian date) and what the result was computed from, so that a
    #: later tick can take its LOS times (``visibility(..., previous=this)``).
    jd: float = math.nan
    fr: float = math.nan
    _source: tuple[object, ...] = field(default=(), repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.sat_index.size)

    def errors(self) -> dict[str, tuple[int, str]]:
        """``{satellite id: (code, reason)}`` for satellites SGP4 could not place at the instant."""
        return {
            self.satellite_ids[int(i)]: (
                int(self.error_code[i]),
                error_reason(int(self.error_code[i])),
            )
            for i in np.flatnonzero(self.error_code)
        }


# --------------------------------------------------------------------------------------------
# Footprint pruning: which sites can see a satellite at all


#: Footprint chord classes: chord = _CHORD_0 · 2^(q / 4) (q = 0, 1, …); at 2 every site qualifies.
_CHORD_0 = 1.0 / 256.0
#: Voxel edge = chord / _VOXELS_PER_CHORD (finer = fewer spurious candidates, more voxels).
_VOXELS_PER_CHORD = 3.0
_MAX_VOXELS_PER_AXIS = 64
_SQRT3_2 = math.sqrt(3.0) / 2.0


@dataclass(frozen=True)
class _VoxelGrid:
    """Sites near each voxel of ``[-1, 1]³`` (CSR: ``sites[ptr[v]:ptr[v+1]]``, ascending)."""

    n: int  # voxels per axis; edge 2 / n
    ptr: IntArray  # (n³ + 1,)
    sites: IntArray

    def voxel_of(self, unit: FloatArray) -> IntArray:
        """Voxel of each unit vector (rows of ``(N, 3)``)."""
        cell = np.floor((unit + 1.0) * (0.5 * self.n)).astype(np.intp)
        np.clip(cell, 0, self.n - 1, out=cell)
        return np.asarray((cell[:, 0] * self.n + cell[:, 1]) * self.n + cell[:, 2])


class _SiteIndex:
    """What the pruning needs of one :class:`SiteFrames`, computed once and cached with it."""

    def __init__(self, frames: SiteFrames) -> None:
        self.frames = frames
        radius = np.sqrt(np.einsum("kj,kj->k", frames.ecef_km, frames.ecef_km))
        self.unit: FloatArray = frames.ecef_km / radius[:, None]
        self.r_min_km = float(radius.min(initial=np.inf))
        self.r_max_km = float(radius.max(initial=0.0))
        # Angle between each site's ellipsoid normal and its geocentric direction: elevation
        # measured from the geocentric horizontal differs from the geodetic one by at most this.
        cos_tilt = np.clip(np.einsum("kj,kj->k", self.unit, frames.enu[:, 2, :]), -1.0, 1.0)
        floor_deg = frames.min_threshold_deg - np.degrees(np.arccos(cos_tilt))
        self.floor_rad = math.radians(float(floor_deg.min(initial=90.0)) - 1e-6)
        self.up_off: FloatArray = np.einsum("kj,kj->k", frames.enu[:, 2, :], frames.ecef_km)
        self.sin_min: FloatArray = np.sin(np.radians(frames.min_threshold_deg))
        self.sin_flat: FloatArray = np.sin(np.radians(frames.flat_threshold_deg))
        # Component arrays (contiguous) for gathers by site index.
        self.sx, self.sy, self.sz = (np.ascontiguousarray(frames.ecef_km[:, i]) for i in range(3))
        self.ex, self.ey = (np.ascontiguousarray(frames.enu[:, 0, i]) for i in range(2))
        self.nx, self.ny, self.nz = (np.ascontiguousarray(frames.enu[:, 1, i]) for i in range(3))
        self.ux, self.uy, self.uz = (np.ascontiguousarray(frames.enu[:, 2, i]) for i in range(3))
        self.mask = _MaskTable(frames)
        self._grids: dict[int, _VoxelGrid] = {}

    def chord_class(self, r_km: FloatArray) -> IntArray:
        """Footprint class of satellites at geocentric radius ``r_km`` (-1: every site)."""
        eps = self.floor_rad
        with np.errstate(invalid="ignore", divide="ignore"):
            arg = np.clip(self.r_min_km * math.cos(eps) / r_km, -1.0, 1.0)
            gamma = np.minimum(np.arccos(arg) - eps, math.pi)
            chord = 2.0 * np.sin(0.5 * gamma) * (1.0 + 1e-9) + 1e-9
            q = np.ceil(4.0 * np.log2(np.maximum(chord, _CHORD_0) / _CHORD_0))
        # The cap argument needs the satellite above every site (r > R for all of them).
        usable = (r_km > self.r_max_km) & np.isfinite(q) & (chord < 2.0)
        return np.where(usable, q, -1.0).astype(np.intp)

    def grid(self, q: int) -> _VoxelGrid:
        found = self._grids.get(q)
        if found is None:  # two threads may both build it: same result, last one kept
            found = self._grids[q] = self._build(q)
        return found

    def _build(self, q: int) -> _VoxelGrid:
        chord = _CHORD_0 * 2.0 ** (q / 4.0)
        n = max(1, min(_MAX_VOXELS_PER_AXIS, math.ceil(2.0 * _VOXELS_PER_CHORD / chord)))
        edge = 2.0 / n
        axis = -1.0 + (np.arange(n) + 0.5) * edge
        cx, cy, cz = np.meshgrid(axis, axis, axis, indexing="ij")
        centres = np.stack((cx.ravel(), cy.ravel(), cz.ravel()), axis=1)
        half_diag = _SQRT3_2 * edge
        # Only voxels that can hold a unit vector get a list.
        shell = np.flatnonzero(
            np.abs(np.sqrt(np.einsum("vj,vj->v", centres, centres)) - 1.0) <= half_diag + 1e-12
        )
        reach_sq = (chord + half_diag + 1e-9) ** 2
        counts = np.zeros(n**3, dtype=np.intp)
        lists: list[IntArray] = []
        per_chunk = max(1, (1 << 20) // max(1, self.unit.shape[0]))
        for c0 in range(0, shell.size, per_chunk):
            rows = shell[c0 : c0 + per_chunk]
            d2 = np.zeros((rows.size, self.unit.shape[0]))
            for axis_i in range(3):
                diff = centres[rows, axis_i][:, None] - self.unit[None, :, axis_i]
                d2 += diff * diff
            v_idx, k_idx = np.nonzero(d2 <= reach_sq)
            counts[rows] = np.bincount(v_idx, minlength=rows.size)
            lists.append(k_idx)
        ptr = np.zeros(n**3 + 1, dtype=np.intp)
        np.cumsum(counts, out=ptr[1:])
        sites = np.concatenate(lists) if lists else np.zeros(0, dtype=np.intp)
        return _VoxelGrid(n, ptr, sites.astype(np.intp))


#: Masks with more points than this use ``SiteFrames.threshold_and_slope`` (a binary search).
_MAX_TABLE_POINTS = 30


class _MaskTable:
    """Horizon masks of all sites as a padded table: the segment holding an azimuth is found by
    counting breakpoints (a few comparisons) instead of a binary search over every site's keys.

    Row ``k`` holds site ``k``'s mask closed over the circle (the last point at −360° before the
    first, the first at +360° after the last), padded with +inf; the threshold is
    ``max(min elevation, linear interpolation)`` with its slope, as ``SiteFrames`` computes it.
    """

    def __init__(self, frames: SiteFrames) -> None:
        self.frames = frames
        sites = frames.sites
        widths = [len(s.mask.points) + 2 for s in sites if not s.mask.is_empty]
        width = max([2, *widths])
        self.usable = width <= _MAX_TABLE_POINTS + 2
        az = np.full((len(sites), width), np.inf)
        el = np.zeros((len(sites), width))
        count = np.full(len(sites), 2, dtype=np.intp)
        az[:, 0], az[:, 1] = 0.0, 360.0
        for k, site in enumerate(sites):
            if site.mask.is_empty:
                continue
            a0 = np.array([p[0] for p in site.mask.points])
            e0 = np.array([p[1] for p in site.mask.points])
            m = a0.size + 2
            az[k, :m] = np.concatenate(([a0[-1] - 360.0], a0, [a0[0] + 360.0]))
            el[k, :m] = np.concatenate(([e0[-1]], e0, [e0[0]]))
            az[k, m:] = np.inf
            count[k] = m
        self.width = width
        self.az_cols = [np.ascontiguousarray(az[:, c]) for c in range(width)]
        self.az_flat = az.ravel()
        self.el_flat = el.ravel()
        self.count = count

    def threshold_and_slope(
        self, site: IntArray, az_deg: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Threshold (deg) and d threshold / d azimuth at (site, azimuth in [0, 360)) pairs."""
        if not self.usable:
            return self.frames.threshold_and_slope(site, az_deg)
        hi = np.zeros(site.size, dtype=np.intp)
        for column in self.az_cols:
            hi += column[site] <= az_deg
        hi = np.clip(hi, 1, self.count[site] - 1)
        flat_hi = site * self.width + hi
        k0, k1 = self.az_flat[flat_hi - 1], self.az_flat[flat_hi]
        v0, v1 = self.el_flat[flat_hi - 1], self.el_flat[flat_hi]
        slope = (v1 - v0) / np.where(k1 > k0, k1 - k0, 1.0)
        thr = v0 + slope * (az_deg - k0)
        floor = self.frames.min_elevation_deg[site]
        below = thr <= floor
        return np.where(below, floor, thr), np.where(below, 0.0, slope)


#: Indexes of the SiteFrames objects in use, and of the site lists callers pass as sequences
#: (a new SiteFrames each call otherwise: the voxel grids of 1,000 sites take ~0.1 s to build).
_INDEX: weakref.WeakKeyDictionary[SiteFrames, _SiteIndex] = weakref.WeakKeyDictionary()
_BY_SITES: OrderedDict[tuple[Site, ...], _SiteIndex] = OrderedDict()
_BY_SITES_SIZE = 8
_LOCK = threading.Lock()  # ticks run in worker threads (asyncio.to_thread)


def _site_index(sites: Sequence[Site] | SiteFrames) -> _SiteIndex:
    """The cached index of these sites (by identity for SiteFrames, by value for sequences)."""
    if isinstance(sites, SiteFrames):
        with _LOCK:
            found = _INDEX.get(sites)
            if found is None:
                found = _INDEX[sites] = _SiteIndex(sites)
        return found
    key = tuple(sites)
    try:
        hash(key)
    except TypeError:  # not Sites: let SiteFrames say what is wrong
        return _SiteIndex(as_site_frames(key))
    with _LOCK:
        found = _BY_SITES.get(key)
        if found is not None:
            _BY_SITES.move_to_end(key)
            return found
    found = _SiteIndex(as_site_frames(key))
    with _LOCK:
        _BY_SITES[key] = found
        while len(_BY_SITES) > _BY_SITES_SIZE:
            _BY_SITES.popitem(last=False)
    return found


@dataclass(frozen=True)
class _Footprints:
    """Where each satellite's candidate sites are: ``sites[start[i] : start[i] + count[i]]``
    (ascending) of ``lists[list_of[i]]``; satellites not placed by SGP4 have no candidates."""

    lists: tuple[IntArray, ...]
    list_of: IntArray
    start: IntArray
    count: IntArray


def _footprints(
    index: _SiteIndex, n_site: int, unit: FloatArray, r_km: FloatArray, ok: BoolArray
) -> _Footprints:
    n_sat = ok.size
    cls = np.where(ok, index.chord_class(np.where(ok, r_km, 0.0)), -2)
    lists: list[IntArray] = []
    list_of = np.zeros(n_sat, dtype=np.intp)
    start = np.zeros(n_sat, dtype=np.intp)
    count = np.zeros(n_sat, dtype=np.intp)
    for q in np.unique(cls[ok]).tolist():
        members = np.flatnonzero(cls == q)
        list_of[members] = len(lists)
        if q < 0:  # no usable bound: every site is a candidate
            lists.append(np.arange(n_site))
            count[members] = n_site
            continue
        grid = index.grid(int(q))
        vox = grid.voxel_of(unit[members])
        start[members] = grid.ptr[vox]
        count[members] = grid.ptr[vox + 1] - grid.ptr[vox]
        lists.append(grid.sites)
    return _Footprints(tuple(lists), list_of, start, count)


def _candidates(fp: _Footprints, sats: IntArray) -> tuple[IntArray, IntArray]:
    """(satellite, site) pairs of ``sats`` (ascending) that the footprint bound does not
    exclude, satellite-major with ascending sites."""
    count = fp.count[sats]
    total = int(count.sum())
    sat = np.repeat(sats, count)
    first = np.cumsum(count) - count
    pos = np.arange(total) + np.repeat(fp.start[sats] - first, count)
    if len(fp.lists) == 1:
        return sat, fp.lists[0][pos]
    site = np.empty(total, dtype=np.intp)
    which = np.repeat(fp.list_of[sats], count)
    for i, sites in enumerate(fp.lists):
        rows = np.flatnonzero(which == i)
        site[rows] = sites[pos[rows]]
    return sat, site


# --------------------------------------------------------------------------------------------
# Topocentric geometry of (satellite state, site) pairs


Vec3 = tuple[FloatArray, FloatArray, FloatArray]


@dataclass
class _Look:
    el: FloatArray  # deg
    az: FloatArray  # deg in [0, 360)
    f: FloatArray  # elevation − threshold, deg
    rng: FloatArray  # km
    rr: FloatArray  # km/s
    g: FloatArray  # sign function: u − ρ sin(thr) (no mask) or f (mask)
    dg: FloatArray  # its time derivative


def _look(frames: SiteFrames, index: _SiteIndex, site: IntArray, p: Vec3, v: Vec3) -> _Look:
    """Full look angles at the instant (the same arithmetic as pass search's ``_topo``)."""
    dx, dy, dz = p[0] - index.sx[site], p[1] - index.sy[site], p[2] - index.sz[site]
    ex, ey = index.ex[site], index.ey[site]
    nx, ny, nz = index.nx[site], index.ny[site], index.nz[site]
    ux, uy, uz = index.ux[site], index.uy[site], index.uz[site]
    e = ex * dx + ey * dy
    n = nx * dx + ny * dy + nz * dz
    u = ux * dx + uy * dy + uz * dz
    ed = ex * v[0] + ey * v[1]
    nd = nx * v[0] + ny * v[1] + nz * v[2]
    ud = ux * v[0] + uy * v[1] + uz * v[2]
    h2 = e * e + n * n
    hor = np.sqrt(h2)
    el = np.arctan2(u, hor) * _DEG
    az = np.arctan2(e, n) * _DEG
    az += 360.0 * (az < 0.0)
    rng = np.sqrt(dx * dx + dy * dy + dz * dz)
    rr = (dx * v[0] + dy * v[1] + dz * v[2]) / rng
    f = el - frames.flat_threshold_deg[site]
    sin_thr = index.sin_flat[site]
    g = u - rng * sin_thr
    dg = ud - rr * sin_thr
    m = np.flatnonzero(frames.has_mask[site])
    if m.size:
        rho2 = h2[m] + u[m] * u[m]
        with np.errstate(divide="ignore", invalid="ignore"):
            del_ = (ud[m] * h2[m] - u[m] * (e[m] * ed[m] + n[m] * nd[m])) / (rho2 * hor[m]) * _DEG
            azd = (ed[m] * n[m] - e[m] * nd[m]) / h2[m] * _DEG
        # The visible set uses SiteFrames' own threshold (bit for bit what pass search uses).
        thr, slope = frames.threshold_and_slope(site[m], az[m])
        f[m] = el[m] - thr
        g[m] = f[m]
        dg[m] = del_ - slope * azd
    return _Look(el, az, f, rng, rr, g, dg)


def _sign_function(
    index: _SiteIndex, site: IntArray, masked: BoolArray, p: Vec3, v: Vec3
) -> tuple[FloatArray, FloatArray]:
    """``g`` (> 0 exactly when visible) and ``dg/dt`` of ITRF states seen from sites.

    Sites without a mask: ``g = u − ρ sin(thr)`` (same zero set as ``elevation − thr``; no
    trigonometry). Masked sites: ``g = elevation − mask(azimuth)``.
    """
    dx = p[0] - index.sx[site]
    dy = p[1] - index.sy[site]
    dz = p[2] - index.sz[site]
    ux, uy, uz = index.ux[site], index.uy[site], index.uz[site]
    u = ux * dx + uy * dy + uz * dz
    ud = ux * v[0] + uy * v[1] + uz * v[2]
    rng = np.sqrt(dx * dx + dy * dy + dz * dz)
    rr = (dx * v[0] + dy * v[1] + dz * v[2]) / rng
    sin_thr = index.sin_flat[site]
    g = u - rng * sin_thr
    dg = ud - rr * sin_thr
    m = np.flatnonzero(masked)
    if m.size:
        sm = site[m]
        mx, my, mz = dx[m], dy[m], dz[m]
        vx, vy, vz = v[0][m], v[1][m], v[2][m]
        ex, ey = index.ex[sm], index.ey[sm]
        nx, ny, nz = index.nx[sm], index.ny[sm], index.nz[sm]
        e = ex * mx + ey * my
        n = nx * mx + ny * my + nz * mz
        ed = ex * vx + ey * vy
        nd = nx * vx + ny * vy + nz * vz
        um, udm = u[m], ud[m]
        h2 = e * e + n * n
        hor = np.sqrt(h2)
        rho2 = h2 + um * um
        el = np.arctan2(um, hor) * _DEG
        az = np.arctan2(e, n) * _DEG
        az += 360.0 * (az < 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            del_ = (udm * h2 - um * (e * ed + n * nd)) / (rho2 * hor) * _DEG
            azd = (ed * n - e * nd) / h2 * _DEG
        thr, slope = index.mask.threshold_and_slope(sm, az)
        g[m] = el - thr
        dg[m] = del_ - slope * azd
    return g, dg


# --------------------------------------------------------------------------------------------
# The tick


def visibility(  # noqa: PLR0913 - the instant as a two-part Julian date, plus options
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    jd: float,
    fr: float,
    *,
    max_lookahead_s: float = SECONDS_PER_DAY,
    los: bool = True,
    previous: Visibility | None = None,
) -> Visibility:
    """Satellites above each site's threshold at the instant ``jd + fr`` (UTC), with LOS times.

    ``los=False`` skips the times to LOS (``los_in_s`` is then NaN on every row): the visible set
    and its look angles cost a fraction of the LOS sweep, which propagates every visible
    satellite a few coarse steps ahead and refines one root per pair.

    ``previous`` (the result of an earlier tick for the same batch object, equal sites and the
    same lookahead) lends its LOS times: a pair visible then and now whose LOS was still ahead
    has not set in between, so its LOS is the previous one minus the elapsed time; only the
    other pairs (new passes, and those that were beyond the lookahead) are swept. The reused
    times are the previous tick's (the same accuracy, on a grid anchored at that tick; where one
    grid steps over a short or grazing dip that the other catches, the two differ). A
    ``previous`` that does not match, or is not earlier, is ignored.
    """
    index = _site_index(sites)
    frames = index.frames
    if not (math.isfinite(jd) and math.isfinite(fr)):
        raise InvalidArgument(f"jd and fr must be finite, got {jd!r}, {fr!r}")
    if not (math.isfinite(max_lookahead_s) and max_lookahead_s > 0):
        raise InvalidArgument(f"max_lookahead_s must be positive, got {max_lookahead_s!r}")
    n_sat, n_site = len(batch), len(frames)
    error_code = np.zeros(n_sat, dtype=np.uint8)
    empty_i = np.zeros(0, dtype=np.intp)
    if not (n_sat and n_site):
        return Visibility(
            batch.ids,
            frames.ids,
            empty_i,
            empty_i.copy(),
            *(np.zeros(0),) * 5,
            error_code=error_code,
        )
    jd0, fr0 = offset_jd_fr(jd, fr, np.zeros(1))
    prop = propagate(batch, jd0, fr0)
    error_code[:] = prop.error_code[:, 0]
    r_itrf, v_itrf = teme_to_itrf(
        np.moveaxis(prop.r_teme_km[:, 0, :], -1, 0),
        np.moveaxis(prop.v_teme_km_s[:, 0, :], -1, 0),
        earth_rotation(jd0, fr0),
    )
    radius = np.sqrt(np.einsum("js,js->s", r_itrf, r_itrf))
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = (r_itrf / radius).T
    fp = _footprints(index, n_site, unit, radius, error_code == 0)
    tick = _Tick(
        batch,
        frames,
        index,
        jd,
        fr,
        prop,
        r_itrf,
        v_itrf,
        los,
        _object_array(batch.satrecs),
        *_step_groups(batch, max_lookahead_s),
    )
    # Satellites go through the per-pair stages in chunks of about _CHUNK_PAIRS candidates: the
    # arrays of a chunk stay in cache (several times faster than one pass over all pairs).
    ends = np.cumsum(fp.count)
    cuts = np.searchsorted(ends, np.arange(_CHUNK_PAIRS, int(ends[-1]), _CHUNK_PAIRS))
    bounds = [0, *np.unique(cuts + 1).tolist(), n_sat]
    lend = _lender(previous, (batch, index, max_lookahead_s), jd, fr) if los else None
    parts = [
        _chunk(tick, fp, np.arange(lo, hi), lend)
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    sat, site, az, el, rng, rr, los_s = (np.concatenate([c[i] for c in parts]) for i in range(7))
    # Sort by site then satellite: pairs are satellite-major with ascending sites, so a stable
    # sort on the site alone does it (radix sort for 16-bit keys).
    key = site.astype(np.uint16) if n_site <= 1 << 16 else site
    order = np.argsort(key, kind="stable")
    return Visibility(
        satellite_ids=batch.ids,
        site_ids=frames.ids,
        sat_index=sat[order],
        site_index=site[order],
        azimuth_deg=az[order],
        elevation_deg=el[order],
        range_km=rng[order],
        range_rate_km_s=rr[order],
        los_in_s=los_s[order],
        error_code=error_code,
        jd=jd,
        fr=fr,
        # Satellite-major keys and LOS (the order before the site sort) for the next tick.
        _source=(batch, index, max_lookahead_s, sat.astype(np.int64) * n_site + site, los_s)
        if los
        else (),
    )


_Lender = Callable[[IntArray, IntArray], FloatArray]


def _lender(
    previous: Visibility | None,
    source: tuple[SatelliteBatch, _SiteIndex, float],
    jd: float,
    fr: float,
) -> _Lender | None:
    """LOS times that ``previous`` lends to (satellite, site) pairs (NaN where it has none)."""
    if previous is None or len(previous._source) != len(source) + 2:
        return None
    batch, index, lookahead, keys, los_sat_major = previous._source
    batch_now, index_now, lookahead_now = source
    if batch is not batch_now or index is not index_now or lookahead != lookahead_now:
        return None
    assert isinstance(keys, np.ndarray)
    assert isinstance(los_sat_major, np.ndarray)
    elapsed_s = ((jd - previous.jd) + (fr - previous.fr)) * SECONDS_PER_DAY
    if not elapsed_s > 0:
        return None
    ahead = los_sat_major - elapsed_s
    n_site = len(index_now.frames)

    def lend(sat: IntArray, site: IntArray) -> FloatArray:
        out = np.full(sat.size, np.nan)
        if not (keys.size and sat.size):
            return out
        # Both key lists are satellite-major and ascending: search the slice of this chunk.
        want = sat.astype(np.int64) * n_site + site
        lo, hi = np.searchsorted(keys, [want[0], want[-1]], side="left")
        hi = min(int(hi) + 1, keys.size)
        sub = keys[lo:hi]
        if not sub.size:
            return out
        at = np.minimum(np.searchsorted(sub, want), sub.size - 1)
        hit = sub[at] == want
        lent = ahead[lo:hi][at]
        hit &= np.isfinite(lent) & (lent > 0)
        out[hit] = lent[hit]
        return out

    return lend


_Columns = tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]


def _chunk(tick: _Tick, fp: _Footprints, sats: IntArray, lend: _Lender | None) -> _Columns:
    """Visible pairs of the satellites ``sats`` with look angles and LOS."""
    frames, index = tick.frames, tick.index
    # 1. Footprint candidates, then the exact trig-free screen u > ρ sin(lowest threshold).
    sat, site = _candidates(fp, sats)
    r_itrf, v_itrf = tick.r_itrf, tick.v_itrf
    px, py, pz = r_itrf[0][sat], r_itrf[1][sat], r_itrf[2][sat]
    u = px * index.ux[site] + py * index.uy[site] + pz * index.uz[site] - index.up_off[site]
    dx, dy, dz = px - index.sx[site], py - index.sy[site], pz - index.sz[site]
    rho = np.sqrt(dx * dx + dy * dy + dz * dz)
    keep = np.flatnonzero(u > rho * (index.sin_min[site] - 1e-9))
    sat, site = sat[keep], site[keep]
    # 2. Full look angles for the survivors; visible where above the azimuth's threshold.
    p0 = (px[keep], py[keep], pz[keep])
    v0 = (v_itrf[0][sat], v_itrf[1][sat], v_itrf[2][sat])
    look = _look(frames, index, site, p0, v0)
    vis = np.flatnonzero(look.f > 0)
    sat, site = sat[vis], site[vis]
    # 3. Time to LOS on the coarse grid of each satellite's step group.
    if not tick.want_los:
        los = np.full(sat.size, np.nan)
    elif lend is None:
        los = _times_to_los(tick, sat, site, look.g[vis], look.dg[vis])
    else:
        los = lend(sat, site)
        # A fresh sweep reports inf past the lookahead (the grid interval holding the LOS must
        # start before it): keep that rule, sweep the pairs a lent time would break it for.
        step = tick.step_s[sat]
        late = np.floor(los / step) * step >= tick.horizon_s[sat]
        los[late] = np.nan
        todo = np.flatnonzero(np.isnan(los))
        g, dg = look.g[vis], look.dg[vis]
        los[todo] = _times_to_los(tick, sat[todo], site[todo], g[todo], dg[todo])
    return sat, site, look.az[vis], look.el[vis], look.rng[vis], look.rr[vis], los


def _object_array(items: Sequence[object]) -> NDArray[np.object_]:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _step_groups(batch: SatelliteBatch, max_lookahead_s: float) -> tuple[FloatArray, FloatArray]:
    """Coarse step of each satellite and its lookahead (half an orbit, capped, and capped by the
    longest finite lookahead of its step group, as pass search's grid spans)."""
    steps = coarse_step_s(batch)
    horizon = np.minimum(0.5 * batch.period_s, max_lookahead_s)
    capped = horizon.copy()
    for step in np.unique(steps).tolist():
        members = steps == step
        h = horizon[members]
        capped[members] = np.minimum(h, float(np.max(np.where(np.isfinite(h), h, 0.0))))
    return steps, capped


@dataclass(frozen=True)
class _Tick:
    """The inputs every stage of one tick shares."""

    batch: SatelliteBatch
    frames: SiteFrames
    index: _SiteIndex
    jd: float
    fr: float
    prop: Propagation  # every satellite at the instant
    r_itrf: FloatArray  # (3, S) at the instant
    v_itrf: FloatArray
    want_los: bool
    satrecs: NDArray[np.object_]  # (S,) the batch's Satrec objects, for subsets
    step_s: FloatArray  # (S,) coarse step
    horizon_s: FloatArray  # (S,) lookahead


def _times_to_los(
    tick: _Tick, sat: IntArray, site: IntArray, g_now: FloatArray, dg_now: FloatArray
) -> FloatArray:
    """Seconds from the instant to LOS of each visible pair (``inf`` past the lookahead)."""
    los = np.full(sat.size, np.inf)
    if not sat.size:
        return los
    masked = tick.frames.has_mask[site]
    pair_step = tick.step_s[sat]
    steps_here = np.unique(pair_step)
    for step in steps_here.tolist():
        rows = np.arange(sat.size) if steps_here.size == 1 else np.flatnonzero(pair_step == step)
        g_sat = sat[rows]
        los[rows] = _group_los(
            tick,
            float(step),
            tick.horizon_s[g_sat],
            g_sat,
            site[rows],
            masked[rows],
            g_now[rows],
            dg_now[rows],
        )
    return los


def _gmst_rate_rad_s(jd: float, fr: float) -> float:
    """d GMST82 / dt at the instant, rad/s (the derivative of ``geometry.gmst82_rad``)."""
    t = ((jd - 2_451_545.0) + fr) / 36_525.0
    d_seconds_dt = (876_600.0 * 3600.0 + 8_640_184.812866) + (2 * 0.093104 - 3 * 6.2e-6 * t) * t
    return d_seconds_dt / (36_525.0 * SECONDS_PER_DAY) * (math.pi / 43_200.0)


def _group_los(  # noqa: PLR0913, PLR0915, PLR0917 - one vectorised sweep on shared arrays
    tick: _Tick,
    step: float,
    horizon_s: FloatArray,
    sat: IntArray,
    site: IntArray,
    masked: BoolArray,
    g_prev: FloatArray,
    dg_prev: FloatArray,
) -> FloatArray:
    """Step pairs of one step group forward column by column until they set; refine each LOS."""
    span = float(horizon_s.max())
    n_steps = max(1, math.ceil(span / step))
    offsets = np.arange(n_steps + 1) * step
    jd_g, fr_g = offset_jd_fr(tick.jd, tick.fr, offsets)
    rotations = earth_rotation(jd_g, fr_g)
    los = np.full(sat.size, np.inf)
    # TEME states (3, U) of the satellites concerned, one entry per column propagated so far.
    used, local = np.unique(sat, return_inverse=True)
    local = local.reshape(-1)
    r_cols = [np.ascontiguousarray(tick.prop.r_teme_km[used, 0, :].T)]
    v_cols = [np.ascontiguousarray(tick.prop.v_teme_km_s[used, 0, :].T)]
    active = np.arange(sat.size)
    array: SatrecArray | None = None
    array_rows = np.zeros(0, dtype=np.intp)  # the rows of `used` that `array` propagates
    found: list[tuple[IntArray, int, FloatArray, FloatArray, FloatArray, FloatArray]] = []
    for j in range(1, n_steps + 1):
        beyond = offsets[j - 1] >= horizon_s[active]
        if beyond.any():  # still visible at the end of the lookahead: LOS stays inf
            keep = ~beyond
            active, g_prev, dg_prev = active[keep], g_prev[keep], dg_prev[keep]
        if active.size == 0:
            break
        a_loc = local[active]
        need = np.zeros(used.size, dtype=bool)
        need[a_loc] = True
        need_rows = np.flatnonzero(need)
        # Propagate column j for the satellites still needed (the array is rebuilt when the set
        # shrank by more than a quarter: extra satellites cost less than a rebuild).
        if array is None or need_rows.size < 0.75 * array_rows.size:
            array_rows = need_rows
            array = SatrecArray(tick.satrecs[used[need_rows]].tolist())
        error, r, v = array.sgp4(jd_g[j : j + 1], fr_g[j : j + 1])
        bad = np.flatnonzero(error[:, 0])
        if bad.size:  # where SGP4 fails the pass ends (the state is NaN)
            r[bad] = np.nan
            v[bad] = np.nan
        r_j = np.full((3, used.size), np.nan)
        v_j = np.full((3, used.size), np.nan)
        r_j[:, array_rows] = r[:, 0, :].T
        v_j[:, array_rows] = v[:, 0, :].T
        r_cols.append(r_j)
        v_cols.append(v_j)
        rotation = EarthRotation(rotations.cos[j], rotations.sin[j])
        pos, vel = teme_to_itrf(r_j, v_j, rotation)
        p_a = (pos[0][a_loc], pos[1][a_loc], pos[2][a_loc])
        v_a = (vel[0][a_loc], vel[1][a_loc], vel[2][a_loc])
        ok = np.isfinite(p_a[0])
        g_j, dg_j = _sign_function(tick.index, site[active], masked[active], p_a, v_a)
        setting = ~ok | ~(g_j > 0)
        if setting.any():
            set_rows = np.flatnonzero(setting)
            good = ok[set_rows]
            # SGP4 error ahead: the pass ends at the last valid sample.
            los[active[set_rows[~good]]] = offsets[j - 1]
            b_rows = set_rows[good]
            if b_rows.size:
                found.append(
                    (active[b_rows], j, g_prev[b_rows], dg_prev[b_rows], g_j[b_rows], dg_j[b_rows])
                )
        still = np.flatnonzero(~setting)
        active, g_prev, dg_prev = active[still], g_j[still], dg_j[still]
    if found:
        pairs = np.concatenate([f[0] for f in found])
        col = np.concatenate([np.full(f[0].size, f[1]) for f in found])
        ga, dga, gb, dgb = (np.concatenate([f[i] for f in found]) for i in range(2, 6))

        def ends(cols: list[FloatArray], shift: int) -> FloatArray:
            return np.concatenate([cols[f[1] - shift][:, local[f[0]]] for f in found], axis=1)

        los[pairs] = _refine(
            tick,
            step,
            offsets[col - 1],
            _gmst_rate_rad_s(tick.jd, tick.fr),
            rotations.cos[col - 1],
            rotations.sin[col - 1],
            (ends(r_cols, 1), ends(v_cols, 1), ends(r_cols, 0), ends(v_cols, 0)),
            site[pairs],
            masked[pairs],
            (ga, dga, gb, dgb),
        )
    return los


def _refine(  # noqa: PLR0913, PLR0917 - a numeric kernel on gathered bracket data
    tick: _Tick,
    step: float,
    t0: FloatArray,
    rate_rad_s: float,
    cos0: FloatArray,
    sin0: FloatArray,
    states: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    site: IntArray,
    masked: BoolArray,
    values: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
) -> FloatArray:
    """LOS in ``[t0, t0 + step]`` (per row): cubic guess on ``g``, then safeguarded Newton on the
    cubic-Hermite interpolated TEME state, rotated to ITRF at each trial time.

    ``states`` are the TEME ``(r0, v0, r1, v1)`` at both ends, ``(3, N)``; ``values`` are
    ``(g, dg/dt)`` at both ends; ``cos0, sin0`` the Earth rotation at ``t0``. The bracket shrinks
    with every evaluation and a Newton step leaving it is replaced by the bracket's midpoint; rows
    iterate until the step is below ``_TIME_TOL_S`` (a low pass whose ``g`` peaks inside the
    bracket may need a few bisections before Newton takes over).
    """
    h = step
    ga, dga, gb, dgb = values
    x = t0 + h * _cubic_guess(ga, gb, dga * h, dgb * h)
    out = x.copy()
    # The rows still iterating and their data, compressed as rows finish (most after one step).
    rows = np.arange(x.size)
    a, b = t0.copy(), t0 + h
    neg_a = ga <= 0
    curvature = np.abs(dgb - dga) / h
    r0, v0, r1, v1 = states
    for _ in range(_MAX_ITERATIONS):
        dt = x - t0
        gx, dgx = _g_on_segment(
            tick, dt / h, h, rate_rad_s * dt, cos0, sin0, (r0, v0, r1, v1), site, masked
        )
        same_as_a = (gx <= 0) == neg_a
        a = np.where(same_as_a, x, a)
        b = np.where(same_as_a, b, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            trial = x - gx / dgx
        newton = (trial >= a) & (trial <= b)
        x_new = np.where(newton, trial, 0.5 * (a + b))
        # Newton converges quadratically: after a step d the error is about |g''/2g'| d² (g''
        # estimated from the end slopes, times a safety factor): most rows stop after one step.
        d = np.abs(x_new - x)
        with np.errstate(divide="ignore", invalid="ignore"):
            predicted = _NEWTON_SAFETY * curvature / np.abs(dgx) * d * d
        done = (newton & ((d < _TIME_TOL_S) | (predicted < _TIME_TOL_S))) | (b - a < _TIME_TOL_S)
        out[rows] = x_new
        keep = np.flatnonzero(~done)
        if keep.size == 0:
            break
        rows, x, t0, a, b = rows[keep], x_new[keep], t0[keep], a[keep], b[keep]
        neg_a, curvature, cos0, sin0 = neg_a[keep], curvature[keep], cos0[keep], sin0[keep]
        r0, v0, r1, v1 = r0[:, keep], v0[:, keep], r1[:, keep], v1[:, keep]
        site, masked = site[keep], masked[keep]
    return out


def _g_on_segment(  # noqa: PLR0913, PLR0917 - a numeric kernel on gathered bracket data
    tick: _Tick,
    s: FloatArray,
    h: float,
    turn: FloatArray,
    cos0: FloatArray,
    sin0: FloatArray,
    states: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    site: IntArray,
    masked: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """``g`` and ``dg/dt`` at fractions ``s`` of the step on the cubic Hermite of the TEME states
    at both ends; the Earth has turned by ``turn`` (rad, ≤ 0.05) since the start of the step."""
    r0, v0, r1, v1 = states
    s2 = s * s
    s3 = s2 * s
    h01 = 3 * s2 - 2 * s3
    h00 = 1 - h01
    h10 = (s3 - 2 * s2 + s) * h
    h11 = (s3 - s2) * h
    g01 = (6 * s - 6 * s2) / h
    g10 = 3 * s2 - 4 * s + 1
    g11 = 3 * s2 - 2 * s
    comps = [h00 * r0[i] + h10 * v0[i] + h01 * r1[i] + h11 * v1[i] for i in range(3)]
    rates = [g01 * (r1[i] - r0[i]) + g10 * v0[i] + g11 * v1[i] for i in range(3)]
    # cos and sin of θ0 + turn by the angle-addition formulas with Taylor series of the small
    # turn (|turn| ≤ 0.05 rad: the truncation error is below 1e-16).
    t2 = turn * turn
    cos_d = 1.0 - t2 * (0.5 - t2 * (1.0 / 24.0 - t2 * (1.0 / 720.0 - t2 / 40_320.0)))
    sin_d = turn * (
        1.0 - t2 * (1.0 / 6.0 - t2 * (1.0 / 120.0 - t2 * (1.0 / 5_040.0 - t2 / 362_880.0)))
    )
    rotation = EarthRotation(cos0 * cos_d - sin0 * sin_d, sin0 * cos_d + cos0 * sin_d)
    pos, vel = teme_to_itrf(comps, rates, rotation)
    return _sign_function(
        tick.index, site, masked, (pos[0], pos[1], pos[2]), (vel[0], vel[1], vel[2])
    )


def _cubic_guess(f0: FloatArray, f1: FloatArray, d0: FloatArray, d1: FloatArray) -> FloatArray:
    """Root in [0, 1] of the cubic Hermite through (f0, d0), (f1, d1) (d scaled by the step):
    regula falsi, then two Newton steps on the cubic (a start for the exact refinement)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = f0 - f1
        s = np.clip(f0 / df, 0.0, 1.0)
        for _ in range(2):
            s2 = s * s
            s3 = s2 * s
            val = (2 * s3 - 3 * s2 + 1) * f0 + (s3 - 2 * s2 + s) * d0 + (-2 * s3 + 3 * s2) * f1
            val += (s3 - s2) * d1
            der = (6 * s2 - 6 * s) * df + (3 * s2 - 4 * s + 1) * d0 + (3 * s2 - 2 * s) * d1
            s = np.clip(s - val / der, 0.0, 1.0)
    return np.nan_to_num(s, nan=0.5)
