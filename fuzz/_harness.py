"""The shared runner of the fuzz targets in this folder (see docs/security.md, "Fuzzing").

Each target is one file ``fuzz/<target>.py`` defining ``test_one_input(data: bytes) -> None``
and ending with ``if __name__ == "__main__": main(test_one_input)``. Run one as

    nice -n 10 .venv/bin/python fuzz/<target>.py fuzz/corpus/<target> -atheris_runs=1000000

(any libFuzzer flag works: ``-max_total_time=600``, ``-jobs``…). The oracle lives in each
target: it lets only the documented errors escape (:class:`GroundplaneError`, the project's
error tree), so any other exception (ValueError, RecursionError, OverflowError, IndexError, …)
propagates and libFuzzer records the input as a crash.

The same ``test_one_input`` is what ``tests/fuzz`` replays over the committed corpus and drives
with hypothesis, so CI checks exactly what the campaign checked.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from groundplane.kernel.errors import GroundplaneError

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASHES_DIR = FUZZ_DIR / "crashes"

#: The errors a parser or servicer may raise for hostile input: the documented error tree.
DOCUMENTED = (GroundplaneError,)


def fuzzing() -> bool:
    """True when a target runs as ``python fuzz/<target>.py`` (the campaign), not under pytest."""
    return Path(sys.argv[0]).resolve().parent == FUZZ_DIR


def instrumented() -> contextlib.AbstractContextManager[None]:
    """``atheris.instrument_imports()`` for the groundplane modules imported in the block when
    fuzzing (coverage feedback); nothing under pytest, which replays without atheris' tracing."""
    if not fuzzing():
        return contextlib.nullcontext()
    import atheris  # noqa: PLC0415 - only the campaign needs atheris loaded

    manager: contextlib.AbstractContextManager[None] = atheris.instrument_imports(
        include=["groundplane"]
    )
    return manager


def documented_errors_only() -> contextlib.AbstractContextManager[None]:
    """Swallow the documented errors; anything else escapes and is a crash."""
    return contextlib.suppress(*DOCUMENTED)


def text_of(data: bytes) -> str:
    """The bytes as text the way a service receives them (protobuf ``string`` fields and HTTP
    bodies are UTF-8; undecodable bytes become U+FFFD, as a lenient decoder would do)."""
    return data.decode("utf-8", errors="replace")


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris with the command line's libFuzzer arguments."""
    import atheris  # noqa: PLC0415 - only the campaign needs atheris loaded

    # libFuzzer re-runs argv[0] through the shell for -merge=1 and -fork; name the interpreter
    # too, so a target needs no executable bit or shebang (and runs in the venv it started in).
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(sys.argv[0]).resolve()))}"
    atheris.Setup([command, *sys.argv[1:]], test_one_input)
    atheris.Fuzz()
