"""A short property run of every fuzz target under hypothesis (random and shrunk byte strings,
a few hundred per parser target): the campaign's oracle, checked on every CI run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .targets import SERVICER_TARGETS, TARGETS, entry

PARSER_TARGETS = [t for t in TARGETS if t not in SERVICER_TARGETS]


def _run(target: str, examples: int) -> None:
    test_one_input = entry(target)

    @settings(
        max_examples=examples,
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(st.binary(max_size=2048))
    def property_(data: bytes) -> None:
        test_one_input(data)

    property_()


@pytest.mark.parametrize("target", PARSER_TARGETS)
def test_parser_target_holds_under_hypothesis(target: str) -> None:
    """Random inputs to a parser or wire decoder raise nothing but documented errors."""
    _run(target, 300)


@pytest.mark.parametrize("target", SERVICER_TARGETS)
def test_servicer_target_holds_under_hypothesis(target: str) -> None:
    """Random requests to a real servicer are never answered INTERNAL or UNKNOWN, nor hang."""
    _run(target, 100)
