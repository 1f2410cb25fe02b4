"""``groundplane``: run the system and ask it questions.

Every subcommand lives in its own module and registers itself here. Errors a user can cause
print one line to stderr (what was expected, what came) and exit with status 2; success is 0.
Every option can also be set by its environment variable (``GROUNDPLANE_PORT`` for ``--port``;
:mod:`groundplane.cli.environment`). With no command, the help is printed (exit 0). When the
reader of stdout goes away (``groundplane passes … | head``) the command stops quietly with
status 1.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from groundplane.cli import environment
from groundplane.kernel.errors import GroundplaneError

Handler = Callable[[argparse.Namespace], int]
DISTRIBUTION = "groundplane"


def _default_worth_showing(action: argparse.Action) -> bool:
    default = action.default
    return bool(action.option_strings) and not (
        default is None
        or default is False
        or default is argparse.SUPPRESS
        or (isinstance(default, list) and not default)
    )


def help_with_default(action: argparse.Action) -> str | None:
    """The option's help followed by its default, unless there is none to show (``None``,
    ``False``, an empty list) or the help already states it; its default alone when it has no
    help."""
    text = action.help or ""
    if not _default_worth_showing(action):
        return action.help
    if action.help is None:
        return "default: %(default)s"
    default = action.default
    plain = f"{default:g}" if isinstance(default, float) else str(default)
    if "default" in text or f"({plain})" in text:
        return text
    return f"{text} (default: %(default)s)"


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (:func:`help_with_default`; the option's own,
    also while an environment variable stands in for it) and then the variable that can set
    it: ``… (default: 50051) [env GROUNDPLANE_PORT]``."""

    def _format_action(self, action: argparse.Action) -> str:
        shown = copy.copy(action)
        shown.default = environment.shown_default(action)
        shown.help = help_with_default(shown)
        variable = environment.variable_name(action)
        if variable is not None and shown.help is not argparse.SUPPRESS:
            shown.help = f"{shown.help or ''} [env {variable}]".lstrip()
        return super()._format_action(shown)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help shows defaults; subcommand parsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def installed_version() -> str:
    """The version of the installed ``groundplane`` distribution (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - ~0.1 s

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed; run `make .venv/.installed-stamp`)"


def print_help_of(parser: argparse.ArgumentParser) -> Handler:
    """A handler for a command group run without its subcommand: print the group's help."""

    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return handler


#: Every command, in the order ``--help`` lists them: the module that registers it and its
#: one-line help. Only the module of the command being run is imported (``passes`` must not pay
#: for grpc, hil or matplotlib); the others get a placeholder parser with this help, so
#: ``groundplane --help`` still lists them all. ``tests/cli/test_cli_startup.py`` checks these
#: lines against what each module registers.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("passes", "tracking", "predict passes of satellites over sites"),
    ("look", "tracking", "look angles of one satellite from one site"),
    ("eclipses", "eclipses", "shadow passages (penumbra and umbra) of satellites"),
    ("serve", "serve", "run one service"),
    ("up", "up", "run the whole system on this machine"),
    ("infer", "infer", "send one prompt through a gateway and stream the answer"),
    ("hil", "hil", "track one pass with rotctld/rigctld"),
    ("plot", "plot", "draw passes, ground tracks or a run as PNG or SVG"),
)


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the top-level options,
    ``--help`` and ``--version``, take no value), or None."""
    return next((token for token in argv if not token.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``groundplane`` parser: every command in full, or with ``argv`` only the command it
    runs in full (the others listed by name and help, their modules not imported)."""
    import importlib  # noqa: PLC0415 - only the commands asked for are imported

    modules = {name: module for name, module, _ in COMMANDS}
    # None: all; "": none (no command, or a word that is none: argparse's error lists them).
    loaded = None if argv is None else modules.get(command_of(argv) or "", "")
    parser = Parser(
        prog="groundplane",
        description="Ground-side control plane for orbital compute. "
        "`groundplane COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.set_defaults(handler=print_help_of(parser), command=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for name, module, summary in COMMANDS:
        if loaded is not None and module != loaded:
            commands.add_parser(name, help=summary, add_help=False)
        elif module not in registered:
            registered.add(module)
            importlib.import_module(f"groundplane.cli.{module}").register(commands)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: the installed version, read (importlib.metadata, ~0.1 s) only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"{parser.prog} {installed_version()}\n")  # stdout, as argparse's own
        parser.exit()


_NEGATIVE_VALUE = re.compile(r"-[0-9.]")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--site -33.9,18.4`` → ``--site=-33.9,18.4``.

    argparse reads a value starting with ``-`` as an option unless it is a plain negative
    number; coordinates like ``-33.9,18.4`` are not, so they are glued to their flag first.
    """
    joined: list[str] = []
    for token in argv:
        previous = joined[-1] if joined else ""
        if previous.startswith("--") and "=" not in previous and _NEGATIVE_VALUE.match(token):
            joined[-1] = f"{previous}={token}"
        else:
            joined.append(token)
    return joined


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Run ``groundplane`` with ``argv`` (default: ``sys.argv[1:]``); every option not on the
    command line may come from its variable in ``environ`` (:mod:`groundplane.cli.environment`).
    Returns the exit status."""
    try:
        try:
            return _run(sys.argv[1:] if argv is None else argv, environ)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout went away. As the Python docs on SIGPIPE advise: point stdout at
        # devnull so the interpreter's final flush does not fail again, and exit 1 quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = build_parser(argv)
    args = environment.parse_args(parser, join_negative_values(argv), environ)
    handler: Handler = args.handler
    name = " ".join(part for part in (args.command, getattr(args, "service", None)) if part)
    try:
        return handler(args)
    except BrokenPipeError:
        raise
    except GroundplaneError as error:
        print(f"groundplane {name}: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"groundplane {name}: {error}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # A TaskGroup's failure (``up`` starting its parts): one line per distinct error when
        # every one is an error the user can act on, else the traceback (a bug).
        leaves = _leaves(group)
        if not leaves or not all(isinstance(e, GroundplaneError | OSError) for e in leaves):
            raise
        for line in dict.fromkeys(_one_line(e) for e in leaves):
            print(f"groundplane {name}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The errors inside ``group`` (nested groups flattened), without cancellations."""
    import asyncio  # noqa: PLC0415 - only after a TaskGroup failed: startup stays lean

    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        elif not isinstance(error, asyncio.CancelledError):
            leaves.append(error)
    return leaves


def _one_line(error: BaseException) -> str:
    return error.message if isinstance(error, GroundplaneError) else str(error)


if __name__ == "__main__":
    raise SystemExit(main())
