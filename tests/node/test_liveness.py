"""Liveness by birth, Will and incarnation epochs: the directory rules, the epoch source, and real
node processes killed with SIGKILL or frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.node.agent import EpochSource
from groundplane.node.backends import SyntheticModelSpec, predict_answer
from groundplane.node.directory import DRAINING, OFFLINE, ONLINE, NodeDirectory
from groundplane.node.v1 import node_pb2

from .conftest import SATELLITES, STATION, System, SystemFactory

SAT = SATELLITES[0]
KEEPALIVE_S = 2
WILL_BOUND_S = 1.5 * KEEPALIVE_S + 6.0
"""The broker must publish a silent node's Will within this many seconds (docs/topics.md)."""
PROCESS_START_S = 30.0
"""A node host subprocess must be online within this (interpreter start on a loaded machine)."""
FROZEN_MODEL = SyntheticModelSpec("synth-frozen", decode_s_per_token=0.25)
"""The model the subprocess serves (``--model synth-frozen:0.0:0.25``, default answer lengths):
"freeze" gets 23 pieces, ~6 s, still running when the process is frozen after its first piece."""


def status(
    epoch: int, state: node_pb2.NodeState.ValueType, *, drained: bool = False
) -> node_pb2.NodeStatus:
    return node_pb2.NodeStatus(
        satellite_id="25544", epoch=epoch, state=state, served_models=["m"], drained=drained
    )


# -- the directory's rules (pure) -------------------------------------------------------------


def test_late_will_of_an_older_epoch_cannot_undo_a_rebirth() -> None:
    """ONLINE 5, rebirth ONLINE 7, then the Will of epoch 5 arriving late: the directory keeps
    epoch 7 ONLINE, counts the ignored Will, and fences replies of epoch 5 but not of 7."""
    directory = NodeDirectory()
    assert directory.observe_status(status(5, ONLINE))
    assert directory.observe_status(status(7, ONLINE))
    assert not directory.observe_status(status(5, OFFLINE))
    view = directory.get("25544")
    assert view is not None
    assert (view.epoch, view.state) == (7, ONLINE)
    assert directory.ignored_statuses_total == 1
    assert not directory.accepts("25544", 5)
    assert directory.accepts("25544", 7)


def test_state_only_moves_forward_within_an_epoch() -> None:
    """Within one epoch ONLINE → DRAINING → OFFLINE; a redelivered birth of a dead epoch does not
    revive it, and the dead epoch's replies are refused."""
    directory = NodeDirectory()
    directory.observe_status(status(5, ONLINE))
    assert directory.observe_status(status(5, DRAINING))
    assert directory.observe_status(status(5, OFFLINE))
    assert not directory.observe_status(status(5, ONLINE))
    view = directory.get("25544")
    assert view is not None
    assert view.state == OFFLINE
    assert view.died
    assert not directory.accepts("25544", 5)
    assert directory.accepts("25544", 6)  # a newer incarnation whose birth is on its way


def test_drained_offline_keeps_its_replies_valid_but_a_will_does_not() -> None:
    """OFFLINE after a graceful drain leaves the epoch's in-flight replies acceptable; OFFLINE
    from a Will (not drained) fences them."""
    graceful, crashed = NodeDirectory(), NodeDirectory()
    for directory, drained in ((graceful, True), (crashed, False)):
        directory.observe_status(status(9, ONLINE))
        directory.observe_status(status(9, OFFLINE, drained=drained))
    assert graceful.accepts("25544", 9)
    assert not crashed.accepts("25544", 9)
    assert graceful.accepts("unknown-sat", 1)


