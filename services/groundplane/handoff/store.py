"""SQLite persistence of sessions, their transcripts and checkpoints, jobs, and handoff history.

Every change the manager makes is committed before it is acted on, so a manager restarted on the
same file (``HandoffStore(path)``) picks up every session and job where the last one left them:

- ``sessions``: model, the serving assignment (satellite, station, session epoch), the highest
  epoch ever *reserved* (an epoch is reserved before it is sent to any node, so a restarted
  manager never reuses one), state (``active``/``checkpointed``/``closed``) and resume time;
- ``turns``: the ground copy of every answered turn (the checkpoint a session resumes from when
  its node is lost), keyed by index and by the caller's turn id (idempotency);
- ``checkpoints``: the latest snapshot bytes a node exported, with its modelled size;
- ``jobs`` / ``job_items``: every item's prompt and, once done, its result (written once) and
  the satellite that ran it; a pending item's satellite is where it was sent without an answer;
- ``handoffs``: the history of handoff events.

WAL mode, ``synchronous=NORMAL``; statements are short local writes done on the event loop thread.
Portable SQL (no SQLite-only syntax beyond the pragmas) so PostgreSQL can follow.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from groundplane.handoff.nodes import Turn
from groundplane.kernel.errors import AlreadyExists, FailedPrecondition, NotFound

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    satellite_id TEXT NOT NULL DEFAULT '',
    station_id TEXT NOT NULL DEFAULT '',
    epoch INTEGER NOT NULL DEFAULT 0,
    reserved_epoch INTEGER NOT NULL DEFAULT 0,
    since TEXT NOT NULL,
    resume_at TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    turn_index INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    satellite_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (session_id, turn_index),
    UNIQUE (session_id, turn_id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    session_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    snapshot BLOB NOT NULL,
    state_bytes INTEGER NOT NULL,
    taken_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    max_tokens INTEGER NOT NULL,
    state TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL,
    item_index INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    result TEXT,
    satellite_id TEXT NOT NULL DEFAULT '',
    done_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, item_index)
);
CREATE TABLE IF NOT EXISTS handoffs (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    planned_at TEXT NOT NULL,
    los TEXT NOT NULL,
    from_satellite TEXT NOT NULL,
    from_station TEXT NOT NULL,
    to_satellite TEXT NOT NULL,
    to_station TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes_moved INTEGER NOT NULL,
    interruption_s REAL NOT NULL,
    detail TEXT NOT NULL
);
"""

ACTIVE = "active"
CHECKPOINTED = "checkpointed"
CLOSED = "closed"
JOB_RUNNING = "running"
JOB_DONE = "done"


