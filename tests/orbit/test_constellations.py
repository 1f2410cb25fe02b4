"""Synthetic Walker and sun-synchronous constellations and their specification strings."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skyfield.api import load

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.constellations import (
    ALTITUDE_TOLERANCE_KM,
    EARTH_MU_KM3_S2,
    EARTH_RADIUS_KM,
    SunSynchronousSpec,
    WalkerSpec,
    generate,
    mean_altitude_km,
    parse_constellation_spec,
    sun_synchronous_inclination_deg,
)
from groundplane.orbit.elements import ElementSet, format_omm_json, parse_omm_json

EPOCH = datetime(2026, 8, 15, 6, 30, tzinfo=UTC)
ONE_MINUTE_H = 1.0 / 60.0
ONE_PERCENT = 0.01


def _angle_gap_deg(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_walker_layout_follows_t_p_f() -> None:
    """walker:1584/72/1: 72 planes 5° apart, 22 per plane 360/22° apart, phase 360·F/T."""
    sats = generate("walker:1584/72/1@550km:53", EPOCH)
    assert len(sats) == 1584
    assert sats[0].catalog_id == "walker-0001"
    assert sats[-1].catalog_id == "walker-1584"
    assert len({s.catalog_id for s in sats}) == 1584
    planes = [sats[i : i + 22] for i in range(0, 1584, 22)]
    for j, plane in enumerate(planes):
        assert all(s.raan_deg == pytest.approx(5.0 * j) for s in plane)
        for k, sat in enumerate(plane):
            assert sat.inclination_deg == 53.0
            expected = 360.0 * k / 22 + 360.0 * 1 * j / 1584
            assert _angle_gap_deg(sat.mean_anomaly_deg, expected) < 1e-9
    # Neighbouring planes are offset by the phasing angle 360·F/T.
    offset = _angle_gap_deg(planes[1][0].mean_anomaly_deg, planes[0][0].mean_anomaly_deg)
    assert offset == pytest.approx(360.0 / 1584)


def test_walker_altitude_is_the_propagated_mean_altitude() -> None:
    """Several satellites propagated over an orbit average within tolerance of 550 km."""
    sats = generate("walker:60/6/2@550km:53", EPOCH)
    for sat in sats[::13]:
        assert abs(mean_altitude_km(sat) - 550.0) < ALTITUDE_TOLERANCE_KM


@pytest.mark.parametrize(
    ("altitude_km", "inclination_deg"), [(350.0, 30.0), (1200.0, 87.9), (20_200.0, 55.0)]
)
def test_mean_motion_matches_kepler_at_the_requested_altitude(
    altitude_km: float, inclination_deg: float
) -> None:
    """Mean motion is within 1 % of Kepler's for a = R + h, and SGP4's mean axis near R + h."""
    (sat,) = generate(WalkerSpec(1, 1, 0, altitude_km, inclination_deg), EPOCH)
    a_km = EARTH_RADIUS_KM + altitude_km
    kepler_rev_per_day = math.sqrt(EARTH_MU_KM3_S2 / a_km**3) * 86_400.0 / (2.0 * math.pi)
    assert sat.mean_motion_rev_per_day == pytest.approx(kepler_rev_per_day, rel=ONE_PERCENT)
    satrec = sat.to_satrec()
    assert abs(satrec.a * EARTH_RADIUS_KM - a_km) < 10.0
    assert abs(mean_altitude_km(sat) - altitude_km) < ALTITUDE_TOLERANCE_KM


def test_sso_node_turns_with_the_sun() -> None:
    """SSO inclination at 550 km is ~97.6° and SGP4's node rate is 360° per year within 1 %."""
    sats = generate("sso:12@550km:10.5", EPOCH)
    assert len(sats) == 12
    assert sats[0].catalog_id == "sso-0001"
    inclination = sats[0].inclination_deg
    assert 97.4 < inclination < 97.8
    assert inclination == sun_synchronous_inclination_deg(550.0)
    node_rate_rev_per_year = sats[0].to_satrec().nodedot * 1440.0 * 365.2421897 / (2 * math.pi)
    assert node_rate_rev_per_year == pytest.approx(1.0, rel=ONE_PERCENT)
    spacing = {
        round((b.mean_anomaly_deg - a.mean_anomaly_deg) % 360.0, 9)
        for a, b in itertools.pairwise(sats)
    }
    assert spacing == {30.0}
    assert abs(mean_altitude_km(sats[3]) - 550.0) < ALTITUDE_TOLERANCE_KM


