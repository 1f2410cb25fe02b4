"""Handoff planning: when to move a session, where to, and by which path (pure functions).

A session served by satellite ``S`` through station ``G`` must leave ``S`` before the pass
``(S, G)`` ends (LOS). Moving it means copying its state (``context tokens × bytes per token``)
to the successor, which takes ``state_bits / rate_bps`` on the link that carries it, so the
handoff starts at::

    plan time = LOS − (transfer time + lead margin)

The successor is picked among the passes in view at the plan time that last at least the
transfer time, the margin and the minimum dwell beyond it, scored by the routing policy
(:func:`groundplane.routing.policy.score`; longest remaining visibility by default). When none
qualifies the plan is a *checkpoint*: the state goes to the ground store and the session resumes
at the next AOS of a satellite that can serve it.

**Contention.** Sessions leaving one pass by one path share a link (:class:`LinkKey`: satellite,
station, path, LOS), which carries one transfer at a time. The caller keeps, per link, every
planned transfer's time; :func:`reserved_after_s` lays them out back to back in subject id order,
the last one ending at ``LOS − margin``, and gives each the time reserved after its own window.
That time goes to :func:`plan_handoff` as ``link_reserved_s``::

    plan time = LOS − (transfer time + lead margin + link_reserved_s)

so the ``k``-th of ``n`` sessions leaving together starts the sum of the later ones' transfer
times earlier than it would alone, and every transfer ends before LOS − margin. When that
earlier start comes before any successor is in view, the handoff starts when the first successor
rises instead (contention accepted rather than a needless checkpoint).

Nothing here reads a clock: every instant comes in as an argument.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import NamedTuple, Protocol

from groundplane.kernel.errors import InvalidArgument
from groundplane.links.client import LinkGeometry
from groundplane.orbit.passes import Pass
from groundplane.routing.client import Candidate, PolicyKind, RoutingPolicy, rank_order, score

DEFAULT_BYTES_PER_TOKEN = 131_072
"""The node engine's default modelled session bytes per token (kept equal on purpose)."""


@dataclass(frozen=True, slots=True)
class PassWindow:
    """A satellite in view of a station from ``aos`` to ``los`` (UTC)."""

    satellite_id: str
    station_id: str
    aos: datetime
    los: datetime
    max_elevation_deg: float = 45.0

    def __post_init__(self) -> None:
        if not self.los > self.aos:
            raise InvalidArgument(
                f"expected a pass window with LOS after AOS for {self.satellite_id!r} over "
                f"{self.station_id!r}, got AOS {self.aos.isoformat()} LOS {self.los.isoformat()}"
            )

    def covers(self, at: datetime) -> bool:
        return self.aos <= at < self.los

    def remaining_s(self, at: datetime) -> float:
        return (self.los - at).total_seconds()


class PassSource(Protocol):
    """Pass predictions: every window that overlaps ``[start, stop)``."""

    def windows(self, start: datetime, stop: datetime) -> Sequence[PassWindow]: ...


