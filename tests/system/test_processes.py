"""Multi-process `up` (:mod:`groundplane.system.processes`): the children's command lines, the
files they share with `up`, the job load over the handoff service's gRPC, and (once every
`groundplane serve` command exists) the whole system in child processes surviving a kill -9."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from groundplane.cli.inputs import load_mask, load_sites_csv
from groundplane.cli.serve_nodes import model_specs
from groundplane.gateway.auth import token_sha256
from groundplane.gateway.v1 import gateway_pb2 as gateway_pb
from groundplane.gateway.v1 import gateway_pb2_grpc as gateway_pb_grpc
from groundplane.handoff.servicer import SERVICE_NAME as HANDOFF_SERVICE
from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.handoff.v1 import handoff_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import GrpcServer, ServiceBinding
from groundplane.mqtt.client import Backoff
from groundplane.node.backends import SyntheticModelSpec
from groundplane.orbit.constellations import generate
from groundplane.scenario import (
    DEFAULT_CONSTELLATION,
    DEFAULT_MODEL,
    default_stations,
    default_users,
)
from groundplane.system.handoff import ExecutionFiles, GrpcJobs, JobLoad
from groundplane.system.processes import (
    CatalogSource,
    ChildPorts,
    ProcessPlan,
    ProcessSystem,
    child_environment,
    child_specs,
    ephemeral_ports,
    model_flag,
    shard_count,
    start_stages,
    write_sites_csv,
    write_tenants_json,
)
from groundplane.system.report import JobCounters
from groundplane.system.supervisor import ChildFailedError
from groundplane.system.system import SystemConfig

START = datetime(2026, 8, 15, tzinfo=UTC)
CLOCK = "start=2026-08-15T00:00:00Z,speed=60.0,anchor=1786000000.0"


def _plan(tmp_path: Path, satellites: int) -> ProcessPlan:
    shards = shard_count(satellites)
    return ProcessPlan(
        workdir=tmp_path,
        broker_url="mqtt://gp-service:secret@127.0.0.1:1883",
        catalog=CatalogSource(constellation="walker:1584/72/1@550km:53"),
        sites_csv=tmp_path / "sites.csv",
        min_elevation_deg=25.0,
        satellites=satellites,
        ports=ChildPorts(
            tracking=50051,
            links=50054,
            nodes=tuple(50100 + i for i in range(shards)),
            routing=50052,
            handoff=50053,
            gateway=50056,
            gateway_metrics=9100,
        ),
        clock_spec=CLOCK,
        handoff_db=tmp_path / "handoff.sqlite",
        link_tick_s=1.2,
        route_tick_s=6.0,
    )


def _flags(argv: list[str]) -> dict[str, list[str]]:
    """``--flag value`` pairs of a command line (a repeated flag keeps every value)."""
    flags: dict[str, list[str]] = {}
    for index, arg in enumerate(argv):
        if arg.startswith("--"):
            value = argv[index + 1] if index + 1 < len(argv) else ""
            flags.setdefault(arg, []).append("" if value.startswith("--") else value)
    return flags


def test_shards_hold_at_most_400_agents() -> None:
    """ceil(satellites / 400) nodes shards, at least one."""
    assert [shard_count(n) for n in (1, 96, 400, 401, 1584, 6336)] == [1, 1, 1, 2, 4, 16]


def test_children_start_in_order_with_the_serve_flags(tmp_path: Path) -> None:
    """tracking, links, the nodes shards (i/n), routing, handoff, gateway: each `groundplane
    serve <service>` on its fixed port with the shared --clock, JSON logs and no unready delay,
    the flags of its contract pointing at the others' ports, and the broker URL (a password) in
    GROUNDPLANE_BROKER of its environment rather than on its command line."""
    plan = _plan(tmp_path, 1584)
    specs = child_specs(plan)
    assert [s.name for s in specs] == [
        "tracking",
        "links",
        "nodes-0",
        "nodes-1",
        "nodes-2",
        "nodes-3",
        "routing",
        "handoff",
        "gateway",
    ]
    by_name = {s.name: s for s in specs}
    for spec in specs:
        argv = list(spec.argv)
        service = spec.name.split("-")[0]
        assert argv[3:5] == ["serve", service]
        flags = _flags(argv)
        assert flags["--clock"] == [CLOCK]
        assert flags["--log-format"] == ["json"]
        assert flags["--unready-delay"] == ["0"]
        assert spec.health_target == f"127.0.0.1:{flags['--port'][0]}"
        # The URL holds a password: in the child's environment, never on its command line.
        assert "--broker" not in flags
        assert all("secret" not in arg for arg in argv)
        assert spec.env is not None
        assert spec.env["GROUNDPLANE_BROKER"] == plan.broker_url
    tracking = _flags(list(by_name["tracking"].argv))
    assert tracking["--port"] == ["50051"]
    assert tracking["--db"] == [str(tmp_path / "tracking.sqlite3")]
    assert tracking["--constellation"] == ["walker:1584/72/1@550km:53"]
    assert tracking["--sites"] == [str(tmp_path / "sites.csv")]
    assert tracking["--min-elevation"] == ["25"]
    links = _flags(list(by_name["links"].argv))
    assert links["--tracking"] == ["127.0.0.1:50051"]
    assert links["--link-tick"] == ["1.2"]
    for shard in range(4):
        nodes = _flags(list(by_name[f"nodes-{shard}"].argv))
        assert nodes["--shard"] == [f"{shard}/4"]
        assert nodes["--port"] == [str(50100 + shard)]
        assert nodes["--execution-log"] == [str(tmp_path / f"executions-{shard}.jsonl")]
        assert nodes["--tracking"] == ["127.0.0.1:50051"]
        assert "--model" not in nodes  # the built-in model is the nodes' default
    routing = _flags(list(by_name["routing"].argv))
    assert routing["--route-tick"] == ["6"]
    assert routing["--tracking"] == ["127.0.0.1:50051"]
    handoff = _flags(list(by_name["handoff"].argv))
    assert handoff["--db"] == [str(tmp_path / "handoff.sqlite")]
    assert handoff["--lead-margin"] == ["5"]
    assert handoff["--min-dwell"] == ["30"]
    assert "--metrics-port" not in handoff
    gateway = _flags(list(by_name["gateway"].argv))
    assert gateway["--routing"] == ["127.0.0.1:50052"]
    assert gateway["--handoff"] == ["127.0.0.1:50053"]
    assert gateway["--metrics-port"] == ["9100"]
    assert "--tenants" not in gateway  # none in this plan: the gateway's demo tenant


def test_each_nodes_shard_can_log_in_with_its_own_account(tmp_path: Path) -> None:
    """With shard accounts, each nodes shard's GROUNDPLANE_BROKER is its own URL; every other
    child keeps the service account's."""
    urls = tuple(f"mqtt://gp-shard-nodes-{i}:p{i}@127.0.0.1:1883" for i in range(2))
    plan = dataclasses.replace(_plan(tmp_path, 800), shard_broker_urls=urls)
    envs = {spec.name: dict(spec.env or {}) for spec in child_specs(plan)}
    assert [envs[f"nodes-{i}"]["GROUNDPLANE_BROKER"] for i in range(2)] == list(urls)
    assert envs["routing"]["GROUNDPLANE_BROKER"] == plan.broker_url