def test_load_reports_count_only_for_their_epoch() -> None:
    """A load report of an older epoch is dropped; one of a newer epoch waits for its birth and
    is attached when the birth arrives."""
    directory = NodeDirectory()
    directory.observe_status(status(5, ONLINE))
    old = node_pb2.LoadReport(satellite_id="25544", epoch=4, in_flight=3)
    early = node_pb2.LoadReport(satellite_id="25544", epoch=6, in_flight=1)
    assert not directory.observe_load(old)
    assert not directory.observe_load(early)
    view = directory.get("25544")
    assert view is not None
    assert view.load is None
    directory.observe_status(status(6, ONLINE))
    view = directory.get("25544")
    assert view is not None
    assert view.load is not None
    assert view.load.in_flight == 1


def test_malformed_status_is_refused_with_a_teaching_message() -> None:
    """A status without a valid state is refused, naming what was expected."""
    with pytest.raises(InvalidArgument, match="ONLINE, DRAINING or OFFLINE"):
        NodeDirectory().observe_status(node_pb2.NodeStatus(satellite_id="25544", epoch=1))


# -- the epoch source -------------------------------------------------------------------------


def test_epochs_increase_strictly_even_when_the_clock_stands_still_or_steps_back(
    tmp_path: Path,
) -> None:
    """Epochs are max(last + 1, now_ns): a frozen or backward wall clock still yields strictly
    increasing epochs, also across a restart that reads the counter file."""
    readings = iter([1_000, 1_000, 400, 2_000, 10])
    path = tmp_path / "25544.epoch"
    source = EpochSource(lambda: next(readings), path)
    first = [source.next() for _ in range(4)]
    restarted = EpochSource(lambda: next(readings), path)
    assert first == [1_000, 1_001, 1_002, 2_000]
    assert restarted.last == 2_000
    assert restarted.next() == 2_001


def test_corrupt_epoch_file_is_refused(tmp_path: Path) -> None:
    """A counter file that does not hold an integer is refused, naming the file."""
    path = tmp_path / "bad.epoch"
    path.write_text("twelve\n")
    with pytest.raises(InvalidArgument, match=r"bad\.epoch"):
        EpochSource(lambda: 0, path)


# -- real node processes ----------------------------------------------------------------------


