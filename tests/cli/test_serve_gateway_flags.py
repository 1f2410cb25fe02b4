"""``groundplane serve gateway`` flags: tenants file, defaults and refusals (no process started;
the process itself is tested in tests/gateway/test_serve_gateway.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundplane.cli.main import build_parser
from groundplane.cli.serve_gateway import gateway_settings, load_tenants
from groundplane.kernel.errors import InvalidArgument, Unauthenticated
from groundplane.scenario import DEFAULT_TENANT, DEFAULT_TOKEN

REQUIRED = [
    "serve",
    "gateway",
    "--routing",
    "127.0.0.1:50052",
    "--handoff",
    "127.0.0.1:50053",
    "--broker",
    "mqtt://gp-service:secret@127.0.0.1:1883",
]


def test_flags_become_the_gateway_settings() -> None:
    """The targets, broker, listen address, metrics port, deadline and drain flags land in
    GatewaySettings; the default port is the gateway's 50056 and the default instance id gw-1."""
    args = build_parser().parse_args(
        [*REQUIRED, "--metrics-port", "9106", "--default-deadline", "12", "--drain-grace", "3"]
    )
    settings = gateway_settings(args, load_tenants(None))
    assert (settings.routing_target, settings.handoff_target) == (
        "127.0.0.1:50052",
        "127.0.0.1:50053",
    )
    assert (settings.broker.host, settings.broker.port, settings.broker.username) == (
        "127.0.0.1",
        1883,
        "gp-service",
    )
    assert settings.grpc_address == "127.0.0.1:50056"
    assert settings.instance_id == "gw-1"
    assert settings.metrics_port == 9106
    assert settings.config.default_deadline_s == 12.0
    assert (settings.drain_grace_s, settings.unready_delay_s) == (3.0, 1.0)


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        (["--default-deadline", "0"], "--default-deadline"),
        (["--instance-id", "gw/1"], "--instance-id"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(extra: list[str], mentions: str) -> None:
    """A non-positive deadline or an instance id that is not one MQTT topic level is refused."""
    args = build_parser().parse_args([*REQUIRED, *extra])
    with pytest.raises(InvalidArgument, match=mentions):
        gateway_settings(args, load_tenants(None))


def test_a_non_finite_deadline_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--default-deadline nan is refused while parsing (every float flag must be finite)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([*REQUIRED, "--default-deadline", "nan"])
    assert "--default-deadline" in capsys.readouterr().err


def test_without_a_tenants_file_the_demo_tenant_is_served_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No --tenants: the demo token authenticates the demo tenant and stderr warns that the
    published dev token is in use."""
    registry = load_tenants(None)
    assert registry.authenticate(f"Bearer {DEFAULT_TOKEN}").tenant_id == DEFAULT_TENANT
    assert "dev token" in capsys.readouterr().err


def test_a_tenants_file_replaces_the_demo_tenant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --tenants file in default_tenants()' shape configures its tenants and limits; the demo
    token is then refused and nothing is printed."""
    path = tmp_path / "tenants.json"
    path.write_text(
        json.dumps({"alpha": {"tokens": ["alpha-token-0123456789"], "max_concurrent": 3}})
    )
    registry = load_tenants(str(path))
    tenant = registry.authenticate("Bearer alpha-token-0123456789")
    assert (tenant.tenant_id, tenant.max_concurrent) == ("alpha", 3)
    with pytest.raises(Unauthenticated):
        registry.authenticate(f"Bearer {DEFAULT_TOKEN}")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("{not json", "not JSON"),
        ("[]", "non-empty object"),
        ("{}", "non-empty object"),
        ('{"alpha": ["token"]}', "must be an object"),
        ('{"alpha": {"tokens": ["short"]}}', "at least 16 characters"),
        ('{"alpha": {"tokens": "alpha-token-0123456789"}}', "list of strings"),
    ],
)
def test_a_bad_tenants_file_is_refused_naming_the_file(
    tmp_path: Path, text: str, mentions: str
) -> None:
    """Malformed JSON, a non-object, an empty file, a tenant that is not an object, a short
    token or tokens that are not a list: InvalidArgument naming the file and the problem."""
    path = tmp_path / "tenants.json"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=mentions) as refused:
        load_tenants(str(path))
    assert str(path) in refused.value.message
