"""``groundplane``: run the system and ask it questions.

Every subcommand lives in its own module and registers itself here. Errors a user can cause
print one line to stderr (what was expected, what came) and exit with status 2; success is 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from groundplane.kernel.errors import GroundplaneError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from groundplane.cli import hil, infer, serve, tracking, up  # noqa: PLC0415 - keeps `--help` fast

    parser = argparse.ArgumentParser(
        prog="groundplane",
        description="Ground-side control plane for orbital compute.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tracking.register(commands)
    serve.register(commands)
    up.register(commands)
    infer.register(commands)
    hil.register(commands)
    from groundplane.cli import plot  # noqa: PLC0415 - matplotlib itself loads only to draw

    plot.register(commands)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    handler: Handler = args.handler
    try:
        return handler(args)
    except GroundplaneError as error:
        print(f"groundplane {args.command}: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"groundplane {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
