"""The CLI's shared input readers and its help: times, windows, ports, age limit, state dir."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.cli import inputs
from groundplane.cli.main import HelpFormatter, Parser, build_parser
from groundplane.kernel.clock import RealClock, SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.paths import state_dir

NOW = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("now+2h", NOW + timedelta(hours=2)),
        ("now-30m", NOW - timedelta(minutes=30)),
        ("now + 45s", NOW + timedelta(seconds=45)),
        ("now+1.5d", NOW + timedelta(days=1.5)),
        ("2026-08-15T12:00:00Z", datetime(2026, 8, 15, 12, tzinfo=UTC)),
        ("2026-08-15T14:00:00+02:00", datetime(2026, 8, 15, 12, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_now_relative_and_iso_times(text: str, expected: datetime) -> None:
    """Every CLI time is ISO-8601 UTC, ``now`` or ``now`` ± N s/m/h/d, relative to the ``now``
    given."""
    assert inputs.parse_time(text, NOW, "--at") == expected


@pytest.mark.parametrize("text", ["tomorrow", "now+2", "now+2y", "now2h", ""])
def test_parse_time_rejects_other_text_naming_the_flag_and_the_forms(text: str) -> None:
    """Anything else is an InvalidArgument naming the flag, the accepted forms and the text."""
    with pytest.raises(InvalidArgument) as caught:
        inputs.parse_time(text, NOW, "--start")
    message = caught.value.message
    assert message.startswith("--start: ")
    assert "ISO-8601" in message
    assert "now+2h" in message
    assert repr(text) in message


def test_simulated_clock_can_start_relative_to_now() -> None:
    """``--start now-30m`` (serve, up, hil) starts the simulated clock half an hour back."""
    before = RealClock().now()
    clock = inputs.make_clock("now-30m", 60.0)
    after = RealClock().now()
    assert isinstance(clock, SimulatedClock)
    assert before - timedelta(minutes=30) <= clock.start <= after - timedelta(minutes=30)


def test_window_longer_than_the_service_allows_is_refused_with_the_limit() -> None:
    """A window beyond ``max_days`` fails naming the limit in days and hours; one at the limit
    is accepted."""
    start, end = inputs.window("2026-08-15T00:00:00Z", None, 336, NOW, 14.0)
    assert end - start == timedelta(days=14)
    with pytest.raises(InvalidArgument, match=r"at most 14 days \(336 hours"):
        inputs.window("2026-08-15T00:00:00Z", None, 400, NOW, 14.0)
    with pytest.raises(InvalidArgument, match="at most 14 days"):
        inputs.window("now", "now+15d", None, NOW, 14.0)


def test_age_policy_refuses_beyond_the_flag_and_warns_no_later() -> None:
    """``--max-element-age-days`` sets the refusal age; the warning age never exceeds it."""
    assert inputs.age_policy(200).refuse_after_days == 200
    assert inputs.age_policy(200).warn_after_days == 3
    assert inputs.age_policy(1).warn_after_days == 1
    with pytest.raises(InvalidArgument, match="--max-element-age-days"):
        inputs.age_policy(-1)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "tracking", "--port", "99999"],
        ["serve", "tracking", "--port", "-1"],
        ["serve", "tracking", "--port", "http"],
        [
            "serve",
            "hil",
            "--port",
            "65536",
            "--tracking",
            "h:1",
            "--site",
            "0,0",
            "--rotctld",
            "h:1",
        ],
        ["serve", "hil", "--tracking", "h:99999", "--site", "0,0", "--rotctld", "h:1"],
        ["serve", "hil", "--tracking", "nohost", "--site", "0,0", "--rotctld", "h:1"],
        ["up", "--port", "99999"],
        ["up", "--gateway-port", "-1"],
        ["up", "--handoff-port", "65536"],
        ["infer", "--gateway", "127.0.0.1:70000", "--lat", "0", "--lon", "0", "hi"],
    ],
)
def test_ports_outside_0_to_65535_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A port beyond 0..65535 (listening) or 1..65535 (HOST:PORT) exits 2 as argparse does,
    naming the range, instead of being wrapped modulo 65536."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "65535" in capsys.readouterr().err


def test_ports_in_range_are_accepted() -> None:
    """0 (pick a free port) and 65535 are valid listening ports."""
    assert build_parser().parse_args(["serve", "tracking", "--port", "0"]).port == 0
    assert build_parser().parse_args(["serve", "tracking", "--port", "65535"]).port == 65535


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[name] = child
                found.update({f"{name} {k}": v for k, v in _subparsers(child).items()})
    return found


MY_COMMANDS = ("passes", "look", "serve tracking", "serve hil", "hil")


@pytest.mark.parametrize("command", MY_COMMANDS)
def test_help_describes_the_command_and_shows_every_default(command: str) -> None:
    """Each of these commands has a description, and every option with a default shows it in
    ``--help``."""
    parser = _subparsers(build_parser())[command]
    assert parser.description
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            continue
        shown = f"{action.default:g}" if isinstance(action.default, float) else action.default
        assert f"default: {action.default}" in text or f"default: {shown}" in text, (
            command,
            action.option_strings,
        )


def test_every_subcommand_formats_help_with_defaults() -> None:
    """The defaults formatter reaches every subcommand, including nested ones."""
    for name, parser in _subparsers(build_parser()).items():
        assert parser.formatter_class is HelpFormatter, name


def test_repeatable_sat_says_so() -> None:
    """``passes --sat`` repeats, and its help says so rather than "only this satellite"."""
    passes = _subparsers(build_parser())["passes"]
    (sat,) = [a for a in passes._actions if "--sat" in a.option_strings]
    assert "repeatable" in (sat.help or "")
    help_text = passes.format_help()
    assert "only this satellite" not in help_text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_STATE_HOME": "/var/lib/me"}, Path("/var/lib/me/groundplane")),
        ({}, Path("/home/u/.local/state/groundplane")),
        ({"XDG_STATE_HOME": ""}, Path("/home/u/.local/state/groundplane")),
        ({"XDG_STATE_HOME": "relative/dir"}, Path("/home/u/.local/state/groundplane")),
    ],
)
def test_state_dir_follows_xdg(environ: dict[str, str], expected: Path) -> None:
    """The state directory is $XDG_STATE_HOME/groundplane when that is an absolute path, else
    ~/.local/state/groundplane."""
    assert state_dir(environ, Path("/home/u")) == expected


def test_help_formatter_shows_defaults_once_and_only_real_ones() -> None:
    """An option's default follows its help, or stands alone when it has no help; ``None``,
    ``False`` and ``[]`` are not shown, nor a default its help already states; the variable that
    can set the option comes last, once."""
    parser = Parser(prog="demo")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--speed", type=float, default=60.0, help="speed factor (60)")
    parser.add_argument("--until", help="stop time (default: never)")
    parser.add_argument("--verbose", action="store_true", help="say more")
    parser.add_argument("--file", action="append", default=[], help="a file")
    text = " ".join(parser.format_help().split())
    assert "requests per second (default: 4.0) [env GROUNDPLANE_RATE]" in text
    assert "--depth DEPTH default: 3 [env GROUNDPLANE_DEPTH]" in text
    assert "speed factor (60) [env GROUNDPLANE_SPEED] --until" in text
    assert "stop time (default: never) [env GROUNDPLANE_UNTIL] --verbose" in text
    assert "say more [env GROUNDPLANE_VERBOSE] --file" in text
    assert text.endswith("a file [env GROUNDPLANE_FILE]")
    assert text.count("default:") == 3
    assert text.count("[env ") == 6


def test_clock_flag_joins_a_shared_time_line_and_excludes_start_and_speed() -> None:
    """`--clock SPEC` gives the process the spec's simulated time (a running clock's own spec
    joined again agrees with it within 10 ms); with --start or --speed, or malformed, it is a
    usage error naming --clock."""
    running = inputs.make_clock("2026-08-15T00:00:00Z", 60.0)
    assert isinstance(running, SimulatedClock)
    spec = str(running.spec())
    joined = inputs.make_clock(None, None, spec)
    assert abs((joined.now() - running.now()).total_seconds()) < 0.010
    with pytest.raises(InvalidArgument, match="--clock"):
        inputs.make_clock("now", None, spec)
    with pytest.raises(InvalidArgument, match="--clock"):
        inputs.make_clock(None, None, "start=yesterday")
    args = build_parser().parse_args(["serve", "tracking", "--clock", spec])
    assert args.clock == spec
