"""Pass planning against rotator limits: direct, overwind, flip, clamped, and the threshold."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundplane.hil.hamlib import RotatorLimits
from groundplane.hil.rotator import (
    PassPlan,
    PassSample,
    angular_separation_deg,
    plan_pass,
    pointing_of,
    safe_command,
)
from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.sites import HorizonMask, Site

from .conftest import PassFixture

AOS = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
SITE = Site("test", 45.0, 7.0, 300.0, min_elevation_deg=0.0)
#: A command step between 1 s samples larger than this would be a mid-pass unwind.
MAX_STEP_DEG = 10.0
TINY_DEG = 1e-6

ROT_0_360 = RotatorLimits(0.0, 360.0, 0.0, 90.0)
ROT_0_360_FLIP = RotatorLimits(0.0, 360.0, 0.0, 180.0)
ROT_0_450 = RotatorLimits(0.0, 450.0, 0.0, 90.0)
ROT_PM180 = RotatorLimits(-180.0, 180.0, 0.0, 90.0)


def synthetic_pass(
    start_az_deg: float, sweep_deg: float, max_el_deg: float = 40.0, duration_s: int = 600
) -> list[PassSample]:
    """Azimuth sweeping linearly by ``sweep_deg`` (positive = clockwise), elevation a hump."""
    out = []
    for second in range(duration_s + 1):
        fraction = second / duration_s
        out.append(
            PassSample(
                AOS + timedelta(seconds=second),
                (start_az_deg + sweep_deg * fraction) % 360.0,
                max_el_deg * math.sin(math.pi * fraction),
            )
        )
    return out


def commands(plan: PassPlan, samples: list[PassSample]) -> np.ndarray:
    return np.array([plan.command_for(s.at, s.azimuth_deg, s.elevation_deg) for s in samples])


def assert_no_unwind(cmds: np.ndarray) -> None:
    steps = np.abs(np.diff(cmds[:, 0]))
    assert float(np.max(steps)) < MAX_STEP_DEG, f"azimuth jumps {float(np.max(steps)):.1f}°"


def assert_points_at(cmds: np.ndarray, samples: list[PassSample], tolerance_deg: float) -> None:
    for (az, el), sample in zip(cmds, samples, strict=True):
        geo = pointing_of(float(az), float(el))
        error = angular_separation_deg(sample.azimuth_deg, sample.elevation_deg, *geo)
        assert error <= tolerance_deg, (sample, geo)


def test_pass_not_crossing_a_stop_is_followed_directly() -> None:
    """A pass from 100° to 200° on a 0–360° rotator is commanded at the satellite's azimuth."""
    samples = synthetic_pass(100.0, 100.0)
    plan = plan_pass(samples, ROT_0_360, SITE)
    assert plan.mode == "direct"
    assert not plan.flip
    cmds = commands(plan, samples)
    assert_points_at(cmds, samples, TINY_DEG)
    assert plan.preposition == pytest.approx((100.0, 0.0))


def test_crossing_north_on_0_360_with_elevation_to_180_flips() -> None:
    """A pass 300°→60° through north on a 0–360°/0–180° rotator flips over the top instead."""
    samples = synthetic_pass(300.0, 120.0, max_el_deg=60.0)
    plan = plan_pass(samples, ROT_0_360_FLIP, SITE)
    assert plan.mode == "flip"
    cmds = commands(plan, samples)
    assert_no_unwind(cmds)
    assert float(np.min(cmds[:, 1])) >= 90.0 - TINY_DEG  # always over the top
    assert float(np.min(cmds[:, 0])) >= 120.0 - TINY_DEG  # 300+180-360 = 120 ... 240
    assert float(np.max(cmds[:, 0])) <= 240.0 + TINY_DEG
    assert_points_at(cmds, samples, TINY_DEG)


