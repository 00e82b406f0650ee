"""A reader that leaves early (``kvaudit check . | head``): a quiet exit, never an error of kvaudit.

Python ignores SIGPIPE, so writing to a pipe whose reader has gone raises ``BrokenPipeError``.
Every command runs inside :func:`reader_may_leave` (``cli/__init__.py``): when stdout or stderr
has really lost its reader, kvaudit stops without a word and exits :data:`READER_GONE`, the
code a shell shows for a program that SIGPIPE ended (``grep``, ``cat``). A ``BrokenPipeError``
on any other pipe (a tracer worker's) is a bug, reported as such. Standard library only: this
module loads with every command.
"""

from __future__ import annotations

import os
import select
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager

READER_GONE = 141  # 128 + SIGPIPE


def _lost_reader(stream: object) -> bool:
    """Whether ``stream`` is a pipe or socket whose reading end is closed (never blocks)."""
    try:
        descriptor = stream.fileno()  # type: ignore[attr-defined]
        mode = os.fstat(descriptor).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's buffer), no poll (Windows)
        return False


def output_closed() -> bool:
    """Whether stdout or stderr has lost its reader."""
    return _lost_reader(sys.stdout) or _lost_reader(sys.stderr)


def _silence() -> None:
    # What is still buffered goes to /dev/null: Python's final flush must not fail a second time.
    for stream in (sys.stdout, sys.stderr):
        if _lost_reader(stream):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (AttributeError, OSError, ValueError):
                continue


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """Run a command; flush its output; exit :data:`READER_GONE` quietly if the reader has gone."""
    import typer

    try:
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):  # inside the guard: a broken pipe shows up here
                try:
                    stream.flush()
                except (AttributeError, ValueError):
                    pass
    except BrokenPipeError as error:
        if not output_closed():
            # Not our own output: a bug (one line, exit 2), never the "findings" exit code 1.
            sys.stderr.write(f"error: internal error in kvaudit: {type(error).__name__}: {error}\n")
            raise typer.Exit(2) from None
        _silence()
        raise typer.Exit(READER_GONE) from None
