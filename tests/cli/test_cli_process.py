"""The installed ``groundplane`` command as a process: version, bare command, broken pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from ..data import DATA

#: The console script installed next to the interpreter running the tests.
GROUNDPLANE = str(Path(sys.executable).with_name("groundplane"))
ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: Generous: a cold start imports numpy, grpc and sgp4 on a shared 2-core machine.
PROCESS_TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    not Path(GROUNDPLANE).exists(), reason=f"console script missing at {GROUNDPLANE}"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GROUNDPLANE, *args], check=False, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
    )


def test_version_is_the_installed_package_version() -> None:
    """``groundplane --version`` prints the version from the package metadata and exits 0."""
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"groundplane {version('groundplane')}"


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ([], ["passes", "serve", "up", "--version"]),
        (["serve"], ["tracking", "hil"]),
    ],
)
def test_a_command_group_without_a_command_prints_its_help(
    argv: list[str], mentions: list[str]
) -> None:
    """Bare ``groundplane`` (and bare ``groundplane serve``) print their help on stdout and exit
    0 instead of failing with a usage error."""
    result = _run(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: groundplane")
    for word in mentions:
        assert word in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("output_format", ["table", "csv", "json"])
def test_a_closed_stdout_ends_the_command_quietly(output_format: str) -> None:
    """With nobody reading stdout (``groundplane passes … | head`` after head has exited) the
    command prints nothing on stderr (no ``[Errno 32] Broken pipe``, no traceback) and exits 1.

    The pipe's read end is closed before the process starts, so its first write fails: the
    outcome does not depend on timing or on the pipe buffer's size.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [
                GROUNDPLANE,
                "passes",
                "--elements",
                ELEMENTS,
                "--site",
                "52.2,0.1",
                "--start",
                "2026-08-15T00:00:00Z",
                "--hours",
                "24",
                "--sat",
                "25544",
                "--format",
                output_format,
            ],
            check=False,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1
