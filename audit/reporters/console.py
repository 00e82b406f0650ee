"""The rich consoles kvaudit prints with.

rich's own answer to a reader that leaves (``kvaudit check . | head``) is to exit 1 on the
spot, the code that means "findings": here the ``BrokenPipeError`` goes on up instead, to the
one handler every command runs under (``cli/output.py``: a quiet exit 141).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


class KvauditConsole(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written
        raise  # noqa: PLE0704 - called inside rich's `except BrokenPipeError`


def console(**options: Any) -> Console:
    """A rich console (``Console(**options)``) that lets a broken pipe reach kvaudit's handler."""
    return KvauditConsole(**options)
