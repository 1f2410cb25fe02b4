"""Geometry core: batched SGP4 against Vallado's vectors, look angles against Skyfield, Doppler."""

from __future__ import annotations

import csv
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sgp4
from sgp4.api import Satrec

from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.orbit.geometry import (
    SPEED_OF_LIGHT_KM_S,
    SatelliteBatch,
    doppler_downlink_hz,
    doppler_uplink_hz,
    earth_rotation,
    ecef_to_geodetic,
    geodetic_to_ecef_km,
    look_angles,
    offset_jd_fr,
    propagate,
    teme_to_itrf,
    utc_datetimes,
    utc_jd_fr,
    utc_jd_fr_range,
)
from groundplane.orbit.sites import Site

from ..data import DATA

SGP4_DIR = Path(sgp4.__file__).resolve().parent

#: tcppver.out prints positions with 8 decimals (km) and velocities with 9 (km/s).
ONE_MILLIMETRE_KM = 1e-6
VELOCITY_TOL_KM_S = 2e-9
#: The issue asks for 0.01°, 0.1 km and 1 m/s; with the same frame conventions (UT1 = UTC, no
#: polar motion) agreement is about 4e-8°, 1e-7 km, 1e-8 km/s, so these catch small errors
#: (ellipsoid constants, a site metres off) that the issue's tolerances would let through.
ANGLE_TOL_DEG = 1e-5
RANGE_TOL_KM = 1e-5
RANGE_RATE_TOL_KM_S = 1e-6
#: A central difference of range over ±0.5 s carries its own truncation error: 1 m/s.
DERIVATIVE_TOL_KM_S = 1e-3
#: The error codes Vallado's run reports, in file order (see the sgp4 package's own tests).
VALLADO_ERRORS = [1, 1, 6, 6, 4, 3, 6]


def load_3le() -> SatelliteBatch:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids, sats = [], []
    for i in range(0, len(lines) - 2, 3):
        ids.append(lines[i + 1][2:7].strip())
        sats.append(Satrec.twoline2rv(lines[i + 1], lines[i + 2]))
    return SatelliteBatch(ids, sats)


def ground_sites() -> list[Site]:
    with (DATA / "ground-stations.csv").open() as handle:
        return [
            Site(row[0], float(row[2]), float(row[3]), float(row[4]), name=row[1])
            for row in csv.reader(handle)
        ]


def vallado_cases() -> list[
    tuple[Satrec, list[tuple[float, list[float]]], tuple[float, float, float]]
]:
    """(satrec, [(tsince_min, [x y z vx vy vz])...], (start, stop, step)) per Vallado satellite."""
    tle_lines = list((SGP4_DIR / "SGP4-VER.TLE").read_text().splitlines())
    out_lines = (SGP4_DIR / "tcppver.out").read_text().replace("\r", "").splitlines()
    blocks: list[list[tuple[float, list[float]]]] = []
    for line in out_lines:
        if line.strip().endswith("xx"):
            blocks.append([])
        elif line.strip():
            fields = line.split()
            blocks[-1].append((float(fields[0]), [float(x) for x in fields[1:7]]))
    cases = []
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(tle_lines)
        if a.startswith("1 ") and b.startswith("2 ")
    ]
    for (line1, line2), block in zip(pairs, blocks, strict=True):
        start, stop, step = (float(x) for x in line2[69:].split())
        cases.append((Satrec.twoline2rv(line1, line2), block, (start, stop, step)))
    return cases


