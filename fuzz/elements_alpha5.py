"""Fuzz target: Alpha-5 catalog numbers and catalog ids (``alpha5_to_number``,
``number_to_alpha5``, ``canonical_catalog_id`` for strings and integers, ``catalog_number``).

Oracle: only ``GroundplaneError`` may escape; a number that converts to Alpha-5 converts back
to itself, and a canonical id is a fixed point of ``canonical_catalog_id``.
"""

from __future__ import annotations

from _harness import documented_errors_only, instrumented, main, text_of

with instrumented():
    from groundplane.orbit import elements


def test_one_input(data: bytes) -> None:
    text = text_of(data)
    with documented_errors_only():
        elements.alpha5_to_number(text)
    with documented_errors_only():
        canonical = elements.canonical_catalog_id(text)
        assert elements.canonical_catalog_id(canonical) == canonical, (text, canonical)
        elements.catalog_number(canonical)
    number = int.from_bytes(data[:8], "big", signed=True)
    with documented_errors_only():
        field = elements.number_to_alpha5(number)
        assert elements.alpha5_to_number(field) == number, (number, field)
    with documented_errors_only():
        elements.canonical_catalog_id(number)


if __name__ == "__main__":
    main(test_one_input)
