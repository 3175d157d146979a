"""``horodate``: one console command for both daemons and the operator tools."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from horodate import __version__

# Top-level commands, in the order `horodate --help` lists them.
COMMANDS = (
    "demo",
    "appliance",
    "vault",
    "witness",
    "audit",
    "keys",
    "status",
    "doctor",
    "gps",
    "stamp",
    "verify",
    "issued",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horodate",
        description="Horodate: a time-stamping appliance that proves what time it is, "
        "and an attendance vault sealed by its tokens.",
    )
    parser.add_argument("--version", action="version", version=f"horodate {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log detail (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"horodate.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    """Levels by ``-v``; the format is journald's under systemd (horodate.logs)."""
    from horodate import logs

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logs.configure(level, sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