def test_sso_ascending_node_is_at_the_requested_local_time() -> None:
    """At the first ascending node, local mean time (Skyfield GMST) is 10:30 within a minute."""
    (sat,) = generate("sso:1@600km:10.5", EPOCH)
    satrec = sat.to_satrec()
    minutes = np.linspace(-20.0, 20.0, 4001)
    jd = np.full_like(minutes, satrec.jdsatepoch)
    fr = satrec.jdsatepochF + minutes / 1440.0
    errors, positions, _ = satrec.sgp4_array(jd, fr)
    assert not np.any(errors)
    z = positions[:, 2]
    crossings = np.nonzero((z[:-1] < 0) & (z[1:] >= 0))[0]
    assert crossings.size == 1
    i = int(crossings[0])
    t = fr[i] + (fr[i + 1] - fr[i]) * (-z[i] / (z[i + 1] - z[i]))
    x, y = positions[i, 0], positions[i, 1]
    node_ra_hours = math.degrees(math.atan2(y, x)) / 15.0
    ts = load.timescale()
    when = ts.ut1_jd(satrec.jdsatepoch + t)
    ut_hours = ((satrec.jdsatepoch + t + 0.5) % 1.0) * 24.0
    local_time = (ut_hours + node_ra_hours - when.gmst) % 24.0
    assert abs(local_time - 10.5) < ONE_MINUTE_H


def test_spec_strings_parse_to_specs() -> None:
    """Both grammars parse, with optional units, spaces and case."""
    assert parse_constellation_spec("walker:1584/72/1@550km:53") == WalkerSpec(
        1584, 72, 1, 550.0, 53.0
    )
    assert parse_constellation_spec(" Walker: 24/3/1 @ 20200 : 56deg ") == WalkerSpec(
        24, 3, 1, 20200.0, 56.0
    )
    assert parse_constellation_spec("sso:12@550km:10.5") == SunSynchronousSpec(12, 550.0, 10.5)
    assert parse_constellation_spec("SSO:4@500:22.25h") == SunSynchronousSpec(4, 500.0, 22.25)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("walker:1584/71/1@550km:53", "divisible by planes 71.*48, 66, 72, 88"),
        ("walker:24/3/3@550km:53", r"phasing must be 0 … planes-1 \(2\)"),
        ("walker:24/3/1@120km:53", "altitude_km must be 150"),
        ("walker:24/3/1@550km:190", r"inclination_deg must be in \[0, 180\]"),
        ("walker:24/3@550km:53", r"walker:<total>/<planes>/<phasing>@<altitude>km"),
        ("walker:0/1/0@550km:53", "total must be 1"),
        ("sso:4@7000km:10", "no sun-synchronous orbit exists at 7000 km"),
        ("sso:4@550km:24", r"ltan_hours .* must be in \[0, 24\)"),
        ("sso:4@550km", r"sso:<count>@<altitude>km:<ltan_hours>"),
        ("star:4@550km:10", "starting 'walker:' or 'sso:'"),
    ],
)
def test_bad_specs_teach_the_grammar(spec: str, expected: str) -> None:
    """Every malformed or impossible spec raises InvalidArgument saying what is expected."""
    with pytest.raises(InvalidArgument, match=expected):
        generate(spec, EPOCH)


def test_synthetic_ids_prefixes_and_export() -> None:
    """id_prefix keeps constellations apart; ids survive OMM but refuse TLE export."""
    a = generate("sso:2@550km:10", EPOCH, id_prefix="alpha")
    b = generate("sso:2@550km:22", EPOCH, id_prefix="beta")
    assert [s.catalog_id for s in a + b] == ["alpha-0001", "alpha-0002", "beta-0001", "beta-0002"]
    assert parse_omm_json(format_omm_json(a)) == a
    assert all(s.satnum == 0 for s in a)
    with pytest.raises(InvalidArgument, match="epoch must be a timezone-aware"):
        generate("sso:2@550km:10", datetime(2026, 8, 15))


@settings(max_examples=15, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda planes: st.tuples(
            st.just(planes),
            st.integers(1, 6),
            st.integers(0, planes - 1),
            st.floats(300.0, 2000.0),
            st.floats(0.0, 180.0),
        )
    )
)
def test_random_walker_shells_hit_their_altitude(
    params: tuple[int, int, int, float, float],
) -> None:
    """Any valid Walker shell has T unique ids and a propagated mean altitude within tolerance."""
    planes, per_plane, phasing, altitude_km, inclination_deg = params
    spec = WalkerSpec(planes * per_plane, planes, phasing, altitude_km, inclination_deg)
    sats: list[ElementSet] = generate(spec, EPOCH)
    assert len({s.catalog_id for s in sats}) == spec.total
    assert abs(mean_altitude_km(sats[-1]) - altitude_km) < ALTITUDE_TOLERANCE_KM