@asynccontextmanager
async def node_process(
    system: System, tmp_path: Path, model: SyntheticModelSpec
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m groundplane.node.host`` for SAT as a subprocess (killed on exit)."""
    log_path = tmp_path / "node-host.log"
    spec = f"{model.name}:{model.prefill_s_per_token}:{model.decode_s_per_token}"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "groundplane.node.host",
            "--node",
            f"{SAT}={system.broker.node_address(SAT).url}",
            "--model",
            spec,
            "--keepalive-s",
            str(KEEPALIVE_S),
            "--load-interval-s",
            "0.5",
            "--start",
            system.clock.now().isoformat(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            async with asyncio.timeout(10):
                await process.wait()


@pytest.mark.slow
async def test_killed_node_process_is_seen_dead_by_its_will(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    """A node host process serves a request, then dies by SIGKILL: the directory sees its Will
    (OFFLINE, not drained, the epoch of its birth) within 1.5 × keepalive + 6 s, and replies of
    that epoch are fenced from then on."""
    loop = asyncio.get_running_loop()
    async with (
        make_system(hosted=False) as system,
        node_process(system, tmp_path, FROZEN_MODEL) as process,
    ):
        born = await system.directory.wait_for(SAT, lambda v: v.state == ONLINE, PROCESS_START_S)
        outcome = await system.requester.infer(
            SAT,
            STATION,
            node_pb2.InferRequest(model=FROZEN_MODEL.name, prompt="ping", max_tokens=1),
            request_id="alive",
            deadline=system.deadline(10),
        )
        killed_at = loop.time()
        process.kill()
        dead = await system.directory.wait_for(SAT, lambda v: v.state == OFFLINE, WILL_BOUND_S)
        detected_s = loop.time() - killed_at
    print(f"SIGKILL seen as OFFLINE after {detected_s:.3f} s (bound {WILL_BOUND_S} s)")
    assert outcome.epoch == born.epoch
    assert outcome.text == predict_answer(FROZEN_MODEL, (), "ping", 1).text
    assert dead.epoch == born.epoch
    assert dead.died
    assert detected_s <= WILL_BOUND_S
    assert not system.directory.accepts(SAT, born.epoch)


@pytest.mark.slow
async def test_frozen_node_is_declared_dead_and_its_stale_results_are_rejected(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    """A node process frozen (SIGSTOP) mid-answer past its keepalive is declared dead by its Will
    within the bound and the pending request fails with Unavailable. Resumed (SIGCONT), it
    reconnects as a new, higher incarnation; the rest of the old answer, stamped with the dead
    epoch, is rejected by epoch; retrying the same request id at the new incarnation returns the
    stored result without running it again."""
    loop = asyncio.get_running_loop()
    request = node_pb2.InferRequest(model=FROZEN_MODEL.name, prompt="freeze", max_tokens=32)
    async with (
        make_system(hosted=False) as system,
        node_process(system, tmp_path, FROZEN_MODEL) as process,
    ):
        born = await system.directory.wait_for(SAT, lambda v: v.state == ONLINE, PROCESS_START_S)
        first_piece = asyncio.Event()
        pending = asyncio.ensure_future(
            system.requester.infer(
                SAT,
                STATION,
                request,
                request_id="frozen-1",
                deadline=system.deadline(60),
                on_piece=lambda _piece: first_piece.set(),
            )
        )
        async with asyncio.timeout(10):
            await first_piece.wait()
        process.send_signal(signal.SIGSTOP)
        stopped_at = loop.time()
        with pytest.raises(Unavailable, match="went offline"):
            async with asyncio.timeout(WILL_BOUND_S + 1):
                await pending
        detected_s = loop.time() - stopped_at
        dead = system.directory.get(SAT)
        process.send_signal(signal.SIGCONT)
        reborn = await system.directory.wait_for(
            SAT, lambda v: v.epoch > born.epoch and v.state == ONLINE, 20
        )
        async with asyncio.timeout(20):
            while system.requester.stale_rejected_total == 0:  # noqa: ASYNC110 (a counter)
                await asyncio.sleep(0.05)
        retried = await system.requester.infer(
            SAT, STATION, request, request_id="frozen-1", deadline=system.deadline(20)
        )
    print(f"SIGSTOP seen as OFFLINE after {detected_s:.3f} s (bound {WILL_BOUND_S} s)")
    assert dead is not None
    assert (dead.epoch, dead.state, dead.died) == (born.epoch, OFFLINE, True)
    assert detected_s <= WILL_BOUND_S
    assert reborn.epoch > born.epoch
    assert not system.directory.accepts(SAT, born.epoch)
    assert system.requester.stale_rejected_total > 0
    assert retried.epoch == reborn.epoch
    assert retried.result.deduplicated
    expected = predict_answer(FROZEN_MODEL, (), "freeze", 32)
    assert len(expected.pieces) > 2  # the answer spans the freeze
    assert retried.text == expected.text


@pytest.mark.slow
async def test_sigterm_drains_the_node_process_and_leaves_it_offline_drained(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    """SIGTERM to a node host process drains it: DRAINING, then OFFLINE with drained=true under
    its birth epoch (published explicitly, not by the Will), the process exits 0, and replies of
    that epoch stay acceptable (they were sent before the OFFLINE)."""
    async with (
        make_system(hosted=False) as system,
        node_process(system, tmp_path, FROZEN_MODEL) as process,
    ):
        born = await system.directory.wait_for(SAT, lambda v: v.state == ONLINE, PROCESS_START_S)
        states: list[int] = []
        system.directory.add_listener(lambda v: states.append(v.state))
        process.terminate()
        gone = await system.directory.wait_for(SAT, lambda v: v.state == OFFLINE, 10.0)
        async with asyncio.timeout(10):
            returncode = await process.wait()
    assert returncode == 0
    assert states == [DRAINING, OFFLINE]
    assert gone.epoch == born.epoch
    assert gone.drained
    assert system.directory.accepts(SAT, born.epoch)
