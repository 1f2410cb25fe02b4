"""Progress on long CLI work: a rich progress bar on a terminal, nothing when piped.

``passes``, ``plot`` and other commands that work through a large catalog in chunks report how
far they are with :func:`progress_bar`. rich is imported only when the stream is a terminal, so a
piped run (the usual case for ``--format json > file``) pays nothing at start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO


def _silent(done: int) -> None:
    """The advance callback of a run that shows no progress."""


@contextmanager
def progress_bar(
    label: str, total: int, *, enabled: bool = True, stream: IO[str] | None = None
) -> Iterator[Callable[[int], None]]:
    """A callback ``advance(done)`` reporting ``done`` of ``total`` items under ``label``.

    The bar is drawn on ``stream`` (standard error by default) only when ``enabled`` and the
    stream is a terminal; it is removed when the work ends, so the terminal keeps only the
    command's own output.
    """
    out = sys.stderr if stream is None else stream
    if not enabled or total <= 0 or not out.isatty():
        yield _silent
        return
    from rich.console import Console  # noqa: PLC0415 - only on a terminal (start-up of piped runs)
    from rich.progress import (  # noqa: PLC0415 - as above
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=out, force_terminal=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(done: int) -> None:
            bar.update(task, completed=done)
            # A chunk may take seconds: draw now instead of waiting for the refresh thread.
            bar.refresh()

        yield advance
