"""The routing decision: filter → score → pick, as pure functions of explicit inputs.

A *path* is one (ground station, satellite) pair the satellite is visible over, with what the
router knows about its space link (``LinkQuality``) and its node (``NodeState``). For one request
(a user location, a model, an expected duration, a session key) the decision

1. **filters** paths: elevation below the policy threshold, link down, loss above the policy
   limit, node offline or never heard of, model not served, pass ending before the expected
   duration. Every excluded path keeps its reason ("pass ends in 12 s < expected 30 s");
2. **scores** the rest with the policy kind (higher is better):

   =====================  ==================================================  ===============
   kind                   score                                               unit
   =====================  ==================================================  ===============
   MAX_ELEVATION          elevation                                           degrees
   LONGEST_VISIBILITY     remaining visible time                              seconds
   LEAST_LOADED           −(router's in-flight + report_weight × queue depth)  requests
   LOWEST_LATENCY         −(backhaul delay + link delay)                      seconds
   WEIGHTED               Σ weight × term, each term normalised to [0, 1]     utility
   ENERGY_AWARE           WEIGHTED + ENERGY_AWARE_WEIGHT × energy term        utility
   =====================  ==================================================  ===============

   The energy term (``routing/energy.py``: sunlit, charged, cool) is also a weight of the
   weighted utility (``weights.energy``, 0 by default). With ENERGY_AWARE or an energy weight
   above 0 the **energy filter** applies too: a node whose battery would fall below its reserve
   before the request ends or before its next sunlight, or which is at its temperature limit,
   is excluded (nodes that report no energy are never excluded for it);

   The load estimate counts the router's own in-flight counter (exact and current) in full and
   the node's reported queue depth (seconds old) weighted by ``report_weight``;
3. **picks**: sorts by score, ties broken by satellite id then station id (deterministic), then
   applies **stickiness**: a session stays on its current satellite unless a challenger beats it
   by more than ``margin`` (in the score unit above) *and* the session has stayed at least
   ``min_dwell_s``, or the current satellite became infeasible.

The answer is an ordered fallback list (chosen first) plus the excluded paths, each with a reason.
Nothing here reads a clock: instants come in as arguments.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import NamedTuple, Protocol

from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.kernel.validation import finite_number
from groundplane.routing.backhaul import SPEED_OF_LIGHT_KM_S, StationAccess, check_lat_lon
from groundplane.routing.energy import (
    PathEnergy,
    aged,
    energy_budget,
    energy_term,
    hot_detail,
    reserve_detail,
    too_hot,
)

# Normalisation references of the weighted utility (a term reaches 1 at the reference).
VISIBILITY_REF_S = 600.0
RATE_REF_BPS = 100e6
LATENCY_REF_S = 0.1
ENERGY_AWARE_WEIGHT = 5.0
"""Weight of the energy term under ENERGY_AWARE: larger than any spread of the other terms."""


class PolicyKind(Enum):
    """What the scorer ranks by (see the module docstring for scores and units)."""

    MAX_ELEVATION = "max-elevation"
    LONGEST_VISIBILITY = "longest-visibility"
    LEAST_LOADED = "least-loaded"
    LOWEST_LATENCY = "lowest-latency"
    WEIGHTED = "weighted"
    ENERGY_AWARE = "energy-aware"


class Liveness(Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class Exclusion(Enum):
    """Why a path was filtered out."""

    BELOW_THRESHOLD = "below-threshold"
    LINK_DOWN = "link-down"
    NODE_OFFLINE = "node-offline"
    NODE_UNKNOWN = "node-unknown"
    MODEL_NOT_SERVED = "model-not-served"
    PASS_TOO_SHORT = "pass-too-short"
    LOSS_TOO_HIGH = "loss-too-high"
    ENERGY_RESERVE = "energy-reserve"
    TOO_HOT = "too-hot"


def _non_negative(name: str, value: float) -> float:
    number = finite_number(name, value)
    if number < 0.0:
        raise InvalidArgument(f"{name} must be ≥ 0, got {number}")
    return number


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the weighted utility; each term is in [0, 1], so the utility is in [0, Σ w]."""

    elevation: float = 1.0
    remaining_visibility: float = 1.0
    load: float = 1.0
    link_quality: float = 1.0
    latency: float = 1.0
    energy: float = 0.0

    def __post_init__(self) -> None:
        total = 0.0
        for name in (
            "elevation",
            "remaining_visibility",
            "load",
            "link_quality",
            "latency",
            "energy",
        ):
            total += _non_negative(f"weights.{name}", getattr(self, name))
        if total <= 0.0:
            raise InvalidArgument(
                "weights must not all be zero: expected at least one positive weight among "
                "elevation, remaining_visibility, load, link_quality, latency"
            )


