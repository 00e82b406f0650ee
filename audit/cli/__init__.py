"""The ``kvaudit`` command line: one typer app, one module per command.

Exit codes (documented in README.md):
    0  nothing at or above --fail-on (or --exit-zero)
    1  findings at or above --fail-on
    2  a target is missing, unreadable or cannot be parsed; or a usage/configuration error
  141  stdout or stderr lost its reader (``kvaudit check . | head``): stopped quietly (128 + SIGPIPE)

Start-up is kept to typer itself: the command modules import only typer and the standard
library at the top, and load the engine, rich, libcst or the tracer inside the command that
needs them. Help is plain click text (``rich_markup_mode=None``): rendering it with rich
would double the cost of ``kvaudit --help`` (benchmarks/bench_startup.py).
"""

from __future__ import annotations

from typing import Any, Optional

import typer
from typer.core import TyperGroup

from .output import reader_may_leave


class _Group(TyperGroup):
    """kvaudit's command group: a reader that leaves early (``| head``) ends every command quietly
    (``output.py``), during parsing (``--help``) as while a command runs."""

    def make_context(self, *args: Any, **kwargs: Any) -> typer.Context:
        with reader_may_leave():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: typer.Context) -> Any:
        with reader_may_leave():
            return super().invoke(ctx)


app = typer.Typer(
    name="kvaudit",
    cls=_Group,
    help="Does this KV-cache press really do what its paper says?",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"kvaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Optional[bool] = typer.Option(
        None, "--version", "-V", callback=_print_version, is_eager=True, help="Print kvaudit's version and exit."
    ),
) -> None:
    """Does this KV-cache press really do what its paper says?"""


def require_working_directory() -> None:
    """A shell left in a deleted folder: one line and exit 2, before any work (never a traceback).

    Called first by the commands that read files (paths are shown relative to the working directory).
    """
    import os

    try:
        os.getcwd()
    except OSError as err:
        problem = "no longer exists" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror})"
        typer.echo(f"error: the working directory {problem}; run kvaudit from an existing folder", err=True)
        raise typer.Exit(2) from None


# Each command module registers itself on `app` when imported; each is small and light.
from . import check as _check  # noqa: E402,F401
from . import diff as _diff  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import rules as _rules  # noqa: E402,F401
from . import trace as _trace  # noqa: E402,F401


def main() -> None:
    app()
