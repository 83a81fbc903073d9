"""Bad input becomes one line on stderr and exit code 2; everything else is a bug and surfaces."""

from __future__ import annotations

import functools
import sys

import typer

from hyperexport.errors import Interrupted, UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def user_errors(command):
    """Decorate a command so a `UserError` prints `error: <message>` and exits 2, and Ctrl-C prints one
    `interrupted: ...` line and exits 130 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None
        except Interrupted as stopped:
            report_interrupt(stopped)
        except KeyboardInterrupt:
            report_interrupt(Interrupted("stopped before it finished", None))

    return wrapper


def report_interrupt(stopped: Interrupted, continue_with: str | None = None) -> None:
    """One line: what was done, what was kept and the command that continues; then exit 130."""
    kept = f"; kept {stopped.kept}" if stopped.kept else "; nothing was kept"
    then = f"; continue with: {continue_with}" if stopped.kept and continue_with else ""
    print(f"interrupted: {stopped.done}{kept}{then}", file=sys.stderr)
    raise typer.Exit(code=EXIT_INTERRUPTED) from None