def test_vallado_vectors_through_batch_propagation() -> None:
    """Every state in tcppver.out is reproduced by `propagate` within 1 mm and 2e-9 km/s, and
    where Vallado's listing stops early the batch reports the same SGP4 error codes (NaN states)."""
    errors: list[int] = []
    checked = 0
    for satrec, block, (start, stop, step) in vallado_cases():
        grid = list(np.arange(start, stop + 1e-9, step))
        if grid[-1] < stop - 1e-6:
            grid.append(stop)
        if 0.0 not in grid:
            grid.insert(0, 0.0)
        tsince = np.array(grid)
        whole, frac = np.divmod(tsince / 1440.0, 1.0)
        batch = SatelliteBatch(["v"], [satrec])
        prop = propagate(batch, satrec.jdsatepoch + whole, satrec.jdsatepochF + frac)
        listed = {round(t, 6): state for t, state in block}
        for j, t in enumerate(tsince):
            code = int(prop.error_code[0, j])
            if code:
                # Vallado's listing stops here (at t = 0 it repeats the previous satellite's line
                # instead): no later time may be listed, and the state must be NaN.
                assert all(round(float(x), 6) not in listed for x in tsince[j + 1 :])
                assert np.isnan(prop.r_teme_km[0, j]).all()
                assert np.isnan(prop.v_teme_km_s[0, j]).all()
                errors.append(code)
                break
            want = np.array(listed[round(float(t), 6)])
            np.testing.assert_allclose(
                prop.r_teme_km[0, j], want[:3], rtol=0, atol=ONE_MILLIMETRE_KM
            )
            np.testing.assert_allclose(
                prop.v_teme_km_s[0, j], want[3:], rtol=0, atol=VELOCITY_TOL_KM_S
            )
            checked += 1
    assert checked > 600
    assert errors == VALLADO_ERRORS


def test_decayed_satellite_is_flagged_per_satellite_never_silently_zero() -> None:
    """A satellite that decays inside the request gets error code 6, a 'decayed' reason and NaN
    look angles from then on; the healthy satellite of the same batch is unaffected and finite."""
    cases = vallado_cases()
    # The Vallado satellite whose listing ends in a decay (code 6) well after its epoch.
    sat6 = None
    for satrec, _, (start, stop, step) in cases:
        tsince = np.arange(start, stop + 1e-9, step)
        whole, frac = np.divmod(tsince / 1440.0, 1.0)
        e, _, _ = satrec.sgp4_array(satrec.jdsatepoch + whole, satrec.jdsatepochF + frac)
        if 6 in e and e[0] == 0:
            sat6 = satrec
            break
    assert sat6 is not None
    healthy = load_3le().satrecs[0]
    batch = SatelliteBatch(["decaying", "healthy"], [sat6, healthy])
    epoch = utc_datetimes(sat6.jdsatepoch, sat6.jdsatepochF)[0]
    jd, fr = utc_jd_fr_range(epoch, epoch + timedelta(days=30), 3600.0)
    looks = look_angles(batch, ground_sites()[:3], jd, fr)
    assert looks.error_code[0].any()
    assert not looks.error_code[1].any()
    code, reason = looks.errors()["decaying"]
    assert code == 6
    assert "decayed" in reason
    bad = looks.error_code[0] != 0
    for field in (looks.azimuth_deg, looks.elevation_deg, looks.range_km, looks.range_rate_km_s):
        assert np.isnan(field[0][:, bad]).all()
        assert np.isfinite(field[0][:, ~bad]).all()
        assert np.isfinite(field[1]).all()


def skyfield_timescale() -> Any:
    """Skyfield timescale with UT1 = UTC in 2026: TT − UTC = 32.184 + 37 leap seconds."""
    from skyfield.api import load

    return load.timescale(builtin=True, delta_t=69.184)


