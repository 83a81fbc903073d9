"""Bad input becomes one line on stderr and exit code 2; everything else is a bug and surfaces."""

from __future__ import annotations

import functools
import sys

import typer

from hyperexport.errors import UserError

EXIT_BAD_INPUT = 2


def user_errors(command):
    """Decorate a command so a `UserError` prints `error: <message>` and exits 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None

    return wrapper
