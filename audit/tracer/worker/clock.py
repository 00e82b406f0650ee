"""``--timeout`` for a press: the CPU time of its processes, an idle guard and a wall-clock ceiling.

Wall time alone misreads a busy machine: a press that needs 60 s on a quiet machine takes 150 s when
other jobs hold the cores, and a 120 s wall limit killed it as if it had hung. So, while a press runs,
the worker measures three things of the press's processes (the child it forked and everything below
it: the worker is a subreaper, so even a process that left the session stays below it):

* **CPU time** (user + system, with that of the processes they started and reaped) against
  ``--timeout``: the work the press did, whatever the load. Time spent waiting for a core does
  not count; a loaded machine still makes each CPU second somewhat slower (shared caches, SMT),
  so leave a margin.
* **Progress**: a press whose processes gain less than :data:`IDLE_CPU_SHARE` of a core over
  ``--timeout`` seconds of wall time (at least :data:`IDLE_MIN_CPU_S`) is idle, a hang (sleeping,
  deadlocked, waiting on a pipe): killed then, in about ``--timeout`` seconds, as before. A press
  that runs, however slowly, gets its share of a core and is never idle.
* **The wall-clock ceiling**, :data:`~kvaudit.defaults.WALL_CEILING_FACTOR` × ``--timeout``
  (:func:`~kvaudit.defaults.wall_ceiling`), whatever happens: the bound kvaudit waits for any press.

Each limit reached gives its own reason, with the CPU and wall time the press got, e.g.
``used 120.0 s of CPU (limit 120 s) in 310.4 s of wall time; killed``.
"""

from __future__ import annotations

from ...defaults import WALL_CEILING_FACTOR, wall_ceiling
from .process import below

# Idle: less than 1 % of a core over a whole --timeout window (a sleeping loop uses far less; a press
# on a machine with 50 jobs per core still gets about 2 %). CPU time is counted in clock ticks (10 ms):
# short windows need a few ticks.
IDLE_CPU_SHARE = 0.01
IDLE_MIN_CPU_S = 0.05


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of every process below ``root``, with what each reaped of its own children.

    A process that exited and was reaped inside the tree counts in its reaper's ``children_*``
    times; one not reaped yet (a zombie) still reports its own.
    """
    import psutil

    total = 0.0
    for pid in below(root):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:  # it exited meanwhile (and its reaper now counts it)
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


class PressClock:
    """The time limits of one press, measured on the processes below the worker (``root``)."""

    def __init__(self, limit: float, root: int, started: float) -> None:
        self.limit = limit
        self.root = root
        self.started = started
        self.ceiling = wall_ceiling(limit)
        self.cpu = 0.0
        # The last sign of progress: when (wall clock) and at how much CPU time.
        self._progress_at, self._progress_cpu = started, 0.0
        self._idle_step = max(IDLE_CPU_SHARE * limit, IDLE_MIN_CPU_S)

    @property
    def deadline(self) -> float:
        """The wall-clock instant of the ceiling (``time.perf_counter`` scale)."""
        return self.started + self.ceiling

    def check(self, now: float) -> str | None:
        """Why the press must stop now (one line, ending in "killed"), or None."""
        self.cpu = max(self.cpu, tree_cpu_seconds(self.root))  # a process's times vanish while it is reaped
        wall = now - self.started
        if self.cpu >= self.limit:
            return f"used {_tenths(self.cpu)} s of CPU (limit {self.limit:g} s) in {wall:.1f} s of wall time; killed"
        if self.cpu - self._progress_cpu >= self._idle_step:
            self._progress_at, self._progress_cpu = now, self.cpu
        elif now - self._progress_at >= self.limit:
            return (f"idle for {now - self._progress_at:.1f} s, a hang (CPU used {_tenths(self.cpu)} s of the "
                    f"{self.limit:g} s limit in {wall:.1f} s of wall time); killed")
        if now >= self.deadline:
            return self.ceiling_reached(now)
        return None

    def ceiling_reached(self, now: float) -> str:
        return (f"wall-clock ceiling of {self.ceiling:g} s ({WALL_CEILING_FACTOR:g} x --timeout) reached "
                f"(CPU used {_tenths(self.cpu)} s of the {self.limit:g} s limit); killed")


def _tenths(seconds: float) -> str:
    """``seconds`` cut (not rounded) to tenths: 0.97 s short of a 1 s limit must not read "1.0 s of the 1 s"."""
    return f"{int(seconds * 10 + 1e-9) / 10:.1f}"