def test_look_angles_match_skyfield_for_all_636_satellites() -> None:
    """Azimuth/elevation within 0.01°, range within 0.1 km and range rate within 1 m/s of Skyfield
    (UT1 = UTC on both sides) for every satellite of the 3LE file, at sites from the pole to the
    equator and across the dateline, at 12 times over a day."""
    from skyfield.api import EarthSatellite, wgs84

    batch = load_3le()
    sites = [
        Site("svalbard", 78.2298, 15.4078, 500.0),
        Site("singapore", 1.3962, 103.8343, 20.0),
        Site("dateline", -16.5, 179.99, 30.0),
        Site("south", -72.0117, 2.535, 1270.0),
    ]
    start = datetime(2026, 8, 16, 0, 7, 13, tzinfo=UTC)
    times = [start + timedelta(minutes=121 * i) for i in range(12)]
    jd, fr = utc_jd_fr(times)
    looks = look_angles(batch, sites, jd, fr)
    ts = skyfield_timescale()
    t = ts.from_datetimes(times)
    ut1_minus_utc_s = (t.ut1 - (jd + fr)) * 86400.0
    assert np.abs(ut1_minus_utc_s).max() < 1e-3
    for k, site in enumerate(sites):
        topos = wgs84.latlon(site.lat_deg, site.lon_deg, elevation_m=site.alt_m)
        for i, satrec in enumerate(batch.satrecs):
            sat = EarthSatellite.from_satrec(satrec, ts)
            rel = (sat - topos).at(t)
            alt, az, dist, _, _, range_rate = rel.frame_latlon_and_rates(topos)
            d_az = (looks.azimuth_deg[i, k] - az.degrees + 180.0) % 360.0 - 180.0
            # Azimuth is ill-defined at the zenith; compare it where elevation < 89.9°.
            low = alt.degrees < 89.9
            assert np.abs(d_az[low]).max() < ANGLE_TOL_DEG
            assert np.abs(looks.elevation_deg[i, k] - alt.degrees).max() < ANGLE_TOL_DEG
            assert np.abs(looks.range_km[i, k] - dist.km).max() < RANGE_TOL_KM
            assert (
                np.abs(looks.range_rate_km_s[i, k] - range_rate.km_per_s).max()
                < RANGE_RATE_TOL_KM_S
            )


def test_teme_to_itrf_matches_skyfield_for_every_layout() -> None:
    """The one TEME → ITRF rotation agrees with Skyfield's (GMST 1982, no polar motion) within
    1 mm and 1 mm/s (Skyfield's Earth-rotation term uses the time derivative of GMST 1982, ours
    the constant ω: they differ by ≈ 1e-7 km/s) for 20 satellites × 24 times, whether the
    states come as a moved ``(S, T, 3)`` view or as a tuple of components, and writing into
    ``out=`` buffers gives the same numbers."""
    from skyfield.sgp4lib import TEME_to_ITRF

    batch = load_3le().subset(range(20))
    start = datetime(2026, 8, 16, 3, 1, 7, tzinfo=UTC)
    jd, fr = utc_jd_fr([start + timedelta(minutes=61 * i) for i in range(24)])
    prop = propagate(batch, jd, fr)
    assert prop.ok.all()
    rotation = earth_rotation(jd, fr)
    r_moved = np.moveaxis(prop.r_teme_km, -1, 0)
    v_moved = np.moveaxis(prop.v_teme_km_s, -1, 0)
    r_itrf, v_itrf = teme_to_itrf(r_moved, v_moved, rotation)
    assert r_itrf.shape == v_itrf.shape == (3, 20, 24)
    for i in range(20):
        want_r, want_v = TEME_to_ITRF(
            jd, prop.r_teme_km[i].T, prop.v_teme_km_s[i].T * 86_400.0, fraction_ut1=fr
        )
        np.testing.assert_allclose(r_itrf[:, i], want_r, rtol=0, atol=ONE_MILLIMETRE_KM)
        np.testing.assert_allclose(
            v_itrf[:, i], want_v / 86_400.0, rtol=0, atol=RANGE_RATE_TOL_KM_S
        )
    r_one, v_one = teme_to_itrf(tuple(prop.r_teme_km[3].T), tuple(prop.v_teme_km_s[3].T), rotation)
    np.testing.assert_array_equal(r_one, r_itrf[:, 3])
    np.testing.assert_array_equal(v_one, v_itrf[:, 3])
    buffers = (np.full((3, 20, 24), np.nan), np.full((3, 20, 24), np.nan))
    written = teme_to_itrf(r_moved, v_moved, rotation, out=buffers)
    assert written[0] is buffers[0]
    assert written[1] is buffers[1]
    np.testing.assert_array_equal(buffers[0], r_itrf)
    np.testing.assert_array_equal(buffers[1], v_itrf)


