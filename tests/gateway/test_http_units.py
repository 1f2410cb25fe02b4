"""The HTTP front door's edge, HTTP ↔ domain, as pure functions (no server)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.gateway.auth import Tenant, TenantRegistry
from groundplane.gateway.http import (
    NEXT_OPPORTUNITY_HEADER,
    call_from_http,
    chat_prompt,
    http_error,
    parse_location,
)
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from groundplane.orbit.constellations import generate
from groundplane.scenario import (
    DEFAULT_CONSTELLATION,
    DEFAULT_TOKEN,
    default_stations,
    default_tenants,
)
from groundplane.system.processes import ChildPorts, child_specs
from groundplane.system.system import SystemConfig

from ..system.test_processes import _plan

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
TENANT = Tenant("alpha")
BODY = {"model": "synth", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (Unauthenticated("no"), 401, "invalid_api_key"),
        (InvalidArgument("bad"), 400, "invalid_argument"),
        (FailedPrecondition("wrong model for the session"), 400, "failed_precondition"),
        (NotFound("model"), 404, "model_not_found"),
        (ResourceExhausted("full"), 429, "rate_limit_exceeded"),
        (Unavailable("nothing in view"), 503, "no_satellite_reachable"),
        (DeadlineExceeded("late"), 504, "deadline_exceeded"),
        (GroundplaneError("?"), 500, "internal"),
    ],
)
def test_each_domain_error_has_its_status_and_openai_shape(
    error: GroundplaneError, status: int, code: str
) -> None:
    """Every domain error maps to its HTTP status and an OpenAI error body carrying its
    message; without a delay there is no Retry-After."""
    shaped = http_error(error, SimulatedClock(T0))
    assert shaped.status == status
    assert shaped.body == {
        "error": {
            "message": error.message,
            "type": shaped.body["error"]["type"],
            "param": None,
            "code": code,
        }
    }
    assert "retry-after" not in shaped.headers


def test_retry_after_is_wall_seconds_rounded_up() -> None:
    """A retry hint becomes ``Retry-After`` in whole seconds rounded up (at least 1) and exact
    ``retry-after-ms``; the next AOS of an UNAVAILABLE counts in wall seconds on a fast clock
    (simulated seconds / speed) and is named as an instant."""
    clock = SimulatedClock(T0, speed=10.0)
    full = http_error(ResourceExhausted("full", retry_after_s=0.25), clock)
    assert (full.headers["retry-after"], full.headers["retry-after-ms"]) == ("1", "250")
    aos = clock.now() + timedelta(seconds=605.0)
    dark = http_error(Unavailable("dark", next_opportunity=aos), clock)
    assert int(dark.headers["retry-after"]) in (60, 61)
    assert dark.headers[NEXT_OPPORTUNITY_HEADER].startswith("2026-08-15T12:10:05")


def test_locations_parse_and_bad_ones_are_refused() -> None:
    """``lat,lon`` and ``lat,lon,alt`` parse; anything else is a 400 naming the header."""
    assert parse_location("40.71,-74.01") == (40.71, -74.01)
    assert parse_location(" 78.2, 15.6 , 450") == (78.2, 15.6)
    for bad in ("40.71", "a,b", "91,0", "0,181", "nan,0", "1,2,3,4"):
        with pytest.raises(InvalidArgument, match="X-Groundplane-Location"):
            parse_location(bad)


def test_a_conversation_becomes_one_prompt_and_a_session_sends_its_last_user_turn() -> None:
    """One message is its content (text parts joined); several are ``role: content`` lines;
    with a session only the last user message goes (the session holds the rest)."""
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "how "}, {"type": "text", "text": "high?"}],
        },
        {"role": "assistant", "content": "550 km"},
        {"role": "user", "content": "and fast?"},
    ]
    assert chat_prompt(messages[1:2], session=False) == "how high?"
    assert chat_prompt(messages, session=False) == (
        "system: be brief\nuser: how high?\nassistant: 550 km\nuser: and fast?"
    )
    assert chat_prompt(messages, session=True) == "and fast?"
    with pytest.raises(InvalidArgument, match="text content parts"):
        chat_prompt([{"role": "user", "content": [{"type": "image_url"}]}], session=False)
    with pytest.raises(InvalidArgument, match="non-empty list"):
        chat_prompt([], session=False)


def test_headers_and_body_fields_become_the_call() -> None:
    """Session from the header (else ``user``), idempotency key, deadline, token budget and the
    tenant's default location when no header names one; malformed fields are 400s."""
    http = call_from_http(
        {**BODY, "max_tokens": 12, "user": "u-1", "stream": True},
        {"idempotency-key": "k-1", "x-groundplane-timeout": "2.5"},
        TENANT,
        chat=True,
        default_location=(40.71, -74.01),
    )
    call = http.call
    assert (call.session_id, call.idempotency_key, call.max_tokens) == ("u-1", "k-1", 12)
    assert (call.lat_deg, call.lon_deg, http.remaining_s, http.stream) == (
        40.71,
        -74.01,
        2.5,
        True,
    )
    assert (
        call_from_http(
            BODY,
            {"x-groundplane-session": "s-9", "x-groundplane-location": "1,2"},
            TENANT,
            chat=True,
        ).call.session_id
        == "s-9"
    )
    for body, headers, mentions in [
        (BODY, {}, "no default location"),
        ({**BODY, "model": ""}, {"x-groundplane-location": "1,2"}, "model"),
        ({**BODY, "max_tokens": "8"}, {"x-groundplane-location": "1,2"}, "max_tokens"),
        ({**BODY, "n": 2}, {"x-groundplane-location": "1,2"}, "one choice"),
        (BODY, {"x-groundplane-location": "1,2", "x-groundplane-timeout": "-1"}, "Timeout"),
        ([1], {}, "JSON object"),
    ]:
        with pytest.raises(InvalidArgument, match=mentions):
            call_from_http(body, headers, TENANT, chat=True)
    with pytest.raises(InvalidArgument, match="prompt"):
        call_from_http(
            {"model": "m", "prompt": 3}, {"x-groundplane-location": "1,2"}, TENANT, chat=False
        )


