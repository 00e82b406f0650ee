"""``--memory-limit`` for a press and every process it starts, measured from ``/proc`` by the worker.

``RLIMIT_AS`` (set in the press's child, :func:`kvaudit.tracer.worker.process.run_in_child`) stops a
single allocation at once, but it is per process: a press that forks three children, each under the
cap, would pass it together. So while a press runs, the worker (a subreaper: every process the press
starts, even one that left its session, stays below it) polls the memory of the whole tree below it
every :data:`~kvaudit.tracer.worker.process.MEMORY_POLL_S` seconds and kills the press's child past the limit (reported as a ``crash``).

What is measured: the *proportional set size* (``Pss`` + ``SwapPss`` of ``/proc/PID/smaps_rollup``)
of the worker and of every process below it, minus the worker's own before the fork. A page
shared by n of these processes counts 1/n in each, so each page counts once in the sum: the model
and libraries the child shares with the worker cost nothing until written, a page the press copies
on write counts, and memory a press allocates and then shares with children it forks counts once
(forking does not hide it). A process whose ``smaps_rollup`` cannot be read (it made itself
non-dumpable) counts with its whole resident size, shared pages included (an upper bound).
Not counted: files written to a RAM-backed file system and not mapped, and GPU memory. Between two
polls a tree can overshoot the limit by what it allocates in ``MEMORY_POLL_S``.

A cheap first test keeps the poll light: the anonymous and shared-memory resident sizes
(``/proc/PID/status``) summed over the tree bound what it can have allocated; only when that sum
passes the limit are the ``smaps_rollup`` files read (a page-table walk each).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..options import format_bytes
from .process import below


def _fields(path: str, names: tuple[bytes, ...]) -> dict[bytes, int] | None:
    """``name: N kB`` lines of a /proc file, in bytes; None when the file cannot be read."""
    found: dict[bytes, int] = {}
    try:
        with open(path, "rb") as handle:
            for line in handle:
                name, _, rest = line.partition(b":")
                if name in names:
                    found[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return found


def resident_bound(pid: int) -> int:
    """Anonymous and shared-memory resident bytes of ``pid`` (cheap; counts pages shared with others in full)."""
    found = _fields(f"/proc/{pid}/status", (b"RssAnon", b"RssShmem", b"VmSwap"))
    return sum(found.values()) if found else 0


def proportional(pid: int) -> int:
    """Proportional set size of ``pid`` with its share of swapped pages; its whole resident size when unreadable."""
    found = _fields(f"/proc/{pid}/smaps_rollup", (b"Pss", b"SwapPss"))
    if found:
        return sum(found.values())
    found = _fields(f"/proc/{pid}/status", (b"VmRSS", b"VmSwap"))
    return sum(found.values()) if found else 0


def watch(limit: int) -> Callable[[], str | None]:
    """A check for the worker to call while a press runs: a one-line reason once the tree is past ``limit``.

    Call it in the worker before the fork (the worker's own memory then is the baseline).
    """
    worker = os.getpid()
    baseline = proportional(worker)

    def over() -> str | None:
        tree = below(worker)
        if not tree or sum(resident_bound(pid) for pid in tree) <= limit:
            return None
        used = proportional(worker) + sum(proportional(pid) for pid in tree) - baseline
        if used <= limit:
            return None
        return (f"memory: the press and the processes it started held {format_bytes(used)} "
                f"({len(tree)} process(es)), past --memory-limit {format_bytes(limit)}; killed")

    return over
