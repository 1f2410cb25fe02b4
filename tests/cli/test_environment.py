"""Every ``groundplane`` option from its ``GROUNDPLANE_<OPTION>`` environment variable."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import pytest

from groundplane.cli import environment
from groundplane.cli.main import Parser, build_parser, main

from ..data import DATA
from ..processes import GROUNDPLANE
from .test_serve_tracking import LATE, START_TIMEOUT_S, _look

ELEMENTS = str(DATA / "satellites-2026-08.3le")
PASSES = ["passes", "--elements", ELEMENTS, "--site", "52.2,0.1", "--start", "now"]


def _parse(argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    return environment.parse_args(build_parser(), argv, environ)


def _usage_error(
    argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``main`` expecting a usage error (exit 2); its stderr."""
    with pytest.raises(SystemExit) as exited:
        main(argv, environ)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_variable_name_is_the_long_option_upper_cased() -> None:
    """``--max-element-age-days`` is set by ``GROUNDPLANE_MAX_ELEMENT_AGE_DAYS``, ``-o/--output``
    by ``GROUNDPLANE_OUTPUT``; positional arguments, ``--help`` and ``--version`` by none."""
    names = {variable for _, variable in environment.options(build_parser())}
    assert {"GROUNDPLANE_MAX_ELEMENT_AGE_DAYS", "GROUNDPLANE_OUTPUT", "GROUNDPLANE_PORT"} <= names
    assert not {"GROUNDPLANE_HELP", "GROUNDPLANE_VERSION", "GROUNDPLANE_PROMPT"} & names


@pytest.mark.parametrize(
    ("argv", "environ", "port"),
    [
        ([], {}, 50051),
        ([], {"GROUNDPLANE_PORT": "6000"}, 6000),
        (["--port", "7000"], {"GROUNDPLANE_PORT": "6000"}, 7000),
        ([], {"GROUNDPLANE_PORT": ""}, 50051),
    ],
)
def test_command_line_beats_environment_beats_default(
    argv: list[str], environ: dict[str, str], port: int
) -> None:
    """In a nested subcommand (``serve tracking``) the port is the flag's, else the variable's,
    else the default; an empty variable counts as unset."""
    assert _parse(["serve", "tracking", *argv], environ).port == port


def test_a_float_option_goes_through_its_type() -> None:
    """``GROUNDPLANE_MAX_ELEMENT_AGE_DAYS=30`` arrives as the float 30.0, as the flag would."""
    args = _parse(["serve", "tracking"], {"GROUNDPLANE_MAX_ELEMENT_AGE_DAYS": "30"})
    assert args.max_element_age_days == 30.0


def test_a_bad_value_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value the option's type refuses exits 2 with the type's own message, naming the
    variable and the flag that would override it."""
    err = _usage_error(["serve", "tracking"], {"GROUNDPLANE_PORT": "x"}, capsys)
    assert "GROUNDPLANE_PORT='x': expected a TCP port 0..65535" in err
    assert "--port" in err


def test_a_value_outside_the_choices_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``choices`` are checked too: ``GROUNDPLANE_LOG_FORMAT=xml`` is refused, naming it."""
    err = _usage_error(["serve", "tracking"], {"GROUNDPLANE_LOG_FORMAT": "xml"}, capsys)
    assert "GROUNDPLANE_LOG_FORMAT='xml'" in err
    assert "invalid choice" in err


def test_only_the_chosen_command_reads_its_variables() -> None:
    """A variable meant for another command (a port that is no port) does not break one that
    has no such option."""
    args = _parse([*PASSES, "--hours", "1"], {"GROUNDPLANE_PORT": "x"})
    assert args.command == "passes"


@pytest.mark.parametrize(
    ("text", "wait"),
    [("1", True), ("TRUE", True), ("Yes", True), ("0", False), ("false", False), ("NO", False)],
)
def test_a_flag_takes_one_zero_true_false_yes_no(text: str, wait: bool) -> None:
    """``GROUNDPLANE_WAIT`` of 1/true/yes means ``--wait`` given, 0/false/no not given, in
    any case."""
    argv = ["infer", "--gateway", "g:1", "--lat", "0", "--lon", "0", "hi"]
    assert _parse(argv, {}).wait is False
    assert _parse(argv, {"GROUNDPLANE_WAIT": text}).wait is wait