def test_the_gateway_gets_ups_tenants_in_a_private_file(tmp_path: Path) -> None:
    """The tenants go to `serve gateway --tenants` as a JSON file only this user may read, in
    the gateway's own format, each token as its SHA-256 (`token_sha256`), never in clear."""
    path = tmp_path / "tenants.json"
    tenants = {"acme": {"tokens": ["t-1"], "max_concurrent": 4, "max_queued": 8}}
    write_tenants_json(path, tenants)
    assert json.loads(path.read_text()) == {
        "acme": {"max_concurrent": 4, "max_queued": 8, "token_sha256": [token_sha256("t-1")]}
    }
    assert path.stat().st_mode & 0o077 == 0
    plan = dataclasses.replace(_plan(tmp_path, 10), tenants_file=path)
    gateway = _flags(list(child_specs(plan)[-1].argv))
    assert gateway["--tenants"] == [str(path)]


def test_an_otlp_endpoint_goes_to_every_child_and_none_without_it(tmp_path: Path) -> None:
    """`up --otlp-endpoint URL`: every child (tracking, links, each nodes shard, routing,
    handoff, gateway) exports its spans there (`serve --otlp-endpoint URL`); without it no
    child gets the flag."""
    url = "http://127.0.0.1:4317"
    plan = dataclasses.replace(_plan(tmp_path, 1584), otlp_endpoint=url)
    specs = child_specs(plan)
    assert len(specs) == 9
    assert all(_flags(list(spec.argv))["--otlp-endpoint"] == [url] for spec in specs)
    assert not any("--otlp-endpoint" in spec.argv for spec in child_specs(_plan(tmp_path, 1584)))


