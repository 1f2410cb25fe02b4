"""Fuzz target: TLE and 3LE text (``parse_tle``, ``parse_tle_lines``) and the export back.

Oracle: only :class:`ElementError`/``GroundplaneError`` may escape; an element set that parses
must also export (``to_tle_lines``) without anything else escaping, and re-parse to the same
catalog id.
"""

from __future__ import annotations

from _harness import documented_errors_only, instrumented, main, text_of

with instrumented():
    from groundplane.orbit import elements


def test_one_input(data: bytes) -> None:
    text = text_of(data)
    with documented_errors_only():
        for parsed in elements.parse_tle(text, "fuzz"):
            with documented_errors_only():
                line1, line2 = elements.to_tle_lines(parsed)
                again = elements.parse_tle_lines(line1, line2, parsed.name)
                assert again.catalog_id == parsed.catalog_id, (parsed, again)
    lines = text.splitlines()
    if len(lines) >= 2:
        with documented_errors_only():
            elements.parse_tle_lines(lines[0], lines[1], lines[2] if len(lines) > 2 else "")


if __name__ == "__main__":
    main(test_one_input)
