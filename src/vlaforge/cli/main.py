"""The `vlaforge` command: one entry point, one module per subcommand.

Each subcommand lives in `vlaforge.cli.<name>` and exposes `main(argv: list[str]) -> int`; its module
docstring's first line is the help text. User errors (ValueError) print one line and
exit 2; set VLAFORGE_DEBUG=1 for the traceback. Modules are imported only when their command runs, so
`vlaforge info` does not pay for the simulator or the server. Every command first raises glibc's malloc
thresholds (`vlaforge.utils.allocator`): freed tensors are reused instead of unmapped.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from vlaforge.utils.allocator import tune_allocator

# name -> module. Add a line here to add a subcommand.
COMMANDS: dict[str, str] = {
    "predict": "vlaforge.cli.predict",
    "info": "vlaforge.cli.info",
    "demo": "vlaforge.cli.demo",
    "data": "vlaforge.cli.data",
    "sim": "vlaforge.cli.sim",
    "eval": "vlaforge.cli.eval",
    "serve": "vlaforge.cli.serve",
    "train": "vlaforge.cli.train",
    "merge-lora": "vlaforge.cli.merge_lora",
    "bench": "vlaforge.cli.bench",
    "study": "vlaforge.cli.study",
}


def _summary(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return f"(unavailable: {err})"
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: vlaforge COMMAND [ARGS...]   (vlaforge COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {_summary(module)}" for name, module in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatches to the subcommand's `main`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, 1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"vlaforge: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    tune_allocator()
    module = importlib.import_module(COMMANDS[name])
    try:
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError) as err:  # user-facing errors: the message says what to do
        if os.environ.get("VLAFORGE_DEBUG"):
            raise
        print(f"vlaforge {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
