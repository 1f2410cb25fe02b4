"""structlog configuration shared by every service.

Services log JSON (one object per line, machine-readable); an interactive terminal gets the
console renderer. Call :func:`configure_logging` once at process start.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console", "auto"]


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger writing to whatever ``sys.stderr`` is now (not the stream at configure time:
    a replaced or closed stream, as under a test runner's capture, must not break logging)."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(fmt: LogFormat = "auto", level: str = "INFO") -> None:
    """Configure structlog and the standard library root logger.

    ``auto`` picks the console renderer when stderr is a TTY and JSON otherwise.
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"log level must be one of DEBUG, INFO, WARNING, ERROR; got {level!r}")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric_level, stream=sys.stderr, format="%(name)s %(message)s")
