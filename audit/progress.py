"""A progress bar on stderr for long runs in a terminal (rich); nothing otherwise.

Only when stderr is a terminal, and only once a phase covers enough files to take a
while: piped output, CI logs and small runs stay exactly as they were. The bar is
transient (it disappears when done) and refreshed by the engine's own calls, never by a
background thread, so that the engine may fork worker processes safely at any time.
"""

from __future__ import annotations

import sys
import time

_MIN_FILES = 200
_REFRESH_S = 0.1


class TerminalProgress:
    """The engine's progress interface (``phase``, ``advance``, ``close``) drawn with rich."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .reporters.console import console

        # markup=False: the description is plain text, never read as rich markup.
        self._progress = Progress(TextColumn("kvaudit: {task.description}", markup=False), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console(stderr=True),
                                  transient=True, auto_refresh=False)
        self._task = None
        self._started = False
        self._last = 0.0

    def phase(self, description: str, total: int) -> None:
        if total < _MIN_FILES:
            self._drop_task()
            return
        if not self._started:
            self._progress.start()
            self._started = True
        self._drop_task()
        self._task = self._progress.add_task(f"{description} {total} files", total=total)
        self._progress.refresh()

    def advance(self, amount: int) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, amount)
        now = time.monotonic()
        if now - self._last >= _REFRESH_S:
            self._last = now
            self._progress.refresh()

    def close(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False

    def _drop_task(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None


def terminal_progress() -> TerminalProgress | None:
    """A progress bar when stderr is a terminal, else None."""
    try:
        interactive = sys.stderr.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return TerminalProgress() if interactive else None
