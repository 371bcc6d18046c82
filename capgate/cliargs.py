"""What every ``capgate`` subcommand shares: argument types with one clear message, the ``--db``
option, and the error that ends a command with that message.

A leaf module (the standard library only): the client's and the worker's subcommands use it
without loading the service's layers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


class CliError(Exception):
    """Ends a command: ``capgate: <message>`` on stderr and exit code 2, never a traceback."""


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="database (SQLite path or postgresql:// URL); "
                                                   "default $CAPGATE_DB or .capgate/capgate.db")


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An ``argparse`` type for a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {text!r}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value
