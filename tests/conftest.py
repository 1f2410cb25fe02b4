"""Suite-wide settings.

CI sets ``GROUNDPLANE_REQUIRE_ALL=1``: there every test must run, so a test that would skip
(Mosquitto or Hamlib's daemons missing) fails instead of letting the run go green with skips.
The data files the tests read are part of the repository (``data/``, found through
``tests/data.py``), so no test skips or fails for want of anything beside the clone.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRE_ALL = os.environ.get("GROUNDPLANE_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped ({report.longrepr}), but GROUNDPLANE_REQUIRE_ALL=1 "
            "requires every test to run: install what it needs"
        )