class PassSchedule:
    """A fixed list of pass windows (synthetic schedules, or passes predicted once by tracking)."""

    def __init__(self, windows: Iterable[PassWindow]) -> None:
        self._windows = sorted(windows, key=lambda w: (w.aos, w.satellite_id, w.station_id))
        self._aos = [w.aos for w in self._windows]
        self._longest_s = max((w.remaining_s(w.aos) for w in self._windows), default=0.0)

    @classmethod
    def from_passes(cls, passes: Iterable[Pass]) -> PassSchedule:
        """Windows from :func:`groundplane.orbit.passes.find_passes` results."""
        return cls(
            PassWindow(p.catalog_id, p.site_id, p.aos, p.los, p.max_elevation_deg)
            for p in passes
            if p.los > p.aos
        )

    @classmethod
    def periodic(  # noqa: PLR0913 - the schedule's shape (visible, period, stagger, count) by name
        cls,
        station_id: str,
        satellites: Sequence[str],
        start: datetime,
        *,
        visible_s: float,
        period_s: float,
        stagger_s: float,
        count: int,
    ) -> PassSchedule:
        """Satellite ``i`` is in view over ``[start + i·stagger + k·period, … + visible_s)``."""
        if not (visible_s > 0 and period_s >= visible_s and stagger_s >= 0 and count >= 1):
            raise InvalidArgument(
                "expected visible_s > 0, period_s ≥ visible_s, stagger_s ≥ 0 and count ≥ 1, got "
                f"{visible_s}, {period_s}, {stagger_s}, {count}"
            )
        windows = []
        for index, sat in enumerate(satellites):
            for k in range(count):
                aos = start + timedelta(seconds=index * stagger_s + k * period_s)
                windows.append(PassWindow(sat, station_id, aos, aos + timedelta(seconds=visible_s)))
        return cls(windows)

    @property
    def all(self) -> tuple[PassWindow, ...]:
        return tuple(self._windows)

    def windows(self, start: datetime, stop: datetime) -> list[PassWindow]:
        first = bisect.bisect_left(self._aos, start - timedelta(seconds=self._longest_s))
        last = bisect.bisect_left(self._aos, stop)
        return [w for w in self._windows[first:last] if w.los > start]

    def ground_geometry(
        self, range_km: float = 1_200.0
    ) -> Callable[[datetime], dict[tuple[str, str], LinkGeometry]]:
        """A link emulator geometry provider that puts every window's link up while it lasts."""

        def provide(at: datetime) -> dict[tuple[str, str], LinkGeometry]:
            return {
                (w.station_id, w.satellite_id): LinkGeometry(True, range_km, w.max_elevation_deg)
                for w in self.windows(at, at + timedelta(microseconds=1))
                if w.covers(at)
            }

        return provide


class TransferPath(Enum):
    """How the state reaches the successor."""

    NONE = "none"
    """Same satellite through another station: nothing moves."""
    ISL = "isl"
    """Satellite to satellite over an inter-satellite link."""
    GROUND = "ground"
    """Down from the old satellite via its station, up to the new one via its station."""


