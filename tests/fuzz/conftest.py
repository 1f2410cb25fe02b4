from __future__ import annotations

from collections.abc import Iterator

import pytest

from .targets import close_servicers


@pytest.fixture(scope="module", autouse=True)
def _servicers_stopped() -> Iterator[None]:
    """The servicer targets' in-process servers are stopped when a test module is done."""
    yield
    close_servicers()