def test_a_model_other_than_the_built_in_one_goes_to_the_nodes_with_its_costs() -> None:
    """The nodes get --model NAME:PREFILL_S:DECODE_S for another model, none for the built-in
    one (their default)."""
    elements = generate(DEFAULT_CONSTELLATION, START)
    config = SystemConfig(elements=elements, stations=default_stations())
    assert model_flag(config) is None
    other = dataclasses.replace(config, model=SyntheticModelSpec("tiny", 0.001, 0.02))
    assert model_flag(other) == "tiny:0.001:0.02"


def test_children_start_in_stages_of_what_they_need(tmp_path: Path) -> None:
    """tracking first; links with every nodes shard; routing with handoff; the gateway last."""
    stages = start_stages(child_specs(_plan(tmp_path, 1584)))
    assert [[spec.name for spec in stage] for stage in stages] == [
        ["tracking"],
        ["links", "nodes-0", "nodes-1", "nodes-2", "nodes-3"],
        ["routing", "handoff"],
        ["gateway"],
    ]


def test_the_nodes_serve_the_model_ups_load_expects() -> None:
    """Without --model (what up passes for the built-in model) a nodes shard serves the built-in
    model itself, answer length included, so the load's predicted session answers match; another
    model's --model text reads back with its costs."""
    assert model_specs([]) == [DEFAULT_MODEL]
    other = SyntheticModelSpec("tiny", 0.001, 0.02)
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, START), stations=default_stations(), model=other
    )
    flag = model_flag(config)
    assert flag is not None
    assert model_specs([flag]) == [other]


def test_element_files_go_to_tracking_each_with_its_flag(tmp_path: Path) -> None:
    """With element files (not a constellation) tracking gets one --elements per file."""
    plan = _plan(tmp_path, 10)
    files = dataclasses.replace(plan, catalog=CatalogSource(element_files=("/a", "/b")))
    tracking = _flags(list(child_specs(files)[0].argv))
    assert tracking["--elements"] == ["/a", "/b"]
    assert "--constellation" not in tracking
    with pytest.raises(ValueError, match="either a constellation or element files"):
        CatalogSource()


