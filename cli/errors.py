"""Every error a user can cause is one line on stderr: bad input `error: ...` (exit 2), Ctrl-C
`interrupted: ...` (exit 130); everything else is a bug and surfaces with its traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from typer import _click as click
from typer.core import TyperGroup

from hyperexport.errors import Interrupted, UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
F = TypeVar("F", bound=Callable[..., Any])


class OneLineErrors(TyperGroup):
    """The command group whose usage errors (a missing option, a bad value, an unknown command) print
    one `error: ...` line instead of a usage panel."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except click.exceptions.ClickException as error:
            fail(_usage_message(error))
        except typer.Abort:
            report_interrupt(Interrupted("stopped before it finished", None))
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(error: click.exceptions.ClickException) -> str:
    """click's message in our form: lower case after each colon, no trailing period."""
    parts = error.format_message().replace("Value error, ", "").strip().rstrip(".").split(": ")
    return ": ".join(part[:1].lower() + part[1:] for part in parts)


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def user_errors(command: F) -> F:
    """Decorate a command so a `UserError` prints `error: <message>` and exits 2, and Ctrl-C prints one
    `interrupted: ...` line and exits 130 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None
        except Interrupted as stopped:
            report_interrupt(stopped)
        except KeyboardInterrupt:
            report_interrupt(Interrupted("stopped before it finished", None))

    return wrapper  # type: ignore[return-value]


def report_interrupt(stopped: Interrupted, continue_with: str | None = None) -> NoReturn:
    """One line: what was done, what was kept and the command that continues; then exit 130."""
    kept = f"; kept {stopped.kept}" if stopped.kept else "; nothing was kept"
    then = f"; continue with: {continue_with}" if stopped.kept and continue_with else ""
    print(f"interrupted: {stopped.done}{kept}{then}", file=sys.stderr)
    raise typer.Exit(code=EXIT_INTERRUPTED)
