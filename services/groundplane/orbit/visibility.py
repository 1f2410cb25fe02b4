"""Which satellites each site sees now, their look angles, and how long each will stay visible.

``visibility(batch, sites, jd, fr)`` answers for one instant (call it once per tick of a time
grid). A satellite is visible from a site when its elevation exceeds the site's threshold
``max(min elevation, mask(azimuth))``.

Cost model: one SGP4 call per satellite group for the instant plus a short coarse future grid
(step from the orbit, as in pass search; horizon half an orbit by default). The instant's test
for all satellites × sites is a pair of matrix products and a comparison (no trigonometry); only
candidate pairs get full look angles; only visible pairs are stepped forward on the coarse grid
until they set, and each setting is refined on the cubic-Hermite interpolated state (Newton,
≪ 1 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import (
    SECONDS_PER_DAY,
    CodeArray,
    FloatArray,
    IntArray,
    SatelliteBatch,
    SiteFrames,
    as_site_frames,
    earth_rotation,
    error_reason,
    offset_jd_fr,
    propagate,
    teme_to_itrf,
)
from groundplane.orbit.passes import (
    _cubic_guess,
    _Group,
    _newton,
    _topo,
    coarse_step_s,
)
from groundplane.orbit.sites import Site

_SITE_CHUNK_PAIRS = 1 << 20


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


def _pair_geometry(
    frames: SiteFrames,
    site: IntArray,
    p: tuple[FloatArray, FloatArray, FloatArray],
    v: tuple[FloatArray, FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray]:
    """Range (km) and range rate (km/s) of ITRF states from sites."""
    s = frames.ecef_km[site]
    dx, dy, dz = p[0] - s[:, 0], p[1] - s[:, 1], p[2] - s[:, 2]
    rng = np.sqrt(dx * dx + dy * dy + dz * dz)
    return rng, (dx * v[0] + dy * v[1] + dz * v[2]) / rng


def visibility(
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    jd: float,
    fr: float,
    *,
    max_lookahead_s: float = SECONDS_PER_DAY,
) -> Visibility:
    """Satellites above each site's threshold at the instant ``jd + fr`` (UTC), with LOS times."""
    frames = as_site_frames(sites)
    if not (math.isfinite(jd) and math.isfinite(fr)):
        raise InvalidArgument(f"jd and fr must be finite, got {jd!r}, {fr!r}")
    if not (math.isfinite(max_lookahead_s) and max_lookahead_s > 0):
        raise InvalidArgument(f"max_lookahead_s must be positive, got {max_lookahead_s!r}")
    n_sat, n_site = len(batch), len(frames)
    error_code = np.zeros(n_sat, dtype=np.uint8)
    out_sat: list[IntArray] = []
    out_site: list[IntArray] = []
    out_cols: list[tuple[FloatArray, ...]] = []
    if n_sat and n_site:
        steps = coarse_step_s(batch)
        horizon = np.minimum(0.5 * batch.period_s, max_lookahead_s)
        for step in np.unique(steps):
            members = np.flatnonzero(steps == step)
            span = float(np.max(np.where(np.isfinite(horizon[members]), horizon[members], 0.0)))
            n_steps = max(1, math.ceil(span / float(step)))
            offsets = np.arange(n_steps + 1) * float(step)
            jd_g, fr_g = offset_jd_fr(jd, fr, offsets)
            sub = batch if members.size == n_sat else batch.subset(members)
            prop = propagate(sub, jd_g, fr_g)
            error_code[members] = prop.error_code[:, 0]
            group = _Group(members, float(step), prop.r_teme_km, prop.v_teme_km_s, prop.ok, jd, fr)
            result = _group_visibility(
                group, frames, offsets, jd_g, fr_g, np.minimum(horizon[members], span)
            )
            out_sat.append(members[result[0]])
            out_site.append(result[1])
            out_cols.append(result[2:])
    if out_sat:
        sat = np.concatenate(out_sat)
        site = np.concatenate(out_site)
        cols = [np.concatenate([c[j] for c in out_cols]) for j in range(5)]
    else:
        sat = site = np.zeros(0, dtype=np.intp)
        cols = [np.zeros(0) for _ in range(5)]
    order = np.lexsort((sat, site))
    return Visibility(
        satellite_ids=batch.ids,
        site_ids=frames.ids,
        sat_index=sat[order],
        site_index=site[order],
        azimuth_deg=cols[0][order],
        elevation_deg=cols[1][order],
        range_km=cols[2][order],
        range_rate_km_s=cols[3][order],
        los_in_s=cols[4][order],
        error_code=error_code,
    )