def test_ports_named_in_the_config_are_kept_and_the_rest_chosen(tmp_path: Path) -> None:
    """`up --port/--handoff-port/--gateway-port` fix those children's ports; 0 picks a free one
    per child, all distinct and below the kernel's ephemeral range."""
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, START),
        stations=default_stations(),
        tracking_address="127.0.0.1:0",
        handoff_address="127.0.0.1:0",
        gateway_address="127.0.0.1:50999",
        gateway_metrics_port=0,
    )
    ports = ChildPorts.choose(config, shards=2)
    assert ports.gateway == 50999
    assert ports.gateway_metrics not in (None, 0)
    assert ports.handoff_metrics is None
    chosen = [ports.tracking, ports.links, *ports.nodes, ports.routing, ports.handoff]
    assert 0 not in chosen
    assert len(set(chosen)) == len(chosen)
    # Below the ephemeral range: no outgoing connection takes one before its child binds it.
    assert all(10_000 <= port < ephemeral_ports()[0] for port in chosen)


def test_the_ephemeral_range_is_read_from_the_kernel_with_a_default(tmp_path: Path) -> None:
    """ip_local_port_range as two numbers; the Linux default when the file is unreadable."""
    path = tmp_path / "range"
    path.write_text("40000\t50000\n")
    assert ephemeral_ports(path) == (40000, 50000)
    assert ephemeral_ports(tmp_path / "missing") == (32768, 60999)


def test_sites_csv_reads_back_as_the_stations(tmp_path: Path) -> None:
    """The stations written for `serve tracking --sites` read back (the CLI's reader) with the
    same ids, names and coordinates."""
    stations = default_stations(25.0)
    path = tmp_path / "sites.csv"
    write_sites_csv(path, stations)
    back = load_sites_csv(str(path), 25.0, load_mask(None))
    assert [(s.id, s.name, s.lat_deg, s.lon_deg, s.alt_m) for s in back] == [
        (s.id, s.name, s.lat_deg, s.lon_deg, s.alt_m) for s in stations
    ]


def test_execution_files_count_items_run_twice_across_shards(tmp_path: Path) -> None:
    """Duplicates are job items executed more than once over every shard's JSONL file; a line
    still being written counts once complete, other requests and a missing file count nothing."""
    first, second, missing = (tmp_path / f"executions-{i}.jsonl" for i in range(3))
    files = ExecutionFiles([first, second, missing])

    def line(request_id: str) -> str:
        return (
            json.dumps({"request_id": request_id, "satellite_id": "s", "wall_time_s": 1.0}) + "\n"
        )

    first.write_text(line("up-job-r-0.i0") + line("up-job-r-0.i1") + line("load-1"))
    second.write_text(line("up-job-r-0.i2") + line("load-1"))
    assert files.duplicates() == 0
    with second.open("a") as out:
        out.write(line("up-job-r-0.i0")[:10])
    assert files.duplicates() == 0
    with second.open("a") as out:
        out.write(line("up-job-r-0.i0")[10:])
    assert files.duplicates() == 1