def test_crossing_north_on_0_360_without_flip_picks_the_side_before_aos() -> None:
    """With 0–360°/0–90° nothing fits: the planner never unwinds mid-pass, it pre-positions
    on the side of north where the pass spends longer and waits at the stop for the rest."""
    # 340° → 100°: 20° before north, 100° after; the long side is east of north.
    samples = synthetic_pass(340.0, 120.0)
    plan = plan_pass(samples, ROT_0_360, SITE)
    assert plan.mode == "clamped"
    cmds = commands(plan, samples)
    assert_no_unwind(cmds)
    assert plan.preposition[0] == pytest.approx(0.0)  # waits at the 0° stop, east side
    assert float(np.max(cmds[:, 0])) <= 100.0 + TINY_DEG
    # The short side (first 20° of azimuth) is lost; the rest is followed exactly.
    after_north = [i for i, s in enumerate(samples) if 0.0 <= s.azimuth_deg <= 100.0]
    assert_points_at(cmds[after_north], [samples[i] for i in after_north], TINY_DEG)
    assert 0.0 < plan.clamped_fraction < 0.5
    # Mirror image: 260° → 20°, the long side is west of north, so it waits at 360°.
    mirror = synthetic_pass(260.0, 120.0)
    mirror_plan = plan_pass(mirror, ROT_0_360, SITE)
    assert mirror_plan.mode == "clamped"
    assert_no_unwind(commands(mirror_plan, mirror))
    assert float(np.max(commands(mirror_plan, mirror)[:, 0])) == pytest.approx(360.0)


def test_crossing_north_on_0_450_overwinds() -> None:
    """A pass 300°→60° through north on a 0–450° rotator runs continuously 300°→420°."""
    samples = synthetic_pass(300.0, 120.0)
    plan = plan_pass(samples, ROT_0_450, SITE)
    assert plan.mode == "overwind"
    assert not plan.flip
    cmds = commands(plan, samples)
    assert_no_unwind(cmds)
    assert cmds[0, 0] == pytest.approx(300.0)
    assert cmds[-1, 0] == pytest.approx(420.0)
    assert_points_at(cmds, samples, TINY_DEG)


def test_counter_clockwise_pass_through_north_on_0_450() -> None:
    """A pass 40°→280° anticlockwise through north on 0–450° is followed 400°→280°."""
    samples = synthetic_pass(40.0, -120.0)
    plan = plan_pass(samples, ROT_0_450, SITE)
    assert plan.mode == "overwind"
    cmds = commands(plan, samples)
    assert_no_unwind(cmds)
    assert cmds[0, 0] == pytest.approx(400.0)
    assert cmds[-1, 0] == pytest.approx(280.0)


def test_overwind_rotator_prefers_least_preposition_slew() -> None:
    """A pass 10°→60° fits twice on 0–450° (10° and 370°); the plan takes the one nearest."""
    samples = synthetic_pass(10.0, 50.0)
    near_zero = plan_pass(samples, ROT_0_450, SITE, current_azimuth_deg=0.0)
    near_400 = plan_pass(samples, ROT_0_450, SITE, current_azimuth_deg=400.0)
    assert near_zero.preposition[0] == pytest.approx(10.0)
    assert near_400.preposition[0] == pytest.approx(370.0)
    assert near_zero.mode == "direct"
    assert near_400.mode == "overwind"


def test_plus_minus_180_rotator_crossing_north_is_direct() -> None:
    """On a −180..180° rotator a pass 300°→60° is followed −60°→60° without a stop."""
    samples = synthetic_pass(300.0, 120.0)
    plan = plan_pass(samples, ROT_PM180, SITE)
    assert plan.mode == "direct"
    cmds = commands(plan, samples)
    assert_no_unwind(cmds)
    assert cmds[0, 0] == pytest.approx(-60.0)
    assert cmds[-1, 0] == pytest.approx(60.0)


