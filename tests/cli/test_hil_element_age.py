"""`groundplane hil --max-element-age-days`: stale elements refused by default, used on request.

The run with the flag follows a real pass with Hamlib's dummy rotator (``rotctld -m 1``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from groundplane.cli.main import main

from ..hil.conftest import CATALOG, HamlibDaemon, start_daemon

#: Seven weeks after the ISS elements' epoch (2026-08-16), a minute before a low pass over 52° N.
LATE = "2026-10-01T10:09:30Z"
ARGS = ["hil", "--elements", str(CATALOG), "--sat", "25544", "--site", "52,0", "--start", LATE]


@pytest.fixture
def rotctld() -> Iterator[HamlibDaemon]:
    if shutil.which("rotctld") is None:
        pytest.skip("rotctld not installed (apt-get install libhamlib-utils)")
    started: list[HamlibDaemon] = []
    yield start_daemon("rotctld", None, started)
    for daemon in started:
        daemon.kill()


def test_hil_refuses_stale_elements_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Elements 47 days old are refused before any daemon is contacted (nothing listens on the
    rotator port); the message names --max-element-age-days and that hil takes it."""
    assert main([*ARGS, "--rotctld", "127.0.0.1:9"]) == 2
    captured = capsys.readouterr()
    assert "pass:" not in captured.out
    assert "--max-element-age-days" in captured.err
    assert "hil" in captured.err.split("--max-element-age-days", 1)[1]
    assert "planning is refused beyond 14 days" in captured.err


@pytest.mark.slow
def test_hil_tracks_with_stale_elements_when_allowed(
    rotctld: HamlibDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --max-element-age-days 100 the same elements plan the pass (with the age warning
    kept), the rotator follows it at 200× and the command exits 0 after parking."""
    argv = [*ARGS, "--rotctld", f"127.0.0.1:{rotctld.port}", "--speed", "200"]
    assert main([*argv, "--max-element-age-days", "100"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("pass: 25544 AOS 2026-10-01T10:10")
    assert lines[-1].startswith("finished: parked")
    assert "warning: elements of 25544" in captured.err
    assert "refused" not in captured.err
