"""Fuzz target: OMM XML (``parse_omm_xml``), and the auto-detecting ``parse_elements``.

Oracle: only ``ElementError``/``GroundplaneError`` may escape (RecursionError, ValueError
from int() of a long digit string, OverflowError, … are crashes).
"""

from __future__ import annotations

from _harness import documented_errors_only, instrumented, main, text_of

with instrumented():
    from groundplane.orbit import elements


def test_one_input(data: bytes) -> None:
    text = text_of(data)
    with documented_errors_only():
        elements.parse_omm_xml(text, "fuzz")
    with documented_errors_only():
        elements.parse_elements(text, "fuzz")


if __name__ == "__main__":
    main(test_one_input)