def _group_visibility(  # noqa: PLR0913, PLR0915, PLR0917 - one vectorised screen on shared arrays (candidates, refine)
    group: _Group,
    frames: SiteFrames,
    offsets: FloatArray,
    jd_g: FloatArray,
    fr_g: FloatArray,
    horizon_s: FloatArray,
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    r_itrf, vel = teme_to_itrf(
        np.moveaxis(group.r, -1, 0), np.moveaxis(group.v, -1, 0), earth_rotation(jd_g, fr_g)
    )
    px, py, pz = r_itrf
    # 1. Candidates at the instant: u > ρ·sin(lowest threshold), by matrix products.
    now = np.stack((px[:, 0], py[:, 0], pz[:, 0]), axis=1)  # (G, 3)
    now = np.where(np.isfinite(now), now, 0.0)
    valid_now = group.ok[:, 0]
    up_vec = frames.enu[:, 2, :]  # (K, 3)
    up_off = np.einsum("kj,kj->k", up_vec, frames.ecef_km)
    site_sq = np.einsum("kj,kj->k", frames.ecef_km, frames.ecef_km)
    sin_min = np.sin(np.radians(frames.min_threshold_deg))
    sat_sq = np.einsum("gj,gj->g", now, now)
    n_site = len(frames)
    chunk = max(1, _SITE_CHUNK_PAIRS // max(1, now.shape[0]))
    cand_sat: list[IntArray] = []
    cand_site: list[IntArray] = []
    for k0 in range(0, n_site, chunk):
        k1 = min(n_site, k0 + chunk)
        u = now @ up_vec[k0:k1].T
        u -= up_off[k0:k1]
        rho2 = now @ frames.ecef_km[k0:k1].T
        rho2 *= -2.0
        rho2 += sat_sq[:, None]
        rho2 += site_sq[k0:k1]
        np.sqrt(rho2, out=rho2)
        rho2 *= sin_min[k0:k1]
        hit = u > rho2
        hit &= valid_now[:, None]
        s_idx, k_idx = np.nonzero(hit)
        cand_sat.append(s_idx)
        cand_site.append(k_idx + k0)
    sat = np.concatenate(cand_sat)
    site = np.concatenate(cand_site)
    # 2. Full geometry for candidates; keep those above the azimuth-dependent threshold.
    p0 = (px[sat, 0], py[sat, 0], pz[sat, 0])
    v0 = (vel[0][sat, 0], vel[1][sat, 0], vel[2][sat, 0])
    topo = _topo(frames, site, p0, v0)
    keep = topo.f > 0
    sat, site = sat[keep], site[keep]
    p0 = (p0[0][keep], p0[1][keep], p0[2][keep])
    v0 = (v0[0][keep], v0[1][keep], v0[2][keep])
    az, el = topo.az[keep], topo.el[keep]
    f_prev, df_prev = topo.f[keep], topo.df[keep]
    rng, rr = _pair_geometry(frames, site, p0, v0)
    # 3. Step the visible pairs forward on the coarse grid until they set.
    los = np.full(sat.size, np.inf)
    active = np.arange(sat.size)
    n_cols = offsets.size
    for j in range(1, n_cols):
        if active.size == 0:
            break
        a_sat, a_site = sat[active], site[active]
        ok = group.ok[a_sat, j]
        pj = (px[a_sat, j], py[a_sat, j], pz[a_sat, j])
        vj = (vel[0][a_sat, j], vel[1][a_sat, j], vel[2][a_sat, j])
        tj = _topo(frames, a_site, pj, vj, need_az=bool(frames.has_mask.any()))
        beyond = offsets[j - 1] >= horizon_s[a_sat]
        setting = (~ok | (tj.f <= 0)) & ~beyond
        if setting.any():
            rows = np.flatnonzero(setting)
            pair = active[rows]
            s_rows = a_sat[rows]
            good = ok[rows]
            # SGP4 error ahead: the pass ends at the last valid sample.
            los[pair[~good]] = offsets[j - 1]
            g_rows = rows[good]
            if g_rows.size:
                g_pair = active[g_rows]
                g_sat = s_rows[good]
                fa, fb = f_prev[g_rows], tj.f[g_rows]
                h = offsets[j] - offsets[j - 1]
                da, db = df_prev[g_rows] * h, tj.df[g_rows] * h
                guess = offsets[j - 1] + h * _cubic_guess(fa, fb, da, db)
                seg = group.segments(g_sat, np.full(g_sat.size, j - 1))
                g_site = a_site[g_rows]

                def f_df(
                    t: FloatArray, seg: object = seg, g_site: IntArray = g_site
                ) -> tuple[FloatArray, FloatArray]:
                    pp, vv = seg.itrf_at(t)  # type: ignore[attr-defined]
                    out = _topo(frames, g_site, pp, vv)
                    return out.f, out.df

                a = np.full(g_sat.size, offsets[j - 1])
                los[g_pair] = _newton(f_df, a, a + h, fa, guess, 3)
        still = ~setting & ~beyond
        f_prev, df_prev = tj.f[still], tj.df[still]
        active = active[still]
    return sat, site, az, el, rng, rr, los
