"""The rich consoles kvaudit prints with, and how anything is printed when stdout is piped.

rich's own answer to a reader that leaves (``kvaudit check . | head``) is to exit 1 on the
spot, the code that means "findings": here the ``BrokenPipeError`` goes on up instead, to the
one handler every command runs under (``cli/output.py``: a quiet exit 141).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

# Piped output (CI logs, `| grep`) is laid out at a width no line of kvaudit's reaches: a line is
# never wrapped or cut to the 80 columns rich assumes without a terminal.
PIPED_WIDTH = 100_000


class KvauditConsole(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written
        raise  # noqa: PLE0704 - called inside rich's `except BrokenPipeError`


def console(**options: Any) -> Console:
    """A rich console (``Console(**options)``) that lets a broken pipe reach kvaudit's handler."""
    return KvauditConsole(**options)


def print_unwrapped(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; piped, as whole lines (tables at their natural width), never wrapped or cut.

    In a terminal rich lays it out for the window. Piped, it is laid out at :data:`PIPED_WIDTH`
    and each line is printed with its padding stripped, as the static reporter prints its plain lines
    (``soft_wrap``).
    """
    if console.is_terminal:
        console.print(renderable)
        return
    options = console.options.update(width=PIPED_WIDTH, no_wrap=True, overflow="ignore")
    for line in console.render_lines(renderable, options, pad=False):
        text = Text.assemble(*((segment.text, segment.style) for segment in line if not segment.control))
        text.rstrip()
        console.print(text, soft_wrap=True)