class _FakeJobs(pb_grpc.HandoffServiceServicer):
    """SubmitJob keeps the job; GetJob reports one more item done per call until all are."""

    def __init__(self) -> None:
        self.jobs: dict[str, pb.Job] = {}

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.SubmitJobResponse:
        job = pb.Job(
            job_id=request.job_id,
            model=request.model,
            state="running",
            item_count=len(request.prompts),
        )
        self.jobs[request.job_id] = job
        return pb.SubmitJobResponse(job=job)

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        assert job is not None
        job.done_count = min(job.item_count, job.done_count + 1)
        job.state = "done" if job.done_count == job.item_count else "running"
        return pb.GetJobResponse(job=job)

    async def _unimplemented(self, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    async def CreateSession(self, request: Any, context: Any) -> Any:
        return await self._unimplemented(context)

    async def GetSession(self, request: Any, context: Any) -> Any:
        return await self._unimplemented(context)

    async def CloseSession(self, request: Any, context: Any) -> Any:
        return await self._unimplemented(context)

    async def SendTurn(self, request: Any, context: Any) -> Any:
        return await self._unimplemented(context)

    async def WatchHandoffs(
        self, request: Any, context: Any
    ) -> AsyncIterator[pb.WatchHandoffsResponse]:
        await self._unimplemented(context)
        yield pb.WatchHandoffsResponse()

    async def ListHandoffs(self, request: Any, context: Any) -> Any:
        return await self._unimplemented(context)


async def test_job_load_submits_and_follows_jobs_over_grpc(tmp_path: Path) -> None:
    """JobLoad through GrpcJobs: every job is submitted to the HandoffService with its items,
    followed with GetJob until done; the counters show the items and the ones done."""
    fake = _FakeJobs()
    server = GrpcServer(
        [
            ServiceBinding(
                HANDOFF_SERVICE, lambda s: pb_grpc.add_HandoffServiceServicer_to_server(fake, s)
            )
        ],
        unready_delay_s=0.0,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            counters = JobCounters()
            jobs = JobLoad(
                GrpcJobs(pb_grpc.HandoffServiceStub(channel)),
                counters,
                ExecutionFiles([tmp_path / "none.jsonl"]),
                run_id="r",
                model="synth-7b",
                jobs=2,
                items=3,
            )
            async with asyncio.timeout(30):
                await jobs.run()
    finally:
        await server.stop(0.1)
    assert sorted(fake.jobs) == ["up-job-r-0", "up-job-r-1"]
    assert all(job.item_count == 3 and job.model == "synth-7b" for job in fake.jobs.values())
    assert (counters.items, counters.completed_items, counters.duplicate_items) == (6, 6, 0)


MISSING = [
    service
    for service in ("links", "nodes", "routing", "handoff", "gateway")
    if importlib.util.find_spec(f"groundplane.cli.serve_{service}") is None
]


SERVING_AGAIN_S = 10.0
"""The issue's bound: after a kill -9 the system serves again within this many wall seconds."""


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MISSING), reason=f"groundplane serve {'/'.join(MISSING)} not built yet (issue 10)"
)
async def test_multi_process_up_serves_again_after_each_child_is_killed(tmp_path: Path) -> None:
    """The whole system in child processes on the default constellation, with a job running:
    kill -9 of each child in turn (tracking, links, the nodes shard, routing, handoff, gateway):
    the supervisor restarts it, a request is served through the gateway process again within
    10 s of the kill, every child is counted once in the summary, and no job item ran twice."""
    clock = SimulatedClock(START, speed=60.0)
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, clock.now()),
        stations=default_stations(),
        users=default_users(),
        rate_rps=2.0,
        jobs=1,
        job_items=20,
        workdir=tmp_path,
        link_tick_s=1.2,
        route_tick_s=6.0,
    )
    system = ProcessSystem(config, clock, CatalogSource(constellation=DEFAULT_CONSTELLATION))
    children = ["tracking", "links", "nodes-0", "routing", "handoff", "gateway"]
    again_s: dict[str, float] = {}

    async def scenario(running: ProcessSystem) -> None:
        supervisor = running.supervisor
        assert supervisor is not None
        assert supervisor.names == children
        await _served_by(running, READY_S)
        for name in children:
            pid = supervisor.pid(name)
            assert pid is not None
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await supervisor.wait_ready_after(name, 1, SERVING_AGAIN_S)
            await _served_by(running, SERVING_AGAIN_S - (time.monotonic() - killed))
            again_s[name] = time.monotonic() - killed
        running.stop()

    async with asyncio.timeout(300):
        await system.run(scenario)
    assert set(again_s) == set(children), again_s
    summary = system.stats.summary()
    assert summary["processes"] == {"restarts": 6, "by_service": dict.fromkeys(children, 1)}
    assert summary["jobs"]["duplicate_items"] == 0


READY_S = 60.0
RETRY = Backoff(base_s=0.1, factor=1.5, cap_s=1.0)