class PathPreference(Enum):
    ISL_FIRST = "isl-first"
    GROUND_ONLY = "ground-only"


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    """What an operator tunes.

    ``lead_margin_s`` is added to the transfer time before LOS; ``min_dwell_s`` is the least time
    a successor must stay in view after the switch; ``ground_rate_bps`` / ``isl_rate_bps`` size
    transfers; ``bytes_per_token`` gives each model's modelled state size per context token.
    """

    lead_margin_s: float = 2.0
    min_dwell_s: float = 5.0
    policy: RoutingPolicy = field(
        default_factory=lambda: RoutingPolicy(kind=PolicyKind.LONGEST_VISIBILITY, stickiness=None)
    )
    path_preference: PathPreference = PathPreference.ISL_FIRST
    ground_rate_bps: float = 100e6
    isl_rate_bps: float = 1e9
    bytes_per_token: Mapping[str, int] = field(default_factory=dict)
    default_bytes_per_token: int = DEFAULT_BYTES_PER_TOKEN
    horizon_s: float = 6 * 3600.0
    """How far ahead to look for the next AOS."""
    energy_aware: bool = False
    """Respect the nodes' reported energy (``coverage.py``): no successor or job node that is
    throttled or whose bus alone would take its battery below the reserve before sunlight; job
    items wait up to ``job_sunlight_wait_s`` for a sunlit node."""
    job_sunlight_wait_s: float = 1800.0
    """How long a batch job may wait for a sunlit node (about one eclipse) before it takes any
    fit node: jobs carry no deadline of their own, so this bounds the deferral."""

    def __post_init__(self) -> None:
        for name in ("lead_margin_s", "min_dwell_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"{name} must be a finite number ≥ 0 seconds, got {value}")
        for name in ("ground_rate_bps", "isl_rate_bps"):
            value = getattr(self, name)
            if not value > 0:
                raise InvalidArgument(f"{name} must be > 0 bits per second, got {value}")
        if not self.horizon_s > 0:
            raise InvalidArgument(f"horizon_s must be > 0 seconds, got {self.horizon_s}")

    def state_bytes(self, model: str, context_tokens: int) -> int:
        return context_tokens * self.bytes_per_token.get(model, self.default_bytes_per_token)


def transfer_time_s(state_bytes: int, rate_bps: float) -> float:
    """Serialisation time of ``state_bytes`` at ``rate_bps`` (0 for an unlimited link)."""
    if state_bytes < 0:
        raise InvalidArgument(f"expected state_bytes ≥ 0, got {state_bytes}")
    return 0.0 if math.isinf(rate_bps) else state_bytes * 8 / rate_bps


IslInView = Callable[[str, str, datetime], bool]
"""Whether two satellites have an inter-satellite link in line of sight at an instant."""


def choose_path(  # noqa: PLR0913 - pure: both satellites, the state size, the time, settings
    from_sat: str,
    to_sat: str,
    state_bytes: int,
    at: datetime,
    settings: HandoffSettings,
    *,
    isl_in_view: IslInView | None,
) -> tuple[TransferPath, float]:
    """The transfer path and its time: ISL when preferred and in view, else down and up."""
    if from_sat == to_sat:
        return TransferPath.NONE, 0.0
    if (
        settings.path_preference is PathPreference.ISL_FIRST
        and isl_in_view is not None
        and isl_in_view(from_sat, to_sat, at)
    ):
        return TransferPath.ISL, transfer_time_s(state_bytes, settings.isl_rate_bps)
    # Store and forward through the ground: the whole state comes down, then goes up.
    return TransferPath.GROUND, 2 * transfer_time_s(state_bytes, settings.ground_rate_bps)


def rank_windows(  # noqa: PLR0913 - pure ranking; the filters are optional keywords
    windows: Iterable[PassWindow],
    at: datetime,
    policy: RoutingPolicy,
    *,
    rate_bps: float,
    min_remaining_s: float = 0.0,
    exclude_satellite: str | None = None,
    eligible: Callable[[str], bool] | None = None,
) -> list[PassWindow]:
    """Windows in view at ``at`` with more than ``min_remaining_s`` left, best first by policy."""
    scored: list[tuple[float, Candidate]] = []
    by_key: dict[tuple[str, str], PassWindow] = {}
    for window in windows:
        if not window.covers(at) or window.remaining_s(at) <= min_remaining_s:
            continue
        if window.satellite_id == exclude_satellite:
            continue
        if eligible is not None and not eligible(window.satellite_id):
            continue
        candidate = Candidate(
            window.station_id,
            window.satellite_id,
            window.max_elevation_deg,
            0.0,
            0.0,
            window.remaining_s(at),
            0.0,
            0.0,
            rate_bps,
            0.0,
            0.0,
        )
        scored.append((score(candidate, policy), candidate))
        by_key[(window.satellite_id, window.station_id)] = window
    return [by_key[(c.satellite_id, c.station_id)] for _, c in rank_order(scored)]


def next_aos(
    windows: Iterable[PassWindow],
    after: datetime,
    *,
    min_duration_s: float = 0.0,
    eligible: Callable[[str], bool] | None = None,
) -> PassWindow | None:
    """The earliest window that starts at or after ``after`` and lasts ``min_duration_s``."""
    best: PassWindow | None = None
    for window in windows:
        if window.aos < after or window.remaining_s(window.aos) <= min_duration_s:
            continue
        if eligible is not None and not eligible(window.satellite_id):
            continue
        if best is None or (window.aos, window.satellite_id) < (best.aos, best.satellite_id):
            best = window
    return best


class PlanKind(Enum):
    HANDOFF = "handoff"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class HandoffPlan:
    """What to do before the serving pass ends, and when to start."""

    kind: PlanKind
    at: datetime
    """When to start (LOS − transfer − margin, never before ``now``)."""
    los: datetime
    current: PassWindow
    successor: PassWindow | None
    path: TransferPath
    transfer_s: float
    state_bytes: int
    resume: PassWindow | None = None
    """For a checkpoint: the pass at whose AOS the session resumes (None: none in the horizon)."""


def plan_handoff(  # noqa: PLR0913 - pure planner: every input explicit, the extras keywords
    current: PassWindow,
    windows: Sequence[PassWindow],
    now: datetime,
    state_bytes: int,
    settings: HandoffSettings,
    *,
    isl_in_view: IslInView | None = None,
    eligible: Callable[[str], bool] | None = None,
    overhead_s: float = 0.0,
    link_reserved_s: float = 0.0,
) -> HandoffPlan:
    """Plan the move off ``current`` (see the module doc).

    ``overhead_s`` is the expected time of a handoff beyond the transfer itself (the control
    round trips: export, import, store commit), as measured by the caller; it is added to the
    lead margin. ``link_reserved_s`` is the link time reserved by other transfers scheduled after
    this one on the same link (:func:`reserved_after_s`): this transfer ends that much earlier.
    """
    margin_s = settings.lead_margin_s + max(0.0, overhead_s)
    lead_s = margin_s + max(0.0, link_reserved_s)
    worst_transfer_s = 2 * transfer_time_s(state_bytes, settings.ground_rate_bps)
    min_remaining_s = worst_transfer_s + margin_s + settings.min_dwell_s
    at = max(current.los - timedelta(seconds=worst_transfer_s + lead_s), now)

    def successors(instant: datetime) -> list[PassWindow]:
        ranked = rank_windows(
            windows,
            instant,
            settings.policy,
            rate_bps=settings.ground_rate_bps,
            min_remaining_s=min_remaining_s,
            eligible=eligible,
        )
        # The same satellite through another station moves nothing; any other satellite needs
        # the state copied. Candidates that are the current pass itself are skipped.
        return [
            w
            for w in ranked
            if not (w.satellite_id == current.satellite_id and w.station_id == current.station_id)
        ]

    ranked = successors(at)
    earliest = now
    if not ranked and lead_s > margin_s:
        # The reserved slot starts before any successor is in view: start when the first one
        # rises, if that is no later than this transfer alone would start.
        alone = max(current.los - timedelta(seconds=worst_transfer_s + margin_s), now)
        rising = next_aos(windows, at, min_duration_s=min_remaining_s, eligible=eligible)
        if rising is not None and rising.aos <= alone:
            at = earliest = rising.aos
            ranked = successors(at)
    if ranked:
        successor = ranked[0]
        path, transfer_s = choose_path(
            current.satellite_id,
            successor.satellite_id,
            state_bytes,
            at,
            settings,
            isl_in_view=isl_in_view,
        )
        start = max(earliest, current.los - timedelta(seconds=transfer_s + lead_s))
        return HandoffPlan(
            PlanKind.HANDOFF,
            start,
            current.los,
            current,
            successor,
            path,
            transfer_s,
            state_bytes,
        )
    down_s = transfer_time_s(state_bytes, settings.ground_rate_bps)
    start = max(now, current.los - timedelta(seconds=down_s + lead_s))
    resume = next_aos(windows, at, min_duration_s=settings.min_dwell_s, eligible=eligible)
    return HandoffPlan(
        PlanKind.CHECKPOINT,
        start,
        current.los,
        current,
        None,
        TransferPath.GROUND,
        down_s,
        state_bytes,
        resume,
    )


class LinkKey(NamedTuple):
    """The link a transfer occupies: leaving ``satellite_id`` (seen from ``station_id``, in the
    pass ending at ``los``) by ``path``. Transfers with one key share the link's rate."""

    satellite_id: str
    station_id: str
    path: TransferPath
    los: datetime


def link_key(plan: HandoffPlan) -> LinkKey:
    """The link ``plan``'s transfer occupies."""
    return LinkKey(plan.current.satellite_id, plan.current.station_id, plan.path, plan.los)


def reserved_after_s(transfers: Mapping[str, float], subject_id: str) -> float:
    """Link time reserved after ``subject_id``'s transfer on one link.

    ``transfers`` maps every subject planning a transfer on the link to its transfer time (s).
    The transfers run back to back in subject id order, the last one ending at the end of the
    link's schedule (LOS − margin), so a subject's window ends the sum of the transfer times of
    the subjects after it before that end. A subject not in ``transfers`` is placed by its id as
    if it were (with nothing of its own reserved).
    """
    for name, value in transfers.items():
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(
                f"expected a finite transfer time ≥ 0 s for {name!r} on the link, got {value}"
            )
    return sum(value for name, value in transfers.items() if name > subject_id)
