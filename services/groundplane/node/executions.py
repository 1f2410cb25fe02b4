"""The execution log: one JSON line per backend execution, shared by many node processes.

``groundplane serve nodes --execution-log FILE`` wraps every member's backend in an
:class:`ExecutionRecorder`: each call of ``generate`` (one execution of a request on a node, as
opposed to an answer joined to or replayed from an earlier execution) appends::

    {"request_id": "up-job-…", "satellite_id": "walker-0042", "wall_time_s": 1786838400.123}

The file is opened with ``O_APPEND`` and each line goes out in **one** ``write`` (lines are far
below ``PIPE_BUF``), so several shard processes appending to the same local file never interleave
their lines, and a line is in the file (the kernel's page cache) as soon as the call returns: a
``kill -9`` of the process right after loses nothing. :func:`read_execution_log` is the reader a
supervisor uses to count executions per request id across processes (``groundplane up``'s
duplicate-item check); a torn last line (a machine crash mid-write) is skipped and counted.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from groundplane.kernel.errors import InvalidArgument
from groundplane.node.backends import GenerateRequest, InferenceBackend


@dataclass(frozen=True)
class Execution:
    """One line of the log."""

    request_id: str
    satellite_id: str
    wall_time_s: float


class ExecutionLogWriter:
    """Appends :class:`Execution` lines to ``path`` (created if missing); use as a context
    manager or call :meth:`close`."""

    def __init__(self, path: Path, *, wall_time_s: Callable[[], float]) -> None:
        self._path = path
        self._wall_time_s = wall_time_s
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines_written = 0

    @property
    def path(self) -> Path:
        return self._path

    def record(self, request_id: str, satellite_id: str) -> None:
        """Append one line (one ``write`` call)."""
        if self._fd is None:
            raise InvalidArgument(f"execution log {self._path} is closed")
        line = (
            json.dumps(
                {
                    "request_id": request_id,
                    "satellite_id": satellite_id,
                    "wall_time_s": round(self._wall_time_s(), 6),
                },
                separators=(",", ":"),
            )
            + "\n"
        ).encode()
        written = os.write(self._fd, line)
        if written != len(line):  # not on a local file system: fail loudly, never tear lines
            raise InvalidArgument(
                f"execution log {self._path} accepted {written} of {len(line)} bytes of a line; "
                "use a local file"
            )
        self.lines_written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ExecutionRecorder:
    """An :class:`InferenceBackend` that records each execution of ``inner`` on one satellite."""

    def __init__(
        self, inner: InferenceBackend, writer: ExecutionLogWriter, satellite_id: str
    ) -> None:
        self._inner = inner
        self._writer = writer
        self._satellite_id = satellite_id

    @property
    def models(self) -> frozenset[str]:
        return self._inner.models

    def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self._writer.record(request.request_id, self._satellite_id)
        return self._inner.generate(request)


@dataclass(frozen=True)
class ExecutionLogContents:
    """What :func:`read_execution_log` found."""

    executions: tuple[Execution, ...]
    unreadable_lines: int

    def counts(self, prefix: str = "") -> Counter[str]:
        """Executions per request id (only ids starting with ``prefix``)."""
        return Counter(e.request_id for e in self.executions if e.request_id.startswith(prefix))

    def duplicates(self, prefix: str = "") -> int:
        """Request ids executed more than once."""
        return sum(1 for count in self.counts(prefix).values() if count > 1)


def read_execution_log(path: Path) -> ExecutionLogContents:
    """Every execution line of ``path`` (none when the file does not exist yet)."""
    if not path.exists():
        return ExecutionLogContents((), 0)
    executions: list[Execution] = []
    unreadable = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn line")
                item = json.loads(raw)
                executions.append(
                    Execution(
                        request_id=str(item["request_id"]),
                        satellite_id=str(item["satellite_id"]),
                        wall_time_s=float(item["wall_time_s"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                unreadable += 1
    return ExecutionLogContents(tuple(executions), unreadable)
