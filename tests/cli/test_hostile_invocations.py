"""Hostile or broken invocations end with one line that says what is wrong, never a traceback,
and never repeat a secret (issue 14 D10 and leaks, found by an adversarial trial)."""

from __future__ import annotations

import socket
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from groundplane.cli.main import main
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import FailedPrecondition, InvalidArgument
from groundplane.mqtt.broker import BrokerAddress
from groundplane.tracking.app import build_tracking
from groundplane.tracking.catalog import ElementRecord
from groundplane.tracking.store import TrackingStore

from ..data import DATA
from ..tracking.test_service import EPOCH_NOW


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["passes", "--elements", str(DATA / "stations.tle"), "--hours", "1e400"],
        ["look", "--frequency-hz", "inf"],
        ["look", "--frequency-hz", "nan"],
    ],
)
def test_non_finite_numbers_are_refused_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--hours 1e400 (an OverflowError traceback before) and --frequency-hz inf or nan (exit 0
    printing Infinity, which is not JSON) are usage errors: exit 2, one line naming the flag."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected a finite number" in line
    assert argv[-2] in line


def test_a_tracking_database_with_corrupt_pages_is_failed_precondition(tmp_path: Path) -> None:
    """A tracking database whose schema reads but whose record pages are garbage is refused at
    start with FAILED_PRECONDITION naming the file (sqlite3.DatabaseError escaped before)."""
    db = tmp_path / "tracking.sqlite3"
    store = TrackingStore(db)
    from groundplane.orbit.elements import parse_elements

    sets = parse_elements((DATA / "satellites-2026-08.3le").read_text())
    store.put_records([ElementRecord(e, source="x") for e in sets])
    store.close()
    data = bytearray(db.read_bytes())
    page = 4096
    data[3 * page : len(data)] = b"\xa5" * (len(data) - 3 * page)
    db.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match="not a usable groundplane tracking database"):
        build_tracking(SimulatedClock(EPOCH_NOW), db_path=db)


def test_a_corrupt_or_future_handoff_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A handoff.sqlite that is not a database, or has schema version 99, is
    FAILED_PRECONDITION naming the file; the version-99 file gets no tables added."""
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\x13" * 8192)
    with pytest.raises(FailedPrecondition, match="not a usable groundplane handoff store"):
        HandoffStore(corrupt)
    future = tmp_path / "future.sqlite"
    with sqlite3.connect(future) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(FailedPrecondition, match="schema version 99"):
        HandoffStore(future)
    with sqlite3.connect(future) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"schema_version"}


@pytest.mark.slow
def test_up_with_a_corrupt_handoff_store_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``up --in-process --data-dir`` over a corrupt handoff.sqlite exits 2 with one line
    naming the file (an ExceptionGroup traceback before)."""
    (tmp_path / "handoff.sqlite").write_bytes(b"\x13" * 8192)
    argv = ["up", "--in-process", "--data-dir", str(tmp_path), "--duration", "5"]
    assert main([*argv, "--rate", "0", "--sessions", "0", "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("groundplane up: ")
    assert "handoff.sqlite" in err[-1]
    assert not any("Traceback" in line or "ExceptionGroup" in line for line in err)


def test_up_with_an_unreachable_broker_fails_fast_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``up --broker`` to a port with nothing listening exits 2 within a few seconds (60 s of
    silence then a traceback before) with one line naming the address and not the password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GROUNDPLANE_NODE_PASSWORD", "node-secret")
    # A URL with a password comes from the environment only (the command line refuses it).
    monkeypatch.setenv("GROUNDPLANE_BROKER", f"mqtt://gp-svc:hunter2@127.0.0.1:{port}")
    began = time.monotonic()
    code = main(["up", "--duration", "3"])
    assert code == 2
    assert time.monotonic() - began < 10.0
    line = _one_error_line(capsys)
    assert f"127.0.0.1:{port}" in line
    assert "hunter2" not in line


def test_a_malformed_broker_url_error_redacts_the_password() -> None:
    """Every error about a broker URL shows it with the password replaced by ***."""
    for url in ("mqtt://u:hunter2@h:x/", "http://u:hunter2@h:1", "mqtt://u:hun@ter2@h/p"):
        with pytest.raises(InvalidArgument) as bad:
            BrokerAddress.from_url(url)
        assert "hunter2" not in bad.value.message
        assert "ter2" not in bad.value.message
        assert "***" in bad.value.message


def test_the_handoff_store_is_private_to_its_owner(tmp_path: Path) -> None:
    """handoff.sqlite (prompts, answers, checkpoints) and its -wal file are created 0600 (0644
    before), and a 0644 file left by an older build is narrowed to 0600 on open."""
    path = tmp_path / "handoff.sqlite"
    store = HandoffStore(path)
    store.close_session("nobody")  # a write: the -wal file exists now
    for name in (path, Path(f"{path}-wal")):
        assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    store.close()
    path.chmod(0o644)
    HandoffStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
