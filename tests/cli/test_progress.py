"""The CLI's progress bar: drawn on a terminal, absent when the output is piped."""

from __future__ import annotations

import io

from groundplane.cli.progress import progress_bar


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_bar_reach_the_total() -> None:
    """On a terminal the bar shows its label and the count of items done out of the total."""
    out = _Terminal()
    with progress_bar("passes: satellites", 40, stream=out) as advance:
        for done in (10, 25, 40):
            advance(done)
    text = out.getvalue()
    assert "passes: satellites" in text
    assert "40/40" in text


def test_a_pipe_gets_nothing() -> None:
    """A stream that is not a terminal gets no bytes, and disabled progress neither."""
    piped = io.StringIO()
    with progress_bar("passes: satellites", 40, stream=piped) as advance:
        advance(40)
    assert piped.getvalue() == ""
    terminal = _Terminal()
    with progress_bar("passes: satellites", 40, enabled=False, stream=terminal) as advance:
        advance(40)
    assert terminal.getvalue() == ""
