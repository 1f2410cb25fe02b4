"""The one finite-number check: what counts as a number, and the error that names the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.validation import finite_number
from groundplane.orbit.elements import ElementError


@pytest.mark.parametrize("value", [3, -2.5, 0.0, np.float32(1.5), np.int64(7), np.float64(-1e300)])
def test_real_numbers_come_back_as_floats(value: object) -> None:
    """int, float and numpy real scalars are numbers: the same value comes back as a float."""
    number = finite_number("x", value)
    assert type(number) is float
    assert number == float(value)  # type: ignore[arg-type]  # value is one of the reals above


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (math.nan, "must be a finite number, got nan"),
        (math.inf, "must be a finite number, got inf"),
        (-math.inf, "must be a finite number, got -inf"),
        (True, "must be a number, got True"),
        ("1.5", "must be a number, got '1.5'"),
        (None, "must be a number, got None"),
    ],
)
def test_non_numbers_and_non_finite_values_are_refused_naming_the_field(
    value: object, says: str
) -> None:
    """NaN, ±inf, booleans, text and None are INVALID_ARGUMENT naming the field and the value."""
    with pytest.raises(InvalidArgument) as refused:
        finite_number("site 'x' lat_deg", value)
    assert refused.value.message == f"site 'x' lat_deg {says}"


def test_a_domain_error_subclass_is_raised_when_asked() -> None:
    """A domain passes its own InvalidArgument subclass (element sets raise ElementError)."""
    with pytest.raises(ElementError, match="eccentricity must be a finite number"):
        finite_number("eccentricity", math.nan, error=ElementError)
