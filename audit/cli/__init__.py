"""The ``kvaudit`` command line: one typer app, one module per command.

Exit codes (documented in README.md):
    0  nothing at or above --fail-on
    1  findings at or above --fail-on
    2  a target is missing, unreadable or cannot be parsed; or a usage/configuration error
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kvaudit",
    help="Does this KV-cache press really do what its paper says?",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
)

# Each command module registers itself on `app` when imported.
from . import check as _check  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import rules as _rules  # noqa: E402,F401
from . import trace as _trace  # noqa: E402,F401


def main() -> None:
    app()
