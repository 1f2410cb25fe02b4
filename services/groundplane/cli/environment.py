"""Every ``groundplane`` option can also come from an environment variable.

``--max-element-age-days 30`` and ``GROUNDPLANE_MAX_ELEMENT_AGE_DAYS=30`` mean the same, so a
container sets its flags in its environment and needs no wrapper script. The variable is
``GROUNDPLANE_`` and the long option name upper-cased with ``-`` turned into ``_``
(:func:`variable_name`). The command line wins over the environment, the environment over the
option's default:

- a value goes through the option's own ``type`` and ``choices``; a bad one is a usage error
  (exit 2) that names the variable;
- a flag (``store_true``/``store_false``) takes ``1``/``true``/``yes`` (as if given) or
  ``0``/``false``/``no`` (as if not), in any case;
- a repeatable option (``append``) takes a list separated by ``,`` — by ``;`` where the values
  themselves hold commas (its metavar has one, as ``--site LAT,LON[,ALT_M]``); an empty list is
  an error; one use of the option on the command line replaces the whole list;
- a required option (or a required choice between options) is satisfied by its variable; of
  options that exclude each other, one given on the command line silences the others'
  variables, and two set only in the environment are a usage error naming both;
- an empty variable counts as unset; positional arguments never come from the environment;
- an option marked with :func:`refuse_on_command_line` (a secret: ``ps`` shows every process's
  command line to every user) takes its value from its variable only; given on the command line
  it is a usage error whose message says where the value goes instead.

Why not ConfigArgParse (``env_var=``, ``auto_env_var_prefix``): with 1.9 the variables of a
nested subcommand's options (``groundplane serve tracking``) were silently ignored, a list
variable became one item (``a,b`` → ``['a,b']``), a bad value's error named the flag instead of
the variable, and it appends its own paragraph to every help. This module instead walks the
finished argparse parser: each option whose variable is set gets a placeholder default
(:class:`_FromEnvironment`) before parsing, and :func:`parse_args` turns the placeholders the
command line left in place into values, through the option's own conversion, after parsing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "GROUNDPLANE_"
_REFUSE = "_groundplane_refuse_on_command_line"
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


def variable_name(action: argparse.Action) -> str | None:
    """``GROUNDPLANE_PORT`` for ``--port``; None for what the environment cannot set (positional
    arguments, subcommands, ``--help``, ``--version``, options without a long name)."""
    if not action.option_strings or action.default is argparse.SUPPRESS:
        return None
    long = next((s for s in action.option_strings if s.startswith("--")), None)
    if long is None:
        return None
    return PREFIX + long[2:].upper().replace("-", "_")


def shown_default(action: argparse.Action) -> Any:
    """The option's own default, also while its variable stands in for it (help shows this)."""
    default = action.default
    return default.builtin if isinstance(default, _FromEnvironment) else default


@dataclass(eq=False)
class _FromEnvironment:
    """The default of an option while its variable is set: the text, not yet converted.

    The command line replaces it (an ``append`` option starts a fresh list: ``copy`` of this
    placeholder, which argparse takes before appending, is an empty list).
    """

    variable: str
    text: str
    action: argparse.Action
    parser: argparse.ArgumentParser
    builtin: Any

    def __copy__(self) -> list[Any]:
        return []


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's parser under it, each once."""
    seen: set[int] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())


def options(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.Action, str]]:
    """Every option of ``parser`` and its subcommands with its variable.

    Raises TypeError for an option the environment has no spelling for (a ``count``, an
    ``nargs``, a non-boolean ``store_const``…), so a new one is noticed when it is added.
    """
    for sub in _parsers(parser):
        for action in sub._actions:
            variable = variable_name(action)
            if variable is None:
                continue
            if _kind(action) is None:
                raise TypeError(
                    f"{sub.prog} {action.option_strings[0]}: {type(action).__name__} with "
                    f"nargs={action.nargs!r} has no environment form; extend "
                    "groundplane.cli.environment or give the option a plain value"
                )
            yield action, variable


def _kind(action: argparse.Action) -> str | None:
    if isinstance(action, argparse._StoreConstAction) and isinstance(action.const, bool):
        return "flag"  # store_true and store_false
    if type(action) is argparse._AppendAction and action.nargs is None:
        return "list"
    if type(action) is argparse._StoreAction and action.nargs is None:
        return "value"
    return None


