"""Start-up of `groundplane passes` and `look`: only what the command needs is imported.

The command is run in a fresh interpreter under ``python -X importtime`` (what a user's shell
runs), and the modules it loaded are read from that report. Not a timing test: a heavy module
imported again fails it on any machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from groundplane.cli.main import COMMANDS, build_parser

from ..data import DATA

ELEMENTS = str(DATA / "satellites-2026-08.3le")
#: Modules `passes` and `look` have no use for; each costs 10 to 300 ms to import.
FORBIDDEN = (
    "asyncio",
    "grpc",
    "google.protobuf",
    "matplotlib",
    "aiomqtt",
    "paho",
    "structlog",
    "prometheus_client",
    "groundplane.hil",
    "groundplane.mqtt",
    "groundplane.gateway",
    "groundplane.node",
    "groundplane.routing",
    "groundplane.handoff",
    "groundplane.links",
    "groundplane.system",
    "groundplane.plots",
    "groundplane.tracking.servicer",
    "groundplane.tracking.v1",
    "groundplane.cli.serve",
    "groundplane.cli.up",
    "groundplane.cli.hil",
    "groundplane.cli.infer",
    "groundplane.cli.plot",
)


def _imported(argv: list[str]) -> set[str]:
    """The modules a fresh ``groundplane ARGV`` imports (from ``-X importtime``'s report)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "groundplane.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "groundplane.cli.environment" in modules
    return modules


def _heavy(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if m in FORBIDDEN or m.startswith(tuple(f"{f}." for f in FORBIDDEN))
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["passes", "--help"],
        ["look", "--help"],
        [
            "passes",
            "--elements",
            ELEMENTS,
            "--sat",
            "25544",
            "--site",
            "52.2,0.1",
            "--start",
            "2026-08-16T00:00:00Z",
            "--hours",
            "3",
            "--format",
            "json",
        ],
        [
            "look",
            "--elements",
            ELEMENTS,
            "--sat",
            "25544",
            "--site",
            "52.2,0.1",
            "--at",
            "2026-08-16T00:00:00Z",
        ],
    ],
    ids=["passes-help", "look-help", "passes-run", "look-run"],
)
def test_passes_and_look_import_no_service_machinery(argv: list[str]) -> None:
    """`passes` and `look` (their help and a real run) load neither gRPC, protobuf, MQTT,
    matplotlib, logging/metrics libraries, nor any service or other command's module."""
    modules = _imported(argv)
    # The command's module itself comes in through importlib.import_module, which -X importtime
    # does not report; what it imports is.
    assert {"groundplane.cli.inputs", "groundplane.orbit.geometry"} <= modules
    assert _heavy(modules) == []


def test_the_top_level_help_imports_no_command_module() -> None:
    """`groundplane --help` lists the commands from the table in cli.main, importing none."""
    modules = _imported(["--help"])
    own = {"groundplane.cli.main", "groundplane.cli.environment"}
    assert sorted(m for m in modules if m.startswith("groundplane.cli.") and m not in own) == []
    assert _heavy(modules) == []


def _listed(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(choice.dest, choice.help) for choice in commands._choices_actions]


def test_the_command_table_matches_what_the_modules_register() -> None:
    """Every command's name, order and one-line help in cli.main's table are what its module
    registers, so `groundplane --help` (built from the table) says what the full parser says."""
    full = _listed(build_parser())
    assert full == [(name, summary) for name, _, summary in COMMANDS]
    assert _listed(build_parser(["--help"])) == full
    for name, _, _ in COMMANDS:
        assert _listed(build_parser([name, "--help"])) == full


def test_a_lazily_built_command_parses_as_the_full_parser_does() -> None:
    """The parser built for one command reads its arguments as the full parser does."""
    argv = ["passes", "--elements", "x", "--site", "1,2", "--start", "now", "--hours", "1"]
    lazy = vars(build_parser(argv).parse_args(argv))
    full = vars(build_parser().parse_args(argv))
    assert {k: v for k, v in lazy.items() if k != "handler"} == {
        k: v for k, v in full.items() if k != "handler"
    }
    assert lazy["handler"].__qualname__ == full["handler"].__qualname__ == "run_passes"
