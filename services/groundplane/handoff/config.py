"""The handoff manager's behaviour settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from groundplane.handoff.planner import HandoffSettings
from groundplane.kernel.errors import InvalidArgument

RETRY_CAP_S = 60.0
"""Longest pause (simulated s) before a session's or job's task retries after a bug."""


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Manager behaviour; times are simulated seconds unless named ``_wall_s``."""

    settings: HandoffSettings = field(default_factory=HandoffSettings)
    turn_attempt_s: float = 10.0
    """Deadline of one attempt of a turn on one node."""
    operation_s: float = 10.0
    """Deadline of one export/import."""
    replan_interval_s: float = 5.0
    """A plan is recomputed at least this often (the state grows with every turn)."""
    job_parallelism: int = 2
    job_item_estimate_s: float = 5.0
    """Initial estimate of one job item's duration (then measured)."""
    watch_queue: int = 10_000
    """Events a watcher may have waiting; a watcher further behind is ended (it may resume)."""
    session_idle_ttl_s: float = 3600.0
    """A session with no turn for this long (simulated seconds since its last answered turn, or
    since it was opened) is closed by the manager; 0 keeps idle sessions open forever."""

    def __post_init__(self) -> None:
        for name in ("turn_attempt_s", "operation_s", "replan_interval_s", "job_item_estimate_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.session_idle_ttl_s >= 0:
            raise InvalidArgument(
                f"session_idle_ttl_s must be ≥ 0 seconds (0 = never), got {self.session_idle_ttl_s}"
            )
        if self.job_parallelism < 1:
            raise InvalidArgument(f"job_parallelism must be ≥ 1, got {self.job_parallelism}")

    @property
    def pause_s(self) -> float:
        """The short pause: between polls of a waiting job, after a failed handoff, and the
        first before a task retries after a bug (then doubling up to :data:`RETRY_CAP_S`)."""
        return min(1.0, self.replan_interval_s)