def test_plus_minus_180_rotator_crossing_south_flips_or_clamps() -> None:
    """On −180..180° a pass 120°→240° crosses the stop: flip when elevation reaches 180°,
    else wait at the stop on the side with the longer part of the pass."""
    samples = synthetic_pass(120.0, 120.0, max_el_deg=70.0)
    flipped = plan_pass(samples, RotatorLimits(-180.0, 180.0, 0.0, 180.0), SITE)
    assert flipped.mode == "flip"
    cmds = commands(flipped, samples)
    assert_no_unwind(cmds)
    assert_points_at(cmds, samples, TINY_DEG)
    clamped = plan_pass(samples, ROT_PM180, SITE)
    assert clamped.mode == "clamped"
    assert_no_unwind(commands(clamped, samples))


def test_real_iss_pass_crossing_north(wallops_pass: PassFixture) -> None:
    """The real ISS pass over Wallops (301°→43° through north) overwinds on 0–450° and
    flips on 0–360°/0–180°, following the satellite to 1e-6° in both."""
    tracked = wallops_pass.tracked()
    samples = list(tracked.samples)
    overwind = plan_pass(samples, ROT_0_450, wallops_pass.site)
    assert overwind.mode == "overwind"
    cmds = commands(overwind, samples)
    assert_no_unwind(cmds)
    assert float(np.max(cmds[:, 0])) > 360.0
    assert_points_at(cmds, samples, TINY_DEG)
    flip = plan_pass(samples, ROT_0_360_FLIP, wallops_pass.site)
    assert flip.mode == "flip"
    assert_points_at(commands(flip, samples), samples, TINY_DEG)


MASKED = Site(
    "masked",
    45.0,
    7.0,
    min_elevation_deg=5.0,
    mask=HorizonMask.from_points([(0.0, 10.0), (90.0, 20.0), (180.0, 2.0), (270.0, 12.0)]),
)


@settings(max_examples=200, deadline=None)
@given(
    az=st.floats(-720.0, 720.0),
    el=st.floats(-90.0, 180.0),
    min_az=st.sampled_from([-180.0, 0.0, 90.0]),
    span=st.sampled_from([180.0, 360.0, 450.0]),
    max_el=st.sampled_from([90.0, 180.0]),
)
def test_safe_command_never_leaves_limits_nor_points_below_threshold(
    az: float, el: float, min_az: float, span: float, max_el: float
) -> None:
    """Any requested position becomes one inside the limits, pointing at or above the mask."""
    limits = RotatorLimits(min_az, min_az + span, 0.0, max_el)
    cmd_az, cmd_el = safe_command(limits, MASKED, az, el)
    assert limits.contains(cmd_az, cmd_el)
    geo_az, geo_el = pointing_of(cmd_az, cmd_el)
    assert geo_el >= float(MASKED.threshold_deg(geo_az)) - TINY_DEG


def test_command_lifts_low_satellite_to_the_mask() -> None:
    """Below the mask the antenna waits at the mask elevation of the satellite's azimuth."""
    samples = synthetic_pass(80.0, 20.0, max_el_deg=30.0)
    plan = plan_pass(samples, ROT_0_360, MASKED)
    az, el = plan.command_for(samples[0].at, 90.0, 3.0)
    assert az == pytest.approx(90.0)
    assert el == pytest.approx(20.0)  # mask at 90° is 20°, above the 5° minimum
    assert plan.preposition[1] == pytest.approx(float(MASKED.threshold_deg(80.0)))


def test_bad_inputs_teach() -> None:
    """Too few samples, out-of-order samples and impossible limits are InvalidArgument."""
    samples = synthetic_pass(100.0, 10.0)
    with pytest.raises(InvalidArgument, match="at least 2"):
        plan_pass(samples[:1], ROT_0_360, SITE)
    with pytest.raises(InvalidArgument, match="increasing time"):
        plan_pass([samples[1], samples[0]], ROT_0_360, SITE)
    with pytest.raises(InvalidArgument, match="min < max"):
        RotatorLimits(10.0, 0.0, 0.0, 90.0)
    high_mask = Site("high", 0.0, 0.0, min_elevation_deg=50.0)
    with pytest.raises(InvalidArgument, match="rotator stops at 45"):
        plan_pass(samples, RotatorLimits(0.0, 360.0, 0.0, 45.0), high_mask)
