"""Hostile input to the handoff manager and store: ids are bounded, idle sessions expire,
stored events are bounded (issue 14 D5, found by an adversarial trial)."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from groundplane.handoff.manager import ManagerConfig
from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.handoff.v1 import handoff_pb2 as pb
from groundplane.kernel.errors import InvalidArgument

from .conftest import EPOCH, SystemFactory, cycling_schedule
from .test_servicer import serving
from .test_sessions import SETTINGS, eventually


async def test_oversized_or_unprintable_ids_are_invalid_argument(
    make_system: SystemFactory,
) -> None:
    """A 60 KB session id, one with a NUL or a space, an oversized turn id or job id are each
    INVALID_ARGUMENT naming the field and the 1-128 character rule; nothing is stored."""
    async with make_system(cycling_schedule()) as system:
        manager = await system.start_manager("handoff-ids")
        for bad in ("x" * 60_000, "a\x00b", "a b"):
            with pytest.raises(InvalidArgument, match=r"session_id must be 1-128 printable"):
                await manager.create_session("chat", session_id=bad)
        with pytest.raises(InvalidArgument, match=r"job_id must be 1-128"):
            await manager.submit_job("chat", ["hi"], job_id="j" * 129)
        info = await manager.create_session("chat", session_id="tenant-a:conversation.1")
        with pytest.raises(InvalidArgument, match=r"turn_id must be 1-128"):
            await manager.send_turn(
                info.session_id,
                "hello",
                deadline=system.clock.now() + timedelta(seconds=30),
                turn_id="t" * 200,
            )
        assert [s.session_id for s in manager._store.sessions()] == ["tenant-a:conversation.1"]


async def test_an_idle_session_is_closed_after_its_ttl(make_system: SystemFactory) -> None:
    """With a 20 s idle TTL a session that never gets a turn is closed by the manager (and a
    turn to it is then refused) within a few TTLs of simulated time."""
    config = ManagerConfig(settings=SETTINGS, replan_interval_s=3.0, session_idle_ttl_s=20.0)
    async with make_system(cycling_schedule(), config=config) as system:
        manager = await system.start_manager("handoff-ttl")
        info = await manager.create_session("chat")
        await eventually(lambda: manager.get_session(info.session_id).state == "closed", 10.0)
        assert (system.clock.now() - EPOCH).total_seconds() >= 20.0


def test_stored_events_are_bounded_by_the_retention_count() -> None:
    """A store keeping 5 events holds only the newest 5 after 20 were added; ids keep growing."""
    store = HandoffStore(":memory:", max_events=5)
    for index in range(20):
        store.add_event(
            HandoffEvent(
                "session",
                f"s{index}",
                "planned",
                EPOCH,
                EPOCH,
                EPOCH,
                "",
                "",
                "",
                "",
                "none",
                0,
                0.0,
            )
        )
    kept = store.events(limit=100)
    assert [e.subject_id for e in kept] == [f"s{i}" for i in range(15, 20)]
    assert store.last_event_id() == 20


async def test_an_event_id_past_64_bits_is_invalid_argument(make_system: SystemFactory) -> None:
    """WatchHandoffs and ListHandoffs with after_event_id 2**64-1 (which overflowed into SQLite as
    INTERNAL) are INVALID_ARGUMENT naming the range."""
    async with make_system(cycling_schedule()) as system, serving(system) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await stub.ListHandoffs(pb.ListHandoffsRequest(after_event_id=2**64 - 1), timeout=10)
        assert listed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        watch = stub.WatchHandoffs(
            pb.WatchHandoffsRequest(after_event_id=2**64 - 1, replay=True), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            await watch.read()
        assert watched.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "after_event_id" in (watched.value.details() or "")