@dataclass(frozen=True, slots=True)
class Stickiness:
    """Hysteresis: switch only for a gain above ``margin`` (score units) after ``min_dwell_s``."""

    margin: float = 0.0
    min_dwell_s: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("stickiness.margin", self.margin)
        _non_negative("stickiness.min_dwell_s", self.min_dwell_s)


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Everything that shapes a decision; ``stickiness=None`` turns stickiness off."""

    kind: PolicyKind = PolicyKind.WEIGHTED
    weights: Weights = field(default_factory=Weights)
    min_elevation_deg: float = 10.0
    max_loss_rate: float = 0.5
    stickiness: Stickiness | None = field(
        default_factory=lambda: Stickiness(margin=0.1, min_dwell_s=30.0)
    )
    max_backhaul_km: float = 3_000.0
    max_stations: int = 3
    report_weight: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PolicyKind):
            raise InvalidArgument(
                f"policy kind must be one of {', '.join(k.value for k in PolicyKind)}, "
                f"got {self.kind!r}"
            )
        elevation = finite_number("min_elevation_deg", self.min_elevation_deg)
        if not -90.0 <= elevation <= 90.0:
            raise InvalidArgument(f"min_elevation_deg must be in [-90, 90], got {elevation}")
        loss = finite_number("max_loss_rate", self.max_loss_rate)
        if not 0.0 <= loss <= 1.0:
            raise InvalidArgument(f"max_loss_rate must be a fraction in [0, 1], got {loss}")
        reach = float(self.max_backhaul_km)
        if math.isnan(reach) or reach < 0.0:
            raise InvalidArgument(f"max_backhaul_km must be ≥ 0 km, got {self.max_backhaul_km}")
        if not isinstance(self.max_stations, int) or self.max_stations < 1:
            raise InvalidArgument(f"max_stations must be an integer ≥ 1, got {self.max_stations}")
        weight = finite_number("report_weight", self.report_weight)
        if not 0.0 <= weight <= 1.0:
            raise InvalidArgument(f"report_weight must be in [0, 1], got {weight}")

    @property
    def respects_energy(self) -> bool:
        """Whether the energy filter applies (ENERGY_AWARE, or an energy weight above 0)."""
        return self.kind is PolicyKind.ENERGY_AWARE or self.weights.energy > 0.0


DEFAULT_POLICY = RoutingPolicy()


# ------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Sighting:
    """A satellite above a station's threshold at one instant (what visibility gives routing).

    ``remaining_s`` is the time until the pass ends (LOS); ``inf`` when it does not end within
    the prediction horizon.
    """

    station_id: str
    satellite_id: str
    elevation_deg: float
    azimuth_deg: float
    range_km: float
    remaining_s: float


class VisibilitySource(Protocol):
    """Who each station sees at an instant, with look angles and time to LOS."""

    def sightings(self, at: datetime) -> Sequence[Sighting]: ...


@dataclass(frozen=True, slots=True)
class NodeState:
    """One satellite's compute node as the node directory last saw it.

    ``online`` follows the birth/will epoch protocol; the load fields come from the node's last
    load report (``reported_at``), which is seconds old by the time routing reads it.
    """

    satellite_id: str
    online: bool
    models: frozenset[str] = frozenset()
    epoch: int = 0
    queue_depth: int = 0
    in_flight: int = 0
    free_slots: int = 0
    reported_at: datetime | None = None
    energy: PathEnergy | None = None
    """Power and heat, when the node models them."""


class NodeSnapshotSource(Protocol):
    """The node directory seen by routing: the latest state of every known node."""

    def snapshot(self) -> Mapping[str, NodeState]: ...


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """The retained link state of (station, satellite) (``gp/v1/link/<station>/<sat>/state``)."""

    station_id: str
    satellite_id: str
    up: bool
    delay_s: float
    rate_bps: float
    loss_rate: float


@dataclass(frozen=True, slots=True)
class PathState:
    """One visible (station, satellite) path with everything known about its link and node.

    ``los_in_s`` counts from the instant the path was built (the table's ``computed_at``).
    ``exclusion`` is set when the path is unusable whatever the request.
    """

    station_id: str
    satellite_id: str
    elevation_deg: float
    azimuth_deg: float
    range_km: float
    los_in_s: float
    link_up: bool
    link_delay_s: float
    rate_bps: float
    loss_rate: float
    liveness: Liveness
    models: frozenset[str]
    queue_depth: int
    in_flight: int
    free_slots: int
    exclusion: Exclusion | None = None
    exclusion_detail: str = ""
    energy: PathEnergy | None = None


def build_path(
    sighting: Sighting,
    link: LinkQuality | None,
    node: NodeState | None,
    policy: RoutingPolicy,
) -> PathState:
    """Join a sighting with its link and node and apply the request-independent filters.

    Without a link state (no emulator, or a real radio that publishes none) the link is taken as
    up with the light-time delay of the slant range, unknown rate (``inf``) and no loss.
    """
    if link is None:
        up, delay_s, rate_bps, loss = True, sighting.range_km / SPEED_OF_LIGHT_KM_S, math.inf, 0.0
    else:
        up, delay_s, rate_bps, loss = link.up, link.delay_s, link.rate_bps, link.loss_rate
    if node is None:
        liveness, models, queue, in_flight, free = Liveness.UNKNOWN, frozenset[str](), 0, 0, 0
        energy = None
    else:
        energy = node.energy
        liveness = Liveness.ONLINE if node.online else Liveness.OFFLINE
        models, queue = node.models, node.queue_depth
        in_flight, free = node.in_flight, node.free_slots
    exclusion: Exclusion | None = None
    detail = ""
    sat = sighting.satellite_id
    if sighting.elevation_deg < policy.min_elevation_deg:
        exclusion = Exclusion.BELOW_THRESHOLD
        detail = (
            f"elevation {sighting.elevation_deg:.1f}° below threshold "
            f"{policy.min_elevation_deg:.1f}°"
        )
    elif not up:
        exclusion, detail = Exclusion.LINK_DOWN, f"link {sighting.station_id}/{sat} is down"
    elif loss > policy.max_loss_rate:
        exclusion = Exclusion.LOSS_TOO_HIGH
        detail = f"link loss {loss:.1%} above limit {policy.max_loss_rate:.1%}"
    elif liveness is Liveness.UNKNOWN:
        exclusion, detail = Exclusion.NODE_UNKNOWN, f"node {sat} never reported (no status)"
    elif liveness is Liveness.OFFLINE:
        exclusion, detail = Exclusion.NODE_OFFLINE, f"node {sat} offline"
    return PathState(
        station_id=sighting.station_id,
        satellite_id=sat,
        elevation_deg=sighting.elevation_deg,
        azimuth_deg=sighting.azimuth_deg,
        range_km=sighting.range_km,
        los_in_s=sighting.remaining_s,
        link_up=up,
        link_delay_s=delay_s,
        rate_bps=rate_bps,
        loss_rate=loss,
        liveness=liveness,
        models=models,
        queue_depth=queue,
        in_flight=in_flight,
        free_slots=free,
        exclusion=exclusion,
        exclusion_detail=detail,
        energy=energy,
    )


# ------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request to place: who (location or own terminal), what model, for how long.

    ``terminal_site_id`` names a station that is the user's own terminal (no backhaul); the
    location is then ignored. ``session_key`` enables stickiness when not empty.
    """

    model: str
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    terminal_site_id: str = ""
    expected_duration_s: float = 0.0
    session_key: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise InvalidArgument(
                "model is required: expected the name of a model the nodes serve (the gateway's "
                "GET /v1/models lists them)"
            )
        if not self.terminal_site_id:
            lat, lon = check_lat_lon(self.lat_deg, self.lon_deg)
            object.__setattr__(self, "lat_deg", lat)
            object.__setattr__(self, "lon_deg", lon)
        duration = float(self.expected_duration_s)
        if math.isnan(duration) or duration < 0.0 or math.isinf(duration):
            raise InvalidArgument(
                f"expected_duration_s must be a finite number of seconds ≥ 0, "
                f"got {self.expected_duration_s!r}"
            )


class Candidate(NamedTuple):
    """A path as seen by one request: geometry, delays and load at decision time.

    (A named tuple: decisions build dozens per request and tuples are the cheapest record.)
    """

    station_id: str
    satellite_id: str
    elevation_deg: float
    azimuth_deg: float
    range_km: float
    remaining_s: float
    backhaul_delay_s: float
    link_delay_s: float
    rate_bps: float
    loss_rate: float
    load_estimate: float
    energy_term: float = 1.0

    @property
    def total_delay_s(self) -> float:
        """One-way delay from the user to the satellite (backhaul + space link)."""
        return self.backhaul_delay_s + self.link_delay_s


def _candidate(access: StationAccess, path: PathState, elapsed_s: float, load: float) -> Candidate:
    return Candidate(
        path.station_id,
        path.satellite_id,
        path.elevation_deg,
        path.azimuth_deg,
        path.range_km,
        path.los_in_s - elapsed_s,
        access.delay_s,
        path.link_delay_s,
        path.rate_bps,
        path.loss_rate,
        load,
        energy_term(path.energy),
    )


class Ranked(NamedTuple):
    """A usable candidate: rank 1 is the pick, the rest are fallbacks in order.

    ``reason`` is formatted when read (a gateway deciding locally rarely needs it).
    """

    candidate: Candidate
    rank: int
    score: float
    policy: RoutingPolicy
    note: str = ""

    @property
    def reason(self) -> str:
        c = self.candidate
        why = explain(c, self.policy, self.score)
        via = f"via {c.station_id}, backhaul {c.backhaul_delay_s * 1e3:.1f} ms"
        if self.rank == 1:
            return f"chosen: {why}; {via}" + (f"; {self.note}" if self.note else "")
        return f"fallback {self.rank - 1}: {why}; {via}"


class Excluded(NamedTuple):
    """A filtered-out path; ``candidate`` and ``reason`` are built when read."""

    access: StationAccess
    path: PathState
    exclusion: Exclusion
    elapsed_s: float
    load_estimate: float
    model: str
    expected_s: float
    local_in_flight: int = 0

    @property
    def candidate(self) -> Candidate:
        return _candidate(self.access, self.path, self.elapsed_s, self.load_estimate)

    @property
    def detail(self) -> str:
        """Why the path was excluded, without the station prefix."""
        path = self.path
        if self.exclusion is Exclusion.MODEL_NOT_SERVED:
            served = ", ".join(sorted(path.models)) or "none"
            return f"model {self.model!r} not served by {path.satellite_id} (serves {served})"
        if self.exclusion is Exclusion.PASS_TOO_SHORT and path.exclusion is None:
            remaining_s = path.los_in_s - self.elapsed_s
            if remaining_s <= 0.0:
                return f"pass ended {-remaining_s:.0f} s ago"
            return f"pass ends in {remaining_s:.0f} s < expected {self.expected_s:.0f} s"
        if self.exclusion is Exclusion.ENERGY_RESERVE and path.energy is not None:
            budget = energy_budget(path.energy, self.expected_s, self.local_in_flight)
            return reserve_detail(path.satellite_id, path.energy, budget)
        if self.exclusion is Exclusion.TOO_HOT and path.energy is not None:
            return hot_detail(path.satellite_id, path.energy)
        return path.exclusion_detail

    @property
    def reason(self) -> str:
        return f"{self.path.station_id}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a session is currently placed, and since when (for the minimum dwell)."""

    satellite_id: str
    station_id: str
    since: datetime


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The ordered fallback list and the excluded paths, each with its reason."""

    decided_at: datetime
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]
    summary: str
    table_version: int = 0
    next_opportunity: datetime | None = None

    @property
    def chosen(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None

    def require(self) -> Ranked:
        """The chosen candidate, or :class:`Unavailable` with the next opportunity if known."""
        if self.ranked:
            return self.ranked[0]
        raise Unavailable(self.summary, next_opportunity=self.next_opportunity)


# ------------------------------------------------------------------------------- scoring


def load_estimate(local_in_flight: int, reported_queue_depth: int, report_weight: float) -> float:
    """Outstanding requests: the router's own count in full, the node's older report weighted."""
    return local_in_flight + report_weight * reported_queue_depth


def _clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def weighted_terms(candidate: Candidate) -> tuple[float, float, float, float, float]:
    """The five normalised terms (elevation, visibility, load, link, latency), each in [0, 1].

    (Written with conditional expressions rather than min/max: this runs per candidate.)
    """
    elevation = _clamp01(candidate.elevation_deg / 90.0)
    visibility = _clamp01(candidate.remaining_s / VISIBILITY_REF_S)
    load_estimate = candidate.load_estimate
    load = 1.0 / (1.0 + load_estimate) if load_estimate > 0.0 else 1.0
    rate_bps = candidate.rate_bps
    rate = 1.0 if rate_bps >= RATE_REF_BPS else (rate_bps / RATE_REF_BPS if rate_bps > 0 else 0.0)
    link = (1.0 - candidate.loss_rate) * rate
    lag = candidate.total_delay_s / LATENCY_REF_S
    latency = 1.0 - lag if lag < 1.0 else 0.0
    return elevation, visibility, load, link, latency


def score(candidate: Candidate, policy: RoutingPolicy) -> float:
    """The candidate's score under ``policy`` (higher is better; unit depends on the kind)."""
    kind = policy.kind
    if kind is PolicyKind.MAX_ELEVATION:
        return candidate.elevation_deg
    if kind is PolicyKind.LONGEST_VISIBILITY:
        return candidate.remaining_s
    if kind is PolicyKind.LEAST_LOADED:
        return -candidate.load_estimate
    if kind is PolicyKind.LOWEST_LATENCY:
        return -candidate.total_delay_s
    w = policy.weights
    el, vis, load, link, lat = weighted_terms(candidate)
    utility = (
        w.elevation * el
        + w.remaining_visibility * vis
        + w.load * load
        + w.link_quality * link
        + w.latency * lat
    )
    if kind is PolicyKind.ENERGY_AWARE:
        return utility + (ENERGY_AWARE_WEIGHT + w.energy) * candidate.energy_term
    return utility + w.energy * candidate.energy_term if w.energy else utility


def explain(candidate: Candidate, policy: RoutingPolicy, value: float) -> str:
    """What the score of ``candidate`` is made of, for people."""
    kind = policy.kind
    if kind is PolicyKind.MAX_ELEVATION:
        return f"elevation {candidate.elevation_deg:.1f}°"
    if kind is PolicyKind.LONGEST_VISIBILITY:
        return f"visible {candidate.remaining_s:.0f} s more"
    if kind is PolicyKind.LEAST_LOADED:
        return f"load {candidate.load_estimate:.1f} outstanding"
    if kind is PolicyKind.LOWEST_LATENCY:
        return (
            f"delay {candidate.total_delay_s * 1e3:.1f} ms (backhaul "
            f"{candidate.backhaul_delay_s * 1e3:.1f} + link {candidate.link_delay_s * 1e3:.1f})"
        )
    el, vis, load, link, lat = weighted_terms(candidate)
    energy = (
        f", energy {candidate.energy_term:.2f}"
        if kind is PolicyKind.ENERGY_AWARE or policy.weights.energy
        else ""
    )
    return (
        f"utility {value:.3f} (elevation {el:.2f}, visibility {vis:.2f}, load {load:.2f}, "
        f"link {link:.2f}, latency {lat:.2f}{energy})"
    )


def _describe_score(policy: RoutingPolicy) -> str:
    return {
        PolicyKind.MAX_ELEVATION: "highest elevation",
        PolicyKind.LONGEST_VISIBILITY: "longest remaining visibility",
        PolicyKind.LEAST_LOADED: "least loaded",
        PolicyKind.LOWEST_LATENCY: "lowest delay",
        PolicyKind.WEIGHTED: "highest weighted utility",
        PolicyKind.ENERGY_AWARE: "highest energy-aware utility",
    }[policy.kind]


def rank_order(scored: Iterable[tuple[float, Candidate]]) -> list[tuple[float, Candidate]]:
    """Sort by score (best first); ties by satellite id, then station id (deterministic)."""
    return sorted(scored, key=lambda item: (-item[0], item[1].satellite_id, item[1].station_id))


def apply_stickiness(
    ordered: list[tuple[float, Candidate]],
    current: Assignment | None,
    stickiness: Stickiness | None,
    now: datetime,
    infeasible_reason: str = "",
) -> tuple[list[tuple[float, Candidate]], str]:
    """Reorder ``ordered`` (best first) so the current satellite stays first when it should.

    Returns the new order and a note on what stickiness did (empty when it did nothing).
    ``infeasible_reason`` says why the current satellite is missing from ``ordered`` (if it is).
    """
    if stickiness is None or current is None or not ordered:
        return ordered, ""
    incumbent = next(
        (i for i, (_, c) in enumerate(ordered) if c.satellite_id == current.satellite_id), None
    )
    best_score, best = ordered[0]
    if incumbent is None:
        why = infeasible_reason or "no longer visible from a reachable station"
        return ordered, f"current satellite {current.satellite_id} infeasible ({why}); switched"
    if incumbent == 0:
        return ordered, f"current satellite {current.satellite_id} is still the best"
    held_score, _ = ordered[incumbent]
    gain = best_score - held_score
    dwell_s = (now - current.since).total_seconds()
    if gain > stickiness.margin and dwell_s >= stickiness.min_dwell_s:
        return ordered, (
            f"switched from {current.satellite_id}: {best.satellite_id} better by {gain:.3g} > "
            f"margin {stickiness.margin:.3g} after dwell {dwell_s:.0f} s"
        )
    if gain <= stickiness.margin:
        why = (
            f"challenger {best.satellite_id} better by only {gain:.3g} "
            f"≤ margin {stickiness.margin:.3g}"
        )
    else:
        why = f"dwell {dwell_s:.0f} s < minimum {stickiness.min_dwell_s:.0f} s"
    kept = [ordered[incumbent], *ordered[:incumbent], *ordered[incumbent + 1 :]]
    return kept, f"kept current satellite {current.satellite_id}: {why}"


def decide(  # noqa: PLR0913 - pure decision: every input explicit, the context by keyword
    paths: Iterable[tuple[StationAccess, PathState]],
    request: RouteRequest,
    policy: RoutingPolicy,
    now: datetime,
    *,
    elapsed_s: float = 0.0,
    local_in_flight: Mapping[str, int] | None = None,
    current: Assignment | None = None,
    table_version: int = 0,
    next_opportunity: datetime | None = None,
) -> RouteDecision:
    """Filter → score → pick over ``paths`` for one request.

    ``elapsed_s`` is the time since the paths were built (their ``los_in_s`` shrinks by it);
    ``local_in_flight`` is the router's own count of outstanding requests per satellite;
    ``current`` the session's assignment for stickiness.
    """
    in_flight = local_in_flight or {}
    expected_s = request.expected_duration_s
    model = request.model
    scored: list[tuple[float, Candidate]] = []
    excluded: list[Excluded] = []
    current_excluded: Excluded | None = None
    report_weight = policy.report_weight
    respects_energy = policy.respects_energy
    now_s = now.timestamp()
    for access, path in paths:
        if path.energy is not None:  # the report is older than the decision: age it to now
            path = replace(path, energy=aged(path.energy, now_s))  # noqa: PLW2901
        local = in_flight.get(path.satellite_id, 0)
        load = local + report_weight * path.queue_depth
        reason: Exclusion | None = path.exclusion
        if reason is None:
            if model not in path.models:
                reason = Exclusion.MODEL_NOT_SERVED
            else:
                remaining_s = path.los_in_s - elapsed_s
                if remaining_s < expected_s or remaining_s <= 0.0:
                    reason = Exclusion.PASS_TOO_SHORT
                elif respects_energy and path.energy is not None:
                    reason = _energy_exclusion(path.energy, expected_s, local)
        if reason is not None:
            dropped = Excluded(access, path, reason, elapsed_s, load, model, expected_s, local)
            excluded.append(dropped)
            if current is not None and path.satellite_id == current.satellite_id:
                current_excluded = dropped
            continue
        candidate = _candidate(access, path, elapsed_s, load)
        scored.append((score(candidate, policy), candidate))
    ordered = rank_order(scored)
    ordered, note = apply_stickiness(
        ordered,
        current,
        policy.stickiness,
        now,
        current_excluded.detail if current_excluded is not None else "",
    )
    ranked = [
        Ranked(candidate, index, value, policy, note if index == 1 else "")
        for index, (value, candidate) in enumerate(ordered, start=1)
    ]
    if ranked:
        pick = ranked[0].candidate
        summary = (
            f"{pick.satellite_id} via {pick.station_id} ({_describe_score(policy)}); "
            f"{len(ranked) - 1} fallbacks, {len(excluded)} excluded"
        ) + (f"; {note}" if note else "")
    else:
        summary = _nothing_summary(request, excluded, next_opportunity)
    return RouteDecision(
        decided_at=now,
        ranked=tuple(ranked),
        excluded=tuple(excluded),
        summary=summary,
        table_version=table_version,
        next_opportunity=next_opportunity,
    )


def _energy_exclusion(energy: PathEnergy, expected_s: float, local: int) -> Exclusion | None:
    if too_hot(energy):
        return Exclusion.TOO_HOT
    if energy_budget(energy, expected_s, local).breaches(energy):
        return Exclusion.ENERGY_RESERVE
    return None


def _nothing_summary(
    request: RouteRequest, excluded: Sequence[Excluded], next_opportunity: datetime | None
) -> str:
    head = f"no satellite can serve model {request.model!r} now"
    if excluded:
        shown = "; ".join(e.reason for e in excluded[:3])
        more = f" (+{len(excluded) - 3} more)" if len(excluded) > 3 else ""
        head += f": {len(excluded)} candidates excluded ({shown}{more})"
    else:
        head += ": no satellite is visible from a reachable ground station"
    if next_opportunity is not None:
        head += f"; next opportunity at {next_opportunity.isoformat()}"
    return head


def next_assignment(
    decision: RouteDecision, current: Assignment | None, now: datetime
) -> Assignment | None:
    """The session's assignment after ``decision`` (``since`` kept while the satellite stays)."""
    chosen = decision.chosen
    if chosen is None:
        return None
    pick = chosen.candidate
    if current is not None and current.satellite_id == pick.satellite_id:
        if current.station_id == pick.station_id:
            return current
        return Assignment(pick.satellite_id, pick.station_id, current.since)
    return Assignment(pick.satellite_id, pick.station_id, now)


class StickyMemory:
    """Session key → current :class:`Assignment`, bounded (least recently used forgotten)."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise InvalidArgument(f"max_sessions must be ≥ 1, got {max_sessions}")
        self._max = max_sessions
        self._items: OrderedDict[str, Assignment] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, session_key: str) -> Assignment | None:
        found = self._items.get(session_key)
        if found is not None:
            self._items.move_to_end(session_key)
        return found

    def put(self, session_key: str, assignment: Assignment | None) -> None:
        if assignment is None:
            self._items.pop(session_key, None)
            return
        self._items[session_key] = assignment
        self._items.move_to_end(session_key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def forget(self, session_key: str) -> None:
        self._items.pop(session_key, None)


class InFlightCounter(Mapping[str, int]):
    """The router's own count of outstanding requests per satellite.

    The gateway calls :meth:`started` when it sends a request to a satellite and :meth:`finished`
    when the answer (or the failure) comes back. Unlike node load reports, this count is exact
    and current, so the load estimate trusts it first.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __getitem__(self, satellite_id: str) -> int:
        return self._counts[satellite_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, satellite_id: str, default: int = 0) -> int:  # type: ignore[override]
        return self._counts.get(satellite_id, default)

    def started(self, satellite_id: str) -> None:
        self._counts[satellite_id] = self._counts.get(satellite_id, 0) + 1

    def finished(self, satellite_id: str) -> None:
        left = self._counts.get(satellite_id, 0) - 1
        if left > 0:
            self._counts[satellite_id] = left
        else:
            self._counts.pop(satellite_id, None)