def _apply(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Give every option whose variable is set a placeholder default; relax what it satisfies."""
    for sub in _parsers(parser):
        from_environment: set[argparse.Action] = set()
        for action in sub._actions:
            variable = variable_name(action)
            text = environ.get(variable, "") if variable is not None else ""
            if variable is None or not text:
                continue
            action.default = _FromEnvironment(variable, text, action, sub, action.default)
            action.required = False
            from_environment.add(action)
        for group in sub._mutually_exclusive_groups:
            if from_environment.intersection(group._group_actions):
                group.required = False


def _value(placeholder: _FromEnvironment) -> Any:
    action, parser, variable = placeholder.action, placeholder.parser, placeholder.variable
    text = placeholder.text
    kind = _kind(action)
    if kind == "flag":
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            parser.error(
                f"{variable}={text!r}: expected 1, true or yes ({action.option_strings[0]} given)"
                " or 0, false or no (not given)"
            )
        return action.const if word in _TRUE else placeholder.builtin
    items = [text]
    if kind == "list":
        separator = ";" if "," in str(action.metavar or "") else ","
        items = [item.strip() for item in text.split(separator) if item.strip()]
        if not items:
            parser.error(f"{variable}={text!r}: expected a {separator!r}-separated list, got none")
    flag = action.option_strings[0]
    values: list[Any] = []
    for item in items:
        try:
            value = parser._get_value(action, item)
            parser._check_value(action, value)
        except argparse.ArgumentError as error:
            parser.error(
                f"{variable}={text!r}: {error.message} "
                f"(from the environment; fix or unset {variable}, or pass {flag})"
            )
        values.append(value)
    return values if kind == "list" else values[0]


def refuse_on_command_line(
    action: argparse.Action, refusal: Callable[[Any], str | None]
) -> argparse.Action:
    """Mark ``action``: a value given on the command line is passed to ``refusal``, which returns
    the usage error's message (None: accepted). A value from the option's variable is never
    refused. Returns ``action``."""
    setattr(action, _REFUSE, refusal)
    return action


def _chosen(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> Iterator[argparse.ArgumentParser]:
    """The parser and the subcommand parsers ``args`` went through (by each subparsers action's
    ``dest``; every parser under one whose choice is not recorded)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(str(getattr(args, action.dest, None)))
            if chosen is not None:
                yield from _chosen(chosen, args)
            else:
                for sub in action.choices.values():
                    yield from _parsers(sub)


def _refuse_secrets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error for a marked option whose value came from the command line and is refused.

    Only the chosen subcommands' parsers are looked at (:func:`_chosen`): an option given on the
    command line is in ``args`` and is neither its default nor a placeholder of its variable.
    """
    for sub in _chosen(parser, args):
        for action in sub._actions:
            refusal = getattr(action, _REFUSE, None)
            if refusal is None or not hasattr(args, action.dest):
                continue
            value = getattr(args, action.dest)
            if value is action.default or isinstance(value, _FromEnvironment):
                continue
            message = refusal(value)
            if message is not None:
                sub.error(message)


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str]
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with every option's variable in ``environ`` as its default.

    The parser is changed (defaults, required): build a fresh one for each call. Usage errors
    exit 2 as argparse's own do.
    """
    _apply(parser, environ)
    args = parser.parse_args(argv)
    _refuse_secrets(parser, args)
    placeholders = {
        dest: value for dest, value in vars(args).items() if isinstance(value, _FromEnvironment)
    }
    for sub in {id(p.parser): p.parser for p in placeholders.values()}.values():
        for group in sub._mutually_exclusive_groups:
            _settle_exclusive(group, args)
    for dest, placeholder in placeholders.items():
        if getattr(args, dest) is placeholder:
            setattr(args, dest, _value(placeholder))
    return args


def _settle_exclusive(group: argparse._MutuallyExclusiveGroup, args: argparse.Namespace) -> None:
    """An option of the group on the command line silences the others' variables; two set only
    in the environment are an error."""
    members = group._group_actions
    waiting = [a for a in members if isinstance(getattr(args, a.dest, None), _FromEnvironment)]
    if not waiting:
        return
    given = [a for a in members if a not in waiting and getattr(args, a.dest) is not a.default]
    if given:
        for action in waiting:
            setattr(args, action.dest, shown_default(action))
        return
    if len(waiting) > 1:
        first = waiting[0].default
        names = " and ".join(str(variable_name(a)) for a in waiting)
        flags = ", ".join(a.option_strings[0] for a in members)
        first.parser.error(f"{names} are both set; expected at most one of {flags}")