def test_ups_http_port_reaches_the_gateway_child_as_http_listen(tmp_path: Path) -> None:
    """`up --http-port 0` picks a free port for the gateway child, which gets it as
    `serve gateway --http-listen 127.0.0.1:PORT`; without it the child gets no such flag."""
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, T0),
        stations=default_stations(),
        gateway_http_port=0,
    )
    ports = ChildPorts.choose(config, shards=1)
    assert ports.gateway_http not in (None, 0)
    plan = dataclasses.replace(_plan(tmp_path, 10), ports=ports)
    gateway = list(child_specs(plan)[-1].argv)
    assert gateway[gateway.index("--http-listen") + 1] == f"127.0.0.1:{ports.gateway_http}"
    assert "--http-listen" not in child_specs(_plan(tmp_path, 10))[-1].argv


def test_a_tenant_may_carry_a_default_location() -> None:
    """``"location": [lat, lon]`` in the tenants mapping is the tenant's default location; the
    demo tenant's users are in New York; a malformed or out-of-range one is refused."""
    registry = TenantRegistry.from_mapping(default_tenants())
    demo = registry.authenticate(f"Bearer {DEFAULT_TOKEN}")
    assert registry.location(demo) == (40.71, -74.01)
    plain = TenantRegistry.from_mapping({"alpha": {"tokens": ["alpha-token-0123456789"]}})
    assert plain.location(plain.authenticate("Bearer alpha-token-0123456789")) is None
    for bad in ([40.7], ["40", "-74"], [91.0, 0.0], {"lat": 1}):
        with pytest.raises(InvalidArgument, match="location"):
            TenantRegistry.from_mapping(
                {"alpha": {"tokens": ["alpha-token-0123456789"], "location": bad}}
            )
