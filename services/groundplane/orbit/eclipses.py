"""Eclipse search: when each satellite crosses the Earth's penumbra and umbra over a window.

The functions searched are the signed cone margins of :func:`groundplane.orbit.shadow.
shadow_margins_rad`: ``p(t) = c − (a + b)`` (negative inside the penumbra cone) and
``u(t) = c − (b − a)`` (negative inside the umbra cone). Both are continuous, so their roots are
the edges (the sunlit fraction itself is flat at 0 and 1 away from them).

Algorithm (vectorised over satellites × times; no loop over satellites in Python):

1. Every satellite is propagated on one uniform grid of about ``step_s`` seconds spanning the
   window exactly (one ``SatrecArray.sgp4`` call per chunk of satellites) and both margins are
   computed at every grid point.
2. A sign change between two samples brackets an edge. A sampled local minimum that is
   positive but small (a grazing crossing shorter than a step could hide below it) is refined
   by golden-section search; if the true minimum is negative it yields two edges.
3. Edges are refined by the Illinois method on the margins of the cubic-Hermite interpolated
   TEME state (position and velocity at both grid ends; ≲ 1 m from SGP4 at a 60 s step in LEO)
   and the exact analytic Sun, to ≪ 10 ms.
4. Edges are paired into shadow passages; an eclipse in progress at a window edge starts or ends
   at that edge and is flagged clipped. Umbra intervals are attached to the penumbra interval
   that contains them (``NaN`` when only the penumbra is crossed).

A satellite that hits an SGP4 error in the window is listed in ``errors``; its samples from the
error on are ignored (an eclipse in progress there ends, clipped, at its last valid sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import (
    SECONDS_PER_DAY,
    FloatArray,
    IntArray,
    SatelliteBatch,
    SiteFrames,
    earth_rotation,
    error_reason,
    offset_jd_fr,
    propagate,
    teme_to_itrf,
    utc_datetimes,
    utc_jd_fr,
)
from groundplane.orbit.shadow import shadow_margins_rad, sun_position_teme_km, sunlit_fraction

BoolArray = NDArray[np.bool_]
#: Default coarse step, seconds (≥ 90 samples per orbit down to LEO's ~90 min period).
DEFAULT_STEP_S = 60.0
#: A sampled local minimum above this margin (rad) cannot hide a crossing between samples.
_DIP_MARGIN_RAD = 0.02
_CHUNK_POINTS = 1_000_000
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class Eclipse:
    """One shadow passage of a satellite (UTC; clipped ends are at the window's edges)."""

    catalog_id: str
    penumbra_entry: datetime
    umbra_entry: datetime | None
    umbra_exit: datetime | None
    penumbra_exit: datetime
    entry_clipped: bool
    exit_clipped: bool

    @property
    def duration_s(self) -> float:
        return (self.penumbra_exit - self.penumbra_entry).total_seconds()


@dataclass(frozen=True)
class EclipseTable:
    """Shadow passages as arrays (``E`` rows), sorted by satellite then penumbra entry.

    Times are seconds after the window start (``start_jd + start_fr``, UTC); ``umbra_entry_s``
    and ``umbra_exit_s`` are NaN where only the penumbra is crossed. ``errors`` maps catalog ids
    of satellites that hit an SGP4 error in the window to ``(code, reason)``.
    """

    satellite_ids: tuple[str, ...]
    start_jd: float
    start_fr: float
    sat_index: IntArray
    penumbra_entry_s: FloatArray
    umbra_entry_s: FloatArray
    umbra_exit_s: FloatArray
    penumbra_exit_s: FloatArray
    entry_clipped: BoolArray
    exit_clipped: BoolArray
    errors: dict[str, tuple[int, str]]

    def __len__(self) -> int:
        return int(self.sat_index.size)

    @property
    def duration_s(self) -> FloatArray:
        return self.penumbra_exit_s - self.penumbra_entry_s

    def datetimes(self, seconds: FloatArray) -> list[datetime | None]:
        """UTC datetimes of window offsets; ``None`` where the offset is NaN."""
        finite = np.isfinite(seconds)
        jd, fr = offset_jd_fr(self.start_jd, self.start_fr, np.where(finite, seconds, 0.0))
        stamps = utc_datetimes(jd, fr) if seconds.size else []
        return [s if ok else None for s, ok in zip(stamps, finite.tolist(), strict=True)]

    def eclipses(self) -> list[Eclipse]:
        """The rows as :class:`Eclipse` objects."""
        p_in = self.datetimes(self.penumbra_entry_s)
        u_in = self.datetimes(self.umbra_entry_s)
        u_out = self.datetimes(self.umbra_exit_s)
        p_out = self.datetimes(self.penumbra_exit_s)
        rows = []
        for s, a, b, c, d, ec, xc in zip(
            self.sat_index.tolist(),
            p_in,
            u_in,
            u_out,
            p_out,
            self.entry_clipped.tolist(),
            self.exit_clipped.tolist(),
            strict=True,
        ):
            assert a is not None
            assert d is not None
            rows.append(Eclipse(self.satellite_ids[s], a, b, c, d, ec, xc))
        return rows


# --------------------------------------------------------------------------------------------
# Interpolated margins


@dataclass
class _Grid:
    """One chunk's propagated grid (TEME) and what is needed to interpolate it."""

    r: FloatArray  # (C, N+1, 3) km
    v: FloatArray  # (C, N+1, 3) km/s
    step_s: float
    jd0: float
    fr0: float

    def margins(self, rows: IntArray, t: FloatArray, which: int) -> FloatArray:
        """Margin ``which`` (0 penumbra, 1 umbra) of chunk rows ``rows`` at window times ``t``."""
        h = self.step_s
        last = self.r.shape[1] - 2
        k = np.clip(np.floor(t / h).astype(np.intp), 0, last)
        s = (t - k * h) / h
        s2 = s * s
        s3 = s2 * s
        h01 = 3 * s2 - 2 * s3
        h00 = 1 - h01
        h10 = (s3 - 2 * s2 + s) * h
        h11 = (s3 - s2) * h
        r0, v0 = self.r[rows, k], self.v[rows, k]
        r1, v1 = self.r[rows, k + 1], self.v[rows, k + 1]
        pos = h00[:, None] * r0 + h10[:, None] * v0 + h01[:, None] * r1 + h11[:, None] * v1
        jd, fr = offset_jd_fr(self.jd0, self.fr0, t)
        sun = sun_position_teme_km(jd, fr)
        return shadow_margins_rad(pos, sun)[which]


def _illinois(  # noqa: PLR0913, PLR0917 - a numeric kernel: function, bracket, both values, count
    func: Callable[[FloatArray], FloatArray],
    a: FloatArray,
    b: FloatArray,
    fa: FloatArray,
    fb: FloatArray,
    iterations: int = 12,
) -> FloatArray:
    """Roots of ``func`` in brackets ``[a, b]`` (``fa``, ``fb`` of opposite signs), vectorised."""
    a, b, fa, fb = a.copy(), b.copy(), fa.copy(), fb.copy()
    side = np.zeros(a.shape, dtype=np.int8)
    for _ in range(iterations):
        with np.errstate(divide="ignore", invalid="ignore"):
            x = b - fb * (b - a) / (fb - fa)
        x = np.where((x > a) & (x < b), x, 0.5 * (a + b))
        fx = func(x)
        same_a = np.sign(fx) == np.sign(fa)
        a_new = np.where(same_a, x, a)
        fa_new = np.where(same_a, fx, np.where(side == -1, 0.5 * fa, fa))
        b_new = np.where(same_a, b, x)
        fb_new = np.where(same_a, np.where(side == 1, 0.5 * fb, fb), fx)
        side = np.where(same_a, 1, -1).astype(np.int8)
        a, b, fa, fb = a_new, b_new, fa_new, fb_new
    with np.errstate(divide="ignore", invalid="ignore"):
        x = b - fb * (b - a) / (fb - fa)
    return np.where((x >= a) & (x <= b), x, 0.5 * (a + b))


def _golden_min(
    func: Callable[[FloatArray], FloatArray], a: FloatArray, b: FloatArray, iterations: int = 40
) -> tuple[FloatArray, FloatArray]:
    """Minimum (abscissa, value) of unimodal ``func`` on ``[a, b]``, vectorised."""
    a, b = a.copy(), b.copy()
    x1 = b - _GOLDEN * (b - a)
    x2 = a + _GOLDEN * (b - a)
    f1, f2 = func(x1), func(x2)
    for _ in range(iterations):
        left = f1 < f2
        b = np.where(left, x2, b)
        a = np.where(left, a, x1)
        new_x1 = np.where(left, b - _GOLDEN * (b - a), x2)
        new_x2 = np.where(left, x1, a + _GOLDEN * (b - a))
        new_f1 = np.where(left, np.nan, f2)
        new_f2 = np.where(left, f1, np.nan)
        probe = np.where(left, new_x1, new_x2)
        fp = func(probe)
        f1 = np.where(left, fp, new_f1)
        f2 = np.where(left, new_f2, fp)
        x1, x2 = new_x1, new_x2
    x = 0.5 * (a + b)
    return x, func(x)


# --------------------------------------------------------------------------------------------
# Search


@dataclass
class _Edges:
    """Shadow intervals of one cone for a chunk: rows, entry/exit offsets, clipped flags."""

    row: IntArray
    entry_s: FloatArray
    exit_s: FloatArray
    entry_clipped: BoolArray
    exit_clipped: BoolArray


def _intervals(  # noqa: PLR0915 - one vectorised pass: sign changes, dips, window edges, pairing
    grid: _Grid, m: FloatArray, valid: BoolArray, which: int
) -> _Edges:
    """Intervals where margin ``which`` is negative, from its samples ``m`` (C, N+1)."""
    h = grid.step_s
    n_rows, n_pts = m.shape
    rows_l: list[IntArray] = []
    t_l: list[FloatArray] = []
    kind_l: list[NDArray[np.int8]] = []  # −1 entry (margin going negative), +1 exit

    def interp(rows: IntArray) -> Callable[[FloatArray], FloatArray]:
        return lambda t: grid.margins(rows, t, which)

    # 1. Sign changes between valid neighbours.
    pair_ok = valid[:, :-1] & valid[:, 1:]
    neg = m < 0.0
    change = pair_ok & (neg[:, :-1] != neg[:, 1:])
    rows, k = np.nonzero(change)
    if rows.size:
        a = k * h
        roots = _illinois(interp(rows), a, a + h, m[rows, k], m[rows, k + 1])
        rows_l.append(rows)
        t_l.append(roots)
        kind_l.append(np.where(neg[rows, k + 1], -1, 1).astype(np.int8))
    # 2. Small positive local minima: a grazing crossing may hide between samples.
    if n_pts >= 2:
        padded = np.pad(m, ((0, 0), (1, 1)), constant_values=np.inf)
        pad_ok = np.pad(valid, ((0, 0), (1, 1)), constant_values=True)
        centre = padded[:, 1:-1]
        local = (
            (centre <= padded[:, :-2])
            & (centre <= padded[:, 2:])
            & ~((centre == padded[:, :-2]) & (centre == padded[:, 2:]))
            & (centre > 0.0)
            & (centre < _DIP_MARGIN_RAD)
            & valid
            & pad_ok[:, :-2]
            & pad_ok[:, 2:]
        )
        rows, k = np.nonzero(local)
        if rows.size:
            lo = np.maximum(k - 1, 0) * h
            hi = np.minimum(k + 1, n_pts - 1) * h
            t_min, f_min = _golden_min(interp(rows), lo, hi)
            dip = f_min < 0.0
            if dip.any():
                r, lo_d, hi_d, t_d, f_d = rows[dip], lo[dip], hi[dip], t_min[dip], f_min[dip]
                f_lo = grid.margins(r, lo_d, which)
                f_hi = grid.margins(r, hi_d, which)
                entry = _illinois(interp(r), lo_d, t_d, f_lo, f_d)
                exit_ = _illinois(interp(r), t_d, hi_d, f_d, f_hi)
                rows_l.extend((r, r))
                t_l.extend((entry, exit_))
                kind_l.extend((np.full(r.size, -1, np.int8), np.full(r.size, 1, np.int8)))
    # 3. Window edges: inside the cone at the first / last valid sample → clipped ends.
    any_valid = valid.any(axis=1)
    first = np.argmax(valid, axis=1)
    last = n_pts - 1 - np.argmax(valid[:, ::-1], axis=1)
    all_rows = np.arange(n_rows)
    start_in = any_valid & (m[all_rows, first] < 0.0)
    end_in = any_valid & (m[all_rows, last] < 0.0)
    rows_l.extend((all_rows[start_in], all_rows[end_in]))
    t_l.extend((first[start_in] * h, last[end_in] * h))
    kind_l.extend(
        (np.full(int(start_in.sum()), -2, np.int8), np.full(int(end_in.sum()), 2, np.int8))
    )
    row = np.concatenate(rows_l).astype(np.intp)
    t = np.concatenate(t_l)
    kind = np.concatenate(kind_l)
    # Sort by row, time; at equal times a clipped entry comes first, a clipped exit last.
    order = np.lexsort((kind, t, row))
    row, t, kind = row[order], t[order], kind[order]
    entries = kind < 0
    exits = kind > 0
    if int(entries.sum()) != int(exits.sum()):  # pragma: no cover - a numeric inconsistency
        raise InvalidArgument(
            "eclipse search found unpaired shadow edges; please report the elements and window"
        )
    return _Edges(
        row=row[entries],
        entry_s=t[entries],
        exit_s=t[exits],
        entry_clipped=kind[entries] == -2,
        exit_clipped=kind[exits] == 2,
    )


def find_eclipse_table(
    batch: SatelliteBatch,
    start: datetime,
    stop: datetime,
    *,
    step_s: float = DEFAULT_STEP_S,
) -> EclipseTable:
    """Every penumbra passage (with its umbra part) of every satellite in ``[start, stop]``."""
    (jd0_arr, fr0_arr), (jd1_arr, fr1_arr) = utc_jd_fr(start), utc_jd_fr(stop)
    jd0, fr0 = float(jd0_arr[0]), float(fr0_arr[0])
    span_s = ((float(jd1_arr[0]) - jd0) + (float(fr1_arr[0]) - fr0)) * SECONDS_PER_DAY
    if not span_s > 0:
        raise InvalidArgument(f"stop {stop.isoformat()} must be after start {start.isoformat()}")
    if not (math.isfinite(step_s) and step_s > 0):
        raise InvalidArgument(f"step_s must be a positive number of seconds, got {step_s!r}")
    intervals = max(1, math.ceil(span_s / step_s))
    h = span_s / intervals
    jd, fr = offset_jd_fr(jd0, fr0, np.arange(intervals + 1) * h)
    sun = sun_position_teme_km(jd, fr)
    per_chunk = max(1, _CHUNK_POINTS // (intervals + 1))
    cols: dict[str, list[FloatArray | IntArray | BoolArray]] = {
        k: [] for k in ("sat", "p_in", "u_in", "u_out", "p_out", "c_in", "c_out")
    }
    errors: dict[str, tuple[int, str]] = {}
    for s0 in range(0, len(batch), per_chunk):
        chunk = batch.subset(np.arange(s0, min(len(batch), s0 + per_chunk)))
        prop = propagate(chunk, jd, fr)
        # Valid up to the first error (a decay is final; later states are not trusted).
        bad = ~prop.ok
        valid = ~np.logical_or.accumulate(bad, axis=1)
        for row in np.flatnonzero(bad.any(axis=1)):
            code = int(prop.error_code[row][np.flatnonzero(prop.error_code[row])[0]])
            errors[chunk.ids[int(row)]] = (code, error_reason(code))
        grid = _Grid(prop.r_teme_km, prop.v_teme_km_s, h, jd0, fr0)
        pen_m, umb_m = shadow_margins_rad(prop.r_teme_km, sun)
        pen = _intervals(grid, np.where(valid, pen_m, np.inf), valid, 0)
        umb = _intervals(grid, np.where(valid, umb_m, np.inf), valid, 1)
        # Attach each umbra interval to the penumbra interval of the same row containing it.
        span = intervals * h + 10.0
        p_key = pen.row * span + pen.entry_s
        u_key = umb.row * span + umb.entry_s
        j = np.searchsorted(u_key, p_key, side="left")
        j_ok = j < u_key.size
        jj = np.where(j_ok, j, 0)
        has = (
            j_ok
            & (umb.row[jj] == pen.row if umb.row.size else False)
            & (umb.exit_s[jj] <= pen.exit_s + 1e-6 if umb.row.size else False)
        )
        nan = np.full(pen.row.size, np.nan)
        cols["sat"].append(pen.row + s0)
        cols["p_in"].append(pen.entry_s)
        cols["p_out"].append(pen.exit_s)
        cols["u_in"].append(np.where(has, umb.entry_s[jj], nan) if umb.row.size else nan)
        cols["u_out"].append(np.where(has, umb.exit_s[jj], nan) if umb.row.size else nan)
        cols["c_in"].append(pen.entry_clipped)
        cols["c_out"].append(pen.exit_clipped)

    def floats(key: str) -> FloatArray:
        parts = cols[key]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    def flags(key: str) -> BoolArray:
        parts = cols[key]
        return np.concatenate(parts).astype(bool) if parts else np.zeros(0, dtype=bool)

    return EclipseTable(
        satellite_ids=batch.ids,
        start_jd=jd0,
        start_fr=fr0,
        sat_index=np.concatenate(cols["sat"]).astype(np.intp)
        if cols["sat"]
        else np.zeros(0, np.intp),
        penumbra_entry_s=floats("p_in"),
        umbra_entry_s=floats("u_in"),
        umbra_exit_s=floats("u_out"),
        penumbra_exit_s=floats("p_out"),
        entry_clipped=flags("c_in"),
        exit_clipped=flags("c_out"),
        errors=errors,
    )


def find_eclipses(
    batch: SatelliteBatch, start: datetime, stop: datetime, *, step_s: float = DEFAULT_STEP_S
) -> list[Eclipse]:
    """:func:`find_eclipse_table` as :class:`Eclipse` objects."""
    return find_eclipse_table(batch, start, stop, step_s=step_s).eclipses()


# --------------------------------------------------------------------------------------------
# Lighting at given instants (pass rows: one satellite, one site, one time each)

#: The Sun's elevation below which a site's sky is dark enough to see a sunlit satellite by eye
#: (civil twilight's end, as Heavens-Above lists visible passes), degrees.
VISUAL_SUN_ELEVATION_DEG = -6.0


def sunlit_fraction_at(
    batch: SatelliteBatch, sat_index: IntArray, jd: FloatArray, fr: FloatArray
) -> FloatArray:
    """Sunlit fraction of satellite ``batch[sat_index[i]]`` at ``(jd[i], fr[i])``, per row.

    One ``Satrec.sgp4_array`` call per distinct satellite (rows grouped by satellite); NaN where
    SGP4 fails.
    """
    sat_index = np.asarray(sat_index, dtype=np.intp)
    jd = np.asarray(jd, dtype=np.float64)
    fr = np.asarray(fr, dtype=np.float64)
    position = np.full((sat_index.size, 3), np.nan)
    order = np.argsort(sat_index, kind="stable")
    sats, first = np.unique(sat_index[order], return_index=True)
    bounds = [*first.tolist(), sat_index.size]
    for position_in_list, sat in enumerate(sats.tolist()):
        rows = order[bounds[position_in_list] : bounds[position_in_list + 1]]
        error, r, _ = batch.satrecs[sat].sgp4_array(jd[rows], fr[rows])
        r = np.asarray(r, dtype=np.float64)
        r[np.asarray(error) != 0] = np.nan
        position[rows] = r
    if sat_index.size == 0:
        return np.zeros(0)
    return sunlit_fraction(position, sun_position_teme_km(jd, fr))


def sun_elevation_deg(
    frames: SiteFrames, site_index: IntArray, jd: FloatArray, fr: FloatArray
) -> FloatArray:
    """Geometric elevation of the Sun's centre above site ``site_index[i]``'s horizon (ellipsoid
    normal, no refraction) at ``(jd[i], fr[i])``, degrees, per row."""
    site_index = np.asarray(site_index, dtype=np.intp)
    if site_index.size == 0:
        return np.zeros(0)
    sun = sun_position_teme_km(jd, fr)
    zero = np.zeros_like(sun)
    sun_itrf, _ = teme_to_itrf(
        np.moveaxis(sun, -1, 0), np.moveaxis(zero, -1, 0), earth_rotation(jd, fr)
    )
    to_sun = sun_itrf.T - frames.ecef_km[site_index]
    up = frames.enu[site_index, 2, :]
    sin_el = np.sum(up * to_sun, axis=1) / np.linalg.norm(to_sun, axis=1)
    return np.asarray(np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0))), dtype=np.float64)
