"""The checkout itself: the licence the package declares, and the files groundplane writes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
"""SHA-256 of the standard Apache License 2.0 text (apache.org's LICENSE-2.0.txt)."""
COPYRIGHT = "   Copyright 2026 the groundplane authors"
TEMPLATE = "   Copyright [yyyy] [name of copyright owner]"


def test_license_is_the_full_apache_2_0_text_and_the_package_declares_it() -> None:
    """LICENSE is the standard Apache 2.0 text with the project's copyright line in the appendix,
    pyproject declares Apache-2.0 and ships LICENSE as its licence file."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert COPYRIGHT in text.splitlines()
    standard = text.replace(COPYRIGHT, TEMPLATE, 1)
    assert hashlib.sha256(standard.encode("utf-8")).hexdigest() == APACHE_2_0_SHA256
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


@pytest.mark.parametrize(
    "path",
    [
        "handoff.sqlite",
        "tracking.sqlite3",
        "summary.json",
        "summary-60x.json",
        "trace.jsonl",
        "trace-run2.jsonl",
    ],
)
def test_files_groundplane_writes_in_a_checkout_are_ignored(path: str, tmp_path: Path) -> None:
    """What `up --data-dir .`, `--summary`, `--trace` and `serve tracking --db` write under their
    usual names in the checkout is ignored by the repository's .gitignore (judged by git in a
    scratch repository holding that file, so the test runs in any copy of the tree)."""
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    result = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "--no-index", "-q", path],
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, f"{path} is not ignored by .gitignore"