def _text(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _time(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    model: str
    state: str
    satellite_id: str
    station_id: str
    epoch: int
    reserved_epoch: int
    since: datetime
    resume_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TurnRecord:
    index: int
    turn_id: str
    prompt: str
    answer: str
    satellite_id: str
    epoch: int
    answered_at: datetime

    @property
    def turn(self) -> Turn:
        return Turn(self.prompt, self.answer)


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    model: str
    max_tokens: int
    state: str
    item_count: int
    done_count: int
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    """One step of a handoff (or a job move, checkpoint, resume) as recorded and watched."""

    subject_kind: str
    """``session`` or ``job``."""
    subject_id: str
    state: str
    """``planned``, ``started``, ``completed``, ``failed``, ``checkpointed``, ``resumed``."""
    at: datetime
    planned_at: datetime
    los: datetime
    from_satellite: str
    from_station: str
    to_satellite: str
    to_station: str
    path: str
    bytes_moved: int
    interruption_s: float
    detail: str = ""
    event_id: int = 0


def _private_files(path: Path | str) -> None:
    """Create the store file 0600 before SQLite opens it (it holds prompts, answers and
    checkpoints; SQLite gives its -wal and -shm files the database file's mode); an existing
    file and its -wal/-shm are narrowed to 0600."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


MAX_EVENTS = 100_000
"""Handoff events kept by default: older ones are deleted as new ones are added."""


class HandoffStore:
    """The manager's durable state in one SQLite file (``:memory:`` for a throwaway one).

    At most ``max_events`` handoff events are kept: adding one past that deletes the oldest.
    """

    def __init__(self, path: Path | str, *, max_events: int = MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be ≥ 1, got {max_events}")
        self._max_events = max_events
        _private_files(path)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            statements = [x for x in _SCHEMA.strip().split(";") if x.strip()]
            self._db.execute(statements[0])  # schema_version: read it before touching the rest
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            if row is None or row[0] == SCHEMA_VERSION:
                for statement in statements[1:]:
                    self._db.execute(statement)
        except sqlite3.DatabaseError as bad:
            self._db.close()
            raise FailedPrecondition(
                f"{str(path)!r} is not a usable groundplane handoff store ({bad}); point the "
                "service at a new file or restore it from a backup"
            ) from None
        if row is None:
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            self._db.close()
            raise FailedPrecondition(
                f"handoff store {path} has schema version {row[0]}; this build reads version "
                f"{SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- sessions --------------------------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        record.session_id,
                        record.model,
                        record.state,
                        record.satellite_id,
                        record.station_id,
                        record.epoch,
                        record.reserved_epoch,
                        _text(record.since),
                        _text(record.resume_at),
                        _text(record.created_at),
                    ),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                f"session {record.session_id!r} already exists; choose another session id"
            ) from None

    def session(self, session_id: str) -> SessionRecord:
        row = self._db.execute(
            "SELECT * FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id!r}; create it first (CreateSession)")
        return _session(row)

    def sessions(self, *, include_closed: bool = False) -> list[SessionRecord]:
        query = "SELECT * FROM sessions" + ("" if include_closed else " WHERE state != 'closed'")
        return [_session(row) for row in self._db.execute(query + " ORDER BY created_at")]

    def reserve_epoch(self, session_id: str) -> int:
        """A session epoch never used before for this session (persisted before it is used)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET reserved_epoch = reserved_epoch + 1 WHERE session_id = ?",
                (session_id,),
            )
            row = db.execute(
                "SELECT reserved_epoch FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return int(row[0])

    def assign(  # noqa: PLR0913 - every column of the route switch, written in one transaction
        self,
        session_id: str,
        *,
        satellite_id: str,
        station_id: str,
        epoch: int,
        since: datetime,
        state: str = ACTIVE,
        resume_at: datetime | None = None,
        checkpoint: tuple[bytes, int] | None = None,
        event: HandoffEvent | None = None,
    ) -> int:
        """Switch the session's route (and record its checkpoint and event) in one transaction."""
        event_id = 0
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET satellite_id = ?, station_id = ?, epoch = ?, since = ?, "
                "state = ?, resume_at = ? WHERE session_id = ?",
                (
                    satellite_id,
                    station_id,
                    epoch,
                    _text(since),
                    state,
                    _text(resume_at),
                    session_id,
                ),
            )
            if checkpoint is not None:
                snapshot, state_bytes = checkpoint
                db.execute("DELETE FROM checkpoints WHERE session_id = ?", (session_id,))
                db.execute(
                    "INSERT INTO checkpoints VALUES (?,?,?,?,?)",
                    (session_id, epoch, snapshot, state_bytes, _text(since)),
                )
            if event is not None:
                event_id = self._insert_event(db, event)
        return event_id

    def close_session(self, session_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE sessions SET state = 'closed' WHERE session_id = ?", (session_id,))

    def add_turn(self, session_id: str, record: TurnRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO turns VALUES (?,?,?,?,?,?,?,?)",
                (
                    session_id,
                    record.index,
                    record.turn_id,
                    record.prompt,
                    record.answer,
                    record.satellite_id,
                    record.epoch,
                    _text(record.answered_at),
                ),
            )

    def turns(self, session_id: str) -> list[TurnRecord]:
        rows = self._db.execute(
            "SELECT turn_index, turn_id, prompt, answer, satellite_id, epoch, answered_at "
            "FROM turns WHERE session_id = ? ORDER BY turn_index",
            (session_id,),
        )
        return [_turn(row) for row in rows]

    def turn_by_id(self, session_id: str, turn_id: str) -> TurnRecord | None:
        row = self._db.execute(
            "SELECT turn_index, turn_id, prompt, answer, satellite_id, epoch, answered_at "
            "FROM turns WHERE session_id = ? AND turn_id = ?",
            (session_id, turn_id),
        ).fetchone()
        return None if row is None else _turn(row)

    def checkpoint(self, session_id: str) -> tuple[int, bytes, int] | None:
        """(epoch, snapshot, modelled state bytes) of the latest exported checkpoint."""
        row = self._db.execute(
            "SELECT epoch, snapshot, state_bytes FROM checkpoints WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), int(row[2]))

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(
        self, job_id: str, model: str, max_tokens: int, prompts: list[str], at: datetime
    ) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO jobs VALUES (?,?,?,?,?,?,?)",
                    (job_id, model, max_tokens, JOB_RUNNING, len(prompts), _text(at), ""),
                )
                db.executemany(
                    "INSERT INTO job_items (job_id, item_index, prompt) VALUES (?,?,?)",
                    [(job_id, index, prompt) for index, prompt in enumerate(prompts)],
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"job {job_id!r} already exists; choose another job id") from None

    def job(self, job_id: str) -> JobRecord:
        row = self._db.execute(
            "SELECT j.job_id, j.model, j.max_tokens, j.state, j.item_count, "
            "(SELECT COUNT(*) FROM job_items i WHERE i.job_id = j.job_id AND i.result IS NOT NULL),"
            " j.created_at, j.finished_at FROM jobs j WHERE j.job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}; submit it first (SubmitJob)")
        return JobRecord(
            row[0],
            row[1],
            int(row[2]),
            row[3],
            int(row[4]),
            int(row[5]),
            _time(row[6]) or datetime.min.replace(tzinfo=UTC),
            _time(row[7]),
        )

    def jobs(self, *, include_done: bool = False) -> list[str]:
        query = "SELECT job_id FROM jobs" + ("" if include_done else " WHERE state != 'done'")
        return [row[0] for row in self._db.execute(query + " ORDER BY created_at")]

    def pending_items(self, job_id: str) -> list[tuple[int, str]]:
        rows = self._db.execute(
            "SELECT item_index, prompt FROM job_items WHERE job_id = ? AND result IS NULL "
            "ORDER BY item_index",
            (job_id,),
        )
        return [(int(r[0]), r[1]) for r in rows]

    def item_results(self, job_id: str) -> dict[int, str]:
        rows = self._db.execute(
            "SELECT item_index, result FROM job_items WHERE job_id = ? AND result IS NOT NULL",
            (job_id,),
        )
        return {int(r[0]): r[1] for r in rows}

    def item_nodes(self, job_id: str) -> dict[int, str]:
        """Pending items that were sent to a node without an answer: index → satellite id.

        Such an item may have run there (its answer lost or late); it is sent only to that
        node again, whose engine answers its request id from the execution it already has."""
        rows = self._db.execute(
            "SELECT item_index, satellite_id FROM job_items "
            "WHERE job_id = ? AND result IS NULL AND satellite_id != ''",
            (job_id,),
        )
        return {int(r[0]): r[1] for r in rows}

    def dispatch_item(self, job_id: str, index: int, satellite_id: str) -> None:
        """Record, before it is sent, that a pending item goes to ``satellite_id``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE job_items SET satellite_id = ? "
                "WHERE job_id = ? AND item_index = ? AND result IS NULL",
                (satellite_id, job_id, index),
            )

    def release_item(self, job_id: str, index: int) -> None:
        """Forget where a pending item was sent (that node refused it or is known dead)."""
        self.dispatch_item(job_id, index, "")

    def complete_item(
        self, job_id: str, index: int, result: str, satellite_id: str, at: datetime
    ) -> bool:
        """Keep an item's result; False when it was already kept (the first result stays)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE job_items SET result = ?, satellite_id = ?, done_at = ? "
                "WHERE job_id = ? AND item_index = ? AND result IS NULL",
                (result, satellite_id, _text(at), job_id, index),
            )
            return cursor.rowcount == 1

    def finish_job(self, job_id: str, at: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'done', finished_at = ? WHERE job_id = ?",
                (_text(at), job_id),
            )

    # -- handoff history -------------------------------------------------------------------------

    def add_event(self, event: HandoffEvent) -> int:
        with self._transaction() as db:
            return self._insert_event(db, event)

    def _insert_event(self, db: sqlite3.Connection, e: HandoffEvent) -> int:
        cursor = db.execute(
            "INSERT INTO handoffs (subject_kind, subject_id, state, at, planned_at, los, "
            "from_satellite, from_station, to_satellite, to_station, path, bytes_moved, "
            "interruption_s, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                e.subject_kind,
                e.subject_id,
                e.state,
                _text(e.at),
                _text(e.planned_at),
                _text(e.los),
                e.from_satellite,
                e.from_station,
                e.to_satellite,
                e.to_station,
                e.path,
                e.bytes_moved,
                e.interruption_s,
                e.detail,
            ),
        )
        event_id = int(cursor.lastrowid or 0)
        # Retention: keep the newest max_events (ids only grow: AUTOINCREMENT).
        db.execute("DELETE FROM handoffs WHERE event_id <= ?", (event_id - self._max_events,))
        return event_id

    def last_event_id(self) -> int:
        """The id of the newest handoff event (0 when there is none)."""
        row = self._db.execute("SELECT MAX(event_id) FROM handoffs").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def events(
        self, *, subject_id: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[HandoffEvent]:
        query = "SELECT * FROM handoffs WHERE event_id > ?"
        args: list[object] = [after_id]
        if subject_id:
            query += " AND subject_id = ?"
            args.append(subject_id)
        rows = self._db.execute(query + " ORDER BY event_id LIMIT ?", (*args, limit))
        return [
            HandoffEvent(
                r[1],
                r[2],
                r[3],
                _req(r[4]),
                _req(r[5]),
                _req(r[6]),
                r[7],
                r[8],
                r[9],
                r[10],
                r[11],
                int(r[12]),
                float(r[13]),
                r[14],
                int(r[0]),
            )
            for r in rows
        ]


def _req(text: str) -> datetime:
    value = _time(text)
    return value if value is not None else datetime.min.replace(tzinfo=UTC)


def _session(row: tuple[object, ...]) -> SessionRecord:
    return SessionRecord(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        int(str(row[5])),
        int(str(row[6])),
        _req(str(row[7])),
        _time(str(row[8])),
        _req(str(row[9])),
    )


def _turn(row: tuple[object, ...]) -> TurnRecord:
    return TurnRecord(
        int(str(row[0])),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        int(str(row[5])),
        _req(str(row[6])),
    )