def test_a_flag_on_the_command_line_beats_its_variable() -> None:
    """``--wait`` with ``GROUNDPLANE_WAIT=0`` waits."""
    argv = ["infer", "--gateway", "g:1", "--lat", "0", "--lon", "0", "--wait", "hi"]
    assert _parse(argv, {"GROUNDPLANE_WAIT": "0"}).wait is True


def test_store_false_flag_reads_true_as_given() -> None:
    """For a ``store_false`` flag, a true variable stores False (the flag given) and a false one
    leaves the default True."""
    parser = Parser(prog="demo")
    parser.add_argument("--no-color", dest="color", action="store_false")
    assert environment.parse_args(parser, [], {"GROUNDPLANE_NO_COLOR": "yes"}).color is False
    parser = Parser(prog="demo")
    parser.add_argument("--no-color", dest="color", action="store_false")
    assert environment.parse_args(parser, [], {"GROUNDPLANE_NO_COLOR": "0"}).color is True


def test_a_flag_refuses_other_words_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``GROUNDPLANE_WAIT=maybe`` exits 2 naming the variable and the words it takes."""
    argv = ["infer", "--gateway", "g:1", "--lat", "0", "--lon", "0", "hi"]
    err = _usage_error(argv, {"GROUNDPLANE_WAIT": "maybe"}, capsys)
    assert "GROUNDPLANE_WAIT='maybe': expected 1, true or yes" in err


def test_a_repeatable_option_takes_a_comma_separated_list() -> None:
    """``GROUNDPLANE_SAT=25544, 43013`` is ``--sat 25544 --sat 43013``; one ``--sat`` on the
    command line replaces the whole list."""
    environ = {"GROUNDPLANE_SAT": "25544, 43013"}
    assert _parse([*PASSES, "--hours", "1"], environ).sat == ["25544", "43013"]
    assert _parse([*PASSES, "--hours", "1", "--sat", "1"], environ).sat == ["1"]


def test_a_list_of_nothing_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``GROUNDPLANE_ELEMENTS=,`` names no file: exit 2 naming the variable, rather than an empty
    list passing for the required ``--elements``."""
    argv = ["passes", "--site", "52.2,0.1", "--start", "now", "--hours", "1"]
    err = _usage_error(argv, {"GROUNDPLANE_ELEMENTS": " , "}, capsys)
    assert "GROUNDPLANE_ELEMENTS=' , ': expected a ','-separated list, got none" in err


def test_a_repeatable_option_whose_values_hold_commas_is_split_at_semicolons() -> None:
    """``--site LAT,LON[,ALT_M]`` values hold commas, so ``GROUNDPLANE_SITE`` separates them
    with ``;``; the variable also satisfies the required choice of ``--site`` or ``--sites``."""
    argv = ["passes", "--elements", ELEMENTS, "--start", "now", "--hours", "1"]
    args = _parse(argv, {"GROUNDPLANE_SITE": "52.2,0.1; -33.9,18.4,10"})
    assert args.site == ["52.2,0.1", "-33.9,18.4,10"]


def test_required_options_are_satisfied_by_the_environment() -> None:
    """``infer --gateway --lat --lon`` (all required) can all come from variables; the bearer
    token from ``GROUNDPLANE_TOKEN`` arrives as ``--token`` would."""
    environ = {
        "GROUNDPLANE_GATEWAY": "127.0.0.1:50052",
        "GROUNDPLANE_LAT": "-33.9",
        "GROUNDPLANE_LON": "18.4",
        "GROUNDPLANE_TOKEN": "secret",
    }
    args = _parse(["infer", "hello"], environ)
    assert (args.gateway, args.lat, args.lon, args.token) == (
        "127.0.0.1:50052",
        -33.9,
        18.4,
        "secret",
    )


def test_a_required_option_missing_everywhere_is_still_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without ``--gateway`` and ``GROUNDPLANE_GATEWAY`` argparse's own error stands."""
    err = _usage_error(["infer", "--lat", "0", "--lon", "0", "hi"], {}, capsys)
    assert "the following arguments are required: --gateway" in err


