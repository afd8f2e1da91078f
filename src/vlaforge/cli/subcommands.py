"""Dispatch for commands with subcommands (`vlaforge data`, `vlaforge sim`, `vlaforge bench`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping


def dispatch(
    prog: str, doc: str | None, subcommands: Mapping[str, Callable[[list[str]], int]], argv: list[str], noun: str
) -> int:
    """Runs `subcommands[argv[0]](argv[1:])`; prints the help for no argument or -h, exits 2 for an unknown name.

    Args:
        prog: the command's name in messages, e.g. "vlaforge data".
        doc: the command module's docstring, printed as its help.
        subcommands: name -> entry point taking the remaining arguments and returning an exit code.
        argv: the arguments after the command's name.
        noun: what the names are called in messages ("subcommand", "benchmark").
    """
    choices = ", ".join(subcommands)
    if not argv or argv[0] in ("-h", "--help"):
        print(doc or "")
        print(f"{noun}s: {choices}")
        return 0
    if argv[0] not in subcommands:
        print(f"{prog}: unknown {noun} '{argv[0]}'; choose one of: {choices}", file=sys.stderr)
        return 2
    return int(subcommands[argv[0]](argv[1:]) or 0)