def test_range_rate_is_the_time_derivative_of_range() -> None:
    """Range rate (with the Earth-rotation term) equals the centred difference of range over
    ±0.5 s within 1 m/s, for LEO, MEO and GEO satellites."""
    batch = load_3le()
    site = [Site("wallops", 37.9249, -75.4765, 10.0)]
    jd0, fr0 = utc_jd_fr(datetime(2026, 8, 16, 5, tzinfo=UTC))
    jd, fr = offset_jd_fr(float(jd0[0]), float(fr0[0]), [-0.5, 0.0, 0.5])
    looks = look_angles(batch, site, jd, fr)
    numeric = looks.range_km[:, 0, 2] - looks.range_km[:, 0, 0]
    assert np.abs(numeric - looks.range_rate_km_s[:, 0, 1]).max() < DERIVATIVE_TOL_KM_S


def test_doppler_formulas() -> None:
    """Downlink is f·(1 − ṙ/c) (lower while receding), uplink f·(1 + ṙ/c); a receding 7 km/s
    satellite shifts 437 MHz by −10.2 kHz on the downlink."""
    f = 437.0e6
    down = doppler_downlink_hz(f, 7.0)
    up = doppler_uplink_hz(f, 7.0)
    assert down == pytest.approx(f - f * 7.0 / SPEED_OF_LIGHT_KM_S, abs=1e-6)
    assert up == pytest.approx(f + f * 7.0 / SPEED_OF_LIGHT_KM_S, abs=1e-6)
    assert down - f == pytest.approx(-10_204.0, abs=1.0)
    approaching = doppler_downlink_hz(np.array([f, f]), np.array([-3.0, 0.0]))
    assert approaching[0] > f
    assert approaching[1] == f


def test_time_helpers_round_trip_and_reject_naive_datetimes() -> None:
    """Datetimes survive jd/fr and back to the microsecond; naive datetimes and bad ranges are
    rejected with InvalidArgument; unknown ids raise NotFound."""
    moments = [
        datetime(2026, 8, 16, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2000, 1, 1, 12, tzinfo=UTC),
    ]
    jd, fr = utc_jd_fr(moments)
    assert utc_datetimes(jd, fr) == moments
    assert np.all((fr >= 0) & (fr < 1))
    jd_r, _ = utc_jd_fr_range(moments[1], moments[1] + timedelta(minutes=2), 60.0)
    assert jd_r.size == 3
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        utc_jd_fr(datetime(2026, 1, 1))
    with pytest.raises(InvalidArgument, match="before start"):
        utc_jd_fr_range(moments[0], moments[1], 1.0)
    with pytest.raises(NotFound):
        load_3le().index_of("no-such-satellite")
    with pytest.raises(InvalidArgument, match="same length"):
        SatelliteBatch(["a", "b"], [])


def test_ecef_to_geodetic_inverts_the_library_geodetic_to_ecef_at_the_poles_too() -> None:
    """Latitude, longitude and height come back to 1e-9° and 1e-9 km from the library's
    geodetic → ECEF, from the ground to GEO, including both poles and the antimeridian."""
    lat = np.array([90.0, -90.0, 0.0, 45.0, -89.999, 78.2298, -33.9, 10.0])
    lon = np.array([0.0, 0.0, -180.0, 179.999, 12.0, 15.4078, 18.4, -75.0])
    alt_m = np.array([0.0, 400e3, 0.0, 35_786e3, 1e3, 500.0, 20_200e3, 550e3])
    back_lat, back_lon, back_alt = ecef_to_geodetic(geodetic_to_ecef_km(lat, lon, alt_m))
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    away_from_pole = np.abs(lat) < 89.99
    d_lon = (back_lon - lon + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(d_lon[away_from_pole], 0.0, atol=1e-9)
    np.testing.assert_allclose(back_alt, alt_m / 1000.0, atol=1e-9)
