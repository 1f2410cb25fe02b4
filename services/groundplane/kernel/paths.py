"""Where groundplane keeps state on this machine.

Persistent files a user did not place themselves (the tracking catalog of ``groundplane serve
tracking``) live in the state directory of the XDG Base Directory specification:
``$XDG_STATE_HOME/groundplane``, or ``~/.local/state/groundplane`` when ``XDG_STATE_HOME`` is
unset, empty or not an absolute path (the specification says to ignore relative values).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

APP_DIR_NAME = "groundplane"
STATE_HOME_ENV = "XDG_STATE_HOME"


def state_dir(environ: Mapping[str, str], home: Path) -> Path:
    """groundplane's state directory for this environment and home directory (not created)."""
    configured = environ.get(STATE_HOME_ENV, "")
    if configured and Path(configured).is_absolute():
        return Path(configured) / APP_DIR_NAME
    return home / ".local" / "state" / APP_DIR_NAME


def ensure_dir(path: Path) -> Path:
    """``path`` as a directory, created (with its parents) if missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path