def test_positional_arguments_never_come_from_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``GROUNDPLANE_PROMPT`` does not stand in for ``infer``'s PROMPT."""
    argv = ["infer", "--gateway", "g:1", "--lat", "0", "--lon", "0"]
    err = _usage_error(argv, {"GROUNDPLANE_PROMPT": "hi"}, capsys)
    assert "PROMPT" in err


def test_a_required_choice_is_satisfied_and_the_command_line_silences_the_other_variable() -> None:
    """``passes`` needs ``--end`` or ``--hours``: ``GROUNDPLANE_HOURS`` satisfies it, and with
    ``--end`` on the command line the variable for ``--hours`` is ignored (never both set)."""
    assert _parse(PASSES, {"GROUNDPLANE_HOURS": "6"}).hours == 6.0
    args = _parse([*PASSES, "--end", "now+1h"], {"GROUNDPLANE_HOURS": "6"})
    assert (args.end, args.hours) == ("now+1h", None)


def test_two_exclusive_variables_are_a_usage_error_naming_both(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``GROUNDPLANE_END`` and ``GROUNDPLANE_HOURS`` together (nothing on the command line)
    exit 2 naming both."""
    err = _usage_error(PASSES, {"GROUNDPLANE_END": "now+1h", "GROUNDPLANE_HOURS": "6"}, capsys)
    assert "GROUNDPLANE_END and GROUNDPLANE_HOURS are both set" in err


def test_help_names_every_options_variable_and_shows_its_own_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--help`` ends each option's help with ``[env GROUNDPLANE_…]`` and shows the option's
    own default even while a variable is set (and never the variable's value)."""
    environ = {"GROUNDPLANE_PORT": "6000", "GROUNDPLANE_HOST": "0.0.0.0"}
    with pytest.raises(SystemExit) as exited:
        main(["serve", "tracking", "--help"], environ)
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "port to listen on; 0 picks a free port (default: 50051) [env GROUNDPLANE_PORT]" in text
    assert "[env GROUNDPLANE_MAX_ELEMENT_AGE_DAYS]" in text
    assert "6000" not in text
    assert "0.0.0.0" not in text


def test_every_command_documents_every_variable() -> None:
    """Each subcommand's help names the variable of each of its options."""
    parser = build_parser()
    for action, variable in environment.options(parser):
        owners = [p for p in _all_parsers(parser) if action in p._actions]
        for owner in owners:
            assert variable in " ".join(owner.format_help().split()), (owner.prog, variable)


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_all_parsers(sub))
    return found


def test_an_option_without_an_environment_form_is_refused_when_built() -> None:
    """A ``count`` option has no variable spelling: listing the options raises TypeError
    naming it, so a new one cannot go unnoticed."""
    parser = Parser(prog="demo")
    parser.add_argument("--verbose", action="count")
    with pytest.raises(TypeError, match="--verbose"):
        list(environment.options(parser))


async def test_serve_tracking_takes_its_flags_from_the_environment(tmp_path: Path) -> None:
    """``groundplane serve tracking`` with no flags at all, every setting in ``GROUNDPLANE_*``
    variables, listens on 127.0.0.1 at a free port (not its default 50051), keeps its catalog
    in memory and answers from the elements and age limit the environment named."""
    environ = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "GROUNDPLANE_PORT": "0",
        "GROUNDPLANE_HOST": "127.0.0.1",
        "GROUNDPLANE_DB": ":memory:",
        "GROUNDPLANE_ELEMENTS": ELEMENTS,
        "GROUNDPLANE_SITES": str(DATA / "ground-stations.csv"),
        "GROUNDPLANE_START": LATE.isoformat(),
        "GROUNDPLANE_MAX_ELEMENT_AGE_DAYS": "200",
        "GROUNDPLANE_UNREADY_DELAY": "0",
        "GROUNDPLANE_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        GROUNDPLANE,
        "serve",
        "tracking",
        env=environ,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (lines and lines[-1].startswith("tracking serving on ")):
                line = (await process.stdout.readline()).decode()
                assert line, f"serve tracking exited early (status {await process.wait()})"
                lines.append(line.strip())
        target = lines[-1].rsplit(" ", 1)[1]
        host, port = target.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert port != "50051"
        assert "tracking catalog in :memory:" in lines
        (angle,) = (await _look(target)).look_angles
        assert angle.catalog_id == "25544"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(START_TIMEOUT_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