async def _served_by(running: ProcessSystem, within_s: float) -> str:
    """Requests through the gateway process, each user in turn, until one is answered within
    ``within_s`` wall seconds; the satellite that answered it."""
    auth = (("authorization", f"Bearer {running.config.token}"),)
    rng = random.Random(0)
    failures: list[str] = []
    try:
        async with (
            asyncio.timeout(max(0.1, within_s)),
            grpc.aio.insecure_channel(running.gateway_target) as channel,
        ):
            stub = gateway_pb_grpc.InferenceServiceStub(channel)
            for attempt in itertools.count():
                user = running.config.users[attempt % len(running.config.users)]
                request = gateway_pb.InferRequest(
                    model=running.config.model.name,
                    prompt="hello",
                    location=gateway_pb.UserLocation(lat_deg=user.lat_deg, lon_deg=user.lon_deg),
                )
                try:
                    reply = await stub.Infer(request, metadata=auth, timeout=5.0)
                except grpc.aio.AioRpcError as error:
                    failures.append(f"{error.code().name}: {error.details()}")
                    await asyncio.sleep(RETRY.delay_s(attempt, rng))
                    continue
                return str(reply.satellite_id)
    except TimeoutError:
        pass
    pytest.fail(f"nothing served through the gateway within {within_s:.1f} s: {failures[-3:]}")


def test_children_do_not_inherit_ups_own_options_from_the_environment() -> None:
    """`up`'s GROUNDPLANE_* variables (its own options, e.g. GROUNDPLANE_PORT) are not passed to
    the children, which would read them as theirs; everything else is."""
    env = child_environment({"PATH": "/bin", "GROUNDPLANE_PORT": "50051", "HOME": "/h"})
    assert env == {"PATH": "/bin", "HOME": "/h"}


async def test_a_child_that_cannot_start_ends_the_run_with_its_error(tmp_path: Path) -> None:
    """When a child exits before it is ready (here every `serve` command exits 2), run() ends
    with ChildFailedError naming the first child, tracking, and the tail of its log (kept in the
    work folder); nothing after it is started."""
    clock = SimulatedClock(START, speed=60.0)
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, clock.now()),
        stations=default_stations(),
        workdir=tmp_path,
    )
    refuse = "import sys; print('refused', *sys.argv[1:3]); sys.exit(2)"
    system = ProcessSystem(
        config,
        clock,
        CatalogSource(constellation=DEFAULT_CONSTELLATION),
        program=[sys.executable, "-c", refuse],
    )
    with pytest.raises(ChildFailedError, match=r"'tracking': exited \(exit status 2\)") as caught:
        async with asyncio.timeout(60):
            await system.run()
    assert "refused serve tracking" in caught.value.message
    assert system.supervisor is not None
    assert system.supervisor.names == ["tracking"]
    assert system.supervisor.pids() == {}
    assert "refused serve tracking" in (tmp_path / "processes" / "tracking.log").read_text()


async def test_stop_while_a_child_is_starting_ends_the_run_at_once(tmp_path: Path) -> None:
    """stop() (Ctrl-C) while a child is still starting does not wait for its readiness
    timeout: run() returns promptly and cleanly, and the child is stopped."""
    started = asyncio.Event()
    pids: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids.append(int((await reader.readline()).decode()))
        started.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Tells the test it runs, then never serves health (so never becomes ready).
    hang = (
        "import os, socket, sys, time\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(f'{os.getpid()}\\n'.encode())\n"
        "time.sleep(600)\n"
    )
    clock = SimulatedClock(START, speed=60.0)
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, clock.now()),
        stations=default_stations(),
        workdir=tmp_path,
    )
    system = ProcessSystem(
        config,
        clock,
        CatalogSource(constellation=DEFAULT_CONSTELLATION),
        program=[sys.executable, "-c", hang, str(port)],
    )
    async with server, asyncio.timeout(60), asyncio.TaskGroup() as tasks:
        running = tasks.create_task(system.run(), name="test-process-system")
        await started.wait()
        system.stop()
        await running
    assert system.supervisor is not None
    assert system.supervisor.pids() == {}
    assert not Path(f"/proc/{pids[0]}").exists()
