"""Secrets stay secret: tenant tokens kept as hashes, no secret on a command line, none in a log,
files holding credentials readable by their owner only."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc
import pytest

from groundplane.cli import environment
from groundplane.cli.main import build_parser, main
from groundplane.cli.process import broker_address
from groundplane.gateway.auth import TenantRegistry, token_sha256
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument, Unauthenticated
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_TENANT, default_stations, default_tenants, default_users
from groundplane.system.processes import CatalogSource, ProcessSystem, write_tenants_json
from groundplane.system.system import SystemConfig

GATEWAY_ARGS = ["serve", "gateway", "--routing", "127.0.0.1:1", "--handoff", "127.0.0.1:2"]
PASSWORD = "s3cret-broker-pw"


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``groundplane ARGV``; it must exit 2 before doing anything; its stderr."""
    with pytest.raises(SystemExit) as exited:
        main(argv, {})
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (
            [*GATEWAY_ARGS, "--broker", f"mqtt://gp-service:{PASSWORD}@127.0.0.1:1883"],
            ("GROUNDPLANE_BROKER", "--broker-file"),
        ),
        (
            ["up", "--broker", f"mqtt://gp-service:{PASSWORD}@127.0.0.1:1883"],
            ("GROUNDPLANE_BROKER",),
        ),
        (
            ["infer", "--gateway", "h:1", "--lat", "0", "--lon", "0", "--token", PASSWORD, "hi"],
            ("GROUNDPLANE_TOKEN", "--token-file"),
        ),
        (["up", "--demo-token", PASSWORD], ("GROUNDPLANE_DEMO_TOKEN", "--demo-token-file")),
    ],
)
def test_a_secret_on_the_command_line_is_refused_with_where_it_goes(
    argv: list[str], names: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker URL with a password, a bearer token or the demo token given on the command line
    (which ``ps`` shows to every user) is a usage error naming the variable or file option to
    use instead, and the error does not repeat the secret."""
    err = _refused(argv, capsys)
    for name in names:
        assert name in err, err
    assert PASSWORD not in err
    command = " ".join(argv[:2] if argv[0] == "serve" else argv[:1])
    assert f"groundplane {command}: error:" in err, "the error names the command given"
    if argv[0] == "up":
        assert "--broker-file" not in err, "up has no --broker-file"


def test_the_same_secrets_from_the_environment_or_a_file_are_accepted(tmp_path: Path) -> None:
    """``GROUNDPLANE_BROKER`` with a password, ``--broker-file`` holding it, and a password-less
    ``--broker`` on the command line all give the broker address."""
    url = f"mqtt://gp-service:{PASSWORD}@127.0.0.1:1883"
    from_env = environment.parse_args(
        build_parser(GATEWAY_ARGS), GATEWAY_ARGS, {"GROUNDPLANE_BROKER": url}
    )
    assert broker_address(from_env).password == PASSWORD
    secret_file = tmp_path / "broker-url"
    secret_file.write_text(url + "\n")
    argv = [*GATEWAY_ARGS, "--broker-file", str(secret_file)]
    from_file = environment.parse_args(build_parser(argv), argv, {})
    assert broker_address(from_file).password == PASSWORD
    argv = [*GATEWAY_ARGS, "--broker", "mqtt://127.0.0.1:1883"]
    plain = environment.parse_args(build_parser(argv), argv, {})
    assert broker_address(plain).username is None


def test_tenant_tokens_are_written_and_held_as_hashes(tmp_path: Path) -> None:
    """``up``'s tenants file holds only SHA-256 digests of the tokens, is created 0600, and the
    gateway loaded from it admits the token and refuses a near miss; a file may give digests
    only, and clear tokens are still accepted (hashed when loaded)."""
    token = secrets.token_urlsafe(32)
    tenants = {"acme": {"tokens": [token], "max_concurrent": 2}}
    path = tmp_path / "tenants.json"
    path.write_text("old, world-readable")
    path.chmod(0o644)
    write_tenants_json(path, tenants)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert token not in text
    data = json.loads(text)
    assert data == {"acme": {"max_concurrent": 2, "token_sha256": [token_sha256(token)]}}
    registry = TenantRegistry.from_mapping(data)
    assert registry.authenticate(f"Bearer {token}").tenant_id == "acme"
    with pytest.raises(Unauthenticated):
        registry.authenticate(f"Bearer {token[:-1]}x")
    both = TenantRegistry.from_mapping(
        {"acme": {"tokens": ["clear-token-0123456789"], "token_sha256": [token_sha256(token)]}}
    )
    assert both.authenticate("Bearer clear-token-0123456789").tenant_id == "acme"
    assert both.authenticate(f"Bearer {token}").tenant_id == "acme"


def test_a_malformed_digest_is_refused_with_the_expected_form() -> None:
    """A ``token_sha256`` entry that is not 64 lowercase hex digits is refused at load."""
    with pytest.raises(InvalidArgument, match="64-character lowercase hex"):
        TenantRegistry.from_mapping({"acme": {"token_sha256": ["abc"]}})


def _secrets_of(system: ProcessSystem, token: str) -> dict[str, str]:
    """Every secret of a running multi-process system: the tenant token, each broker password."""
    plan = system.plan
    assert plan is not None
    assert system.broker_address is not None
    found = {"tenant token": token, "service password": str(system.broker_address.password)}
    for index, url in enumerate(plan.shard_broker_urls or ()):
        password = urlsplit(url).password
        assert password is not None
        found[f"shard {index} password"] = unquote(password)
    return found


@pytest.mark.slow
async def test_no_secret_reaches_a_log_or_a_command_line_in_a_full_up_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short multi-process ``up`` run serving requests (the load and one call of ours carry the
    tenant token): no child's command line (``/proc/<pid>/cmdline``) holds the token or a broker
    password; afterwards no line of any log (each child's log, Mosquitto's log, this process's
    own output) holds one; the broker's password file and the tenants file are 0600 and hold
    no clear secret."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    clock = SimulatedClock(datetime(2026, 8, 15, 12, tzinfo=UTC), speed=10.0)
    token = secrets.token_urlsafe(32)
    tenants = default_tenants()
    tenants[DEFAULT_TENANT] = {**tenants[DEFAULT_TENANT], "tokens": [token]}
    spec = "walker:24/6/1@550km:53"
    config = SystemConfig(
        elements=generate(spec, clock.now()),
        stations=default_stations(),
        users=default_users(),
        rate_rps=2.0,
        tenants=tenants,
        token=token,
        workdir=tmp_path / "run",
        link_tick_s=1.0,
        route_tick_s=2.0,
    )
    system = ProcessSystem(config, clock, CatalogSource(constellation=spec))
    found: dict[str, str] = {}
    cmdlines: list[str] = []

    async def scenario(running: ProcessSystem) -> None:
        found.update(_secrets_of(running, token))
        supervisor = running.supervisor
        assert supervisor is not None
        for name in supervisor.names:
            pid = supervisor.pid(name)
            assert pid is not None
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        async with grpc.aio.insecure_channel(running.gateway_target) as channel:
            call = pb_grpc.InferenceServiceStub(channel).Infer(
                pb.InferRequest(
                    model="synth-7b",
                    prompt="hello",
                    location=pb.UserLocation(lat_deg=40.71, lon_deg=-74.01),
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=20,
            )
            code = grpc.StatusCode.OK
            try:
                await call
            except grpc.aio.AioRpcError as error:  # no satellite in view is fine; a bad token not
                code = error.code()
            assert code != grpc.StatusCode.UNAUTHENTICATED
        running.stop()

    async with asyncio.timeout(120):
        await system.run(scenario)
    assert system.stats.summary()["requests"]["submitted"] >= 1
    assert len(found) >= 3
    assert len(cmdlines) >= 5

    run_dir = tmp_path / "run"
    logs = {path: path.read_text(errors="replace") for path in run_dir.rglob("*.log")}
    assert any("processes" in str(p) for p in logs)
    assert (run_dir / "mosquitto.log") in logs
    logs[Path("<this process>")] = "".join(capsys.readouterr())
    for what, secret in found.items():
        for cmdline in cmdlines:
            assert secret not in cmdline, f"{what} on a command line: {cmdline!r}"
        for path, text in logs.items():
            for number, line in enumerate(text.splitlines(), 1):
                assert secret not in line, f"{what} in {path}:{number}: {line[:200]}"
    for name in ("passwords", "tenants.json"):
        path = run_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        text = path.read_text()
        assert not any(secret in text for secret in found.values()), name
    assert re.search(r"token_sha256", (run_dir / "tenants.json").read_text())
