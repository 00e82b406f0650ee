"""``--timeout`` under load (issue 15, part 3): CPU time of the press's processes, an idle guard, a ceiling.

Two kinds of tests:

* the clock's decisions (:class:`kvaudit.tracer.worker.clock.PressClock`) on CPU readings the test
  gives it, no process, no timing: which limit is reached, when, and what the reason says;
* real presses on the suite's shared worker (a module's import is the user's code, run in a child with
  ``list``): a CPU-bound press on a core that two competing busy processes share gets more wall time
  than ``--timeout`` and is not killed; a sleeping press, one that spins, one whose children spin, and
  one that crawls are each stopped by their own limit. No test times anything: on a machine so busy
  that a press gets less than a third of a core (a sixth for the shared core), the ceiling rightly
  comes first, and the tests that need the CPU limit say so and skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvaudit.defaults import WALL_CEILING_FACTOR, wall_ceiling
from kvaudit.tracer import TraceOptions
from kvaudit.tracer.worker import clock
from kvaudit.tracer.worker.clock import IDLE_MIN_CPU_S, PressClock

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


# -- the clock's decisions, on given CPU readings ------------------------------------------------
def readings(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """Make the clock read ``values`` as the tree's CPU seconds, one per check."""
    feed = iter(values)
    monkeypatch.setattr(clock, "tree_cpu_seconds", lambda root: next(feed))


def test_cpu_below_the_limit_is_never_a_timeout_however_long_the_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A press that gets a third of a core: 1 s of CPU every 3 s of wall time, for 100 s of CPU.
    timeline = [(3.0 * s, 1.0 * s) for s in range(1, 101)]
    readings(monkeypatch, [cpu for _, cpu in timeline])
    watch = PressClock(120.0, root=0, started=0.0)
    assert [watch.check(now) for now, _ in timeline] == [None] * 100  # 300 s of wall time, past 120
    assert watch.ceiling == wall_ceiling(120.0) == WALL_CEILING_FACTOR * 120.0


def test_the_cpu_limit_names_the_cpu_and_the_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    readings(monkeypatch, [60.0, 119.9, 120.0])
    watch = PressClock(120.0, root=0, started=100.0)
    assert watch.check(200.0) is None and watch.check(350.0) is None
    assert watch.check(410.4) == "used 120.0 s of CPU (limit 120 s) in 310.4 s of wall time; killed"


def test_a_press_without_progress_is_idle_after_the_timeout_in_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3.1 s of work, then nothing but a few clock ticks (a sleeping loop).
    readings(monkeypatch, [3.1, 3.11, 3.12, 3.12, 3.13])
    watch = PressClock(120.0, root=0, started=0.0)
    assert watch.check(5.0) is None  # progress: 3.1 s of CPU since the start
    assert watch.check(60.0) is None and watch.check(100.0) is None and watch.check(124.9) is None
    assert watch.check(125.2) == ("idle for 120.2 s, a hang (CPU used 3.1 s of the 120 s limit in 125.2 s of wall "
                                  "time); killed")


def test_slow_progress_is_not_idle_and_the_ceiling_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 % of a core, on and on: never idle, never at the CPU limit; the ceiling (3 x 10 s) stops it.
    times = [0.5 * i for i in range(1, 61)]
    readings(monkeypatch, [0.02 * t for t in times])
    watch = PressClock(10.0, root=0, started=0.0)
    reasons = [watch.check(t) for t in times]
    assert reasons[:-1] == [None] * 59
    assert reasons[-1] == "wall-clock ceiling of 30 s (3 x --timeout) reached (CPU used 0.6 s of the 10 s limit); killed"


def test_a_short_timeout_still_needs_a_few_clock_ticks_of_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 % of a 1 s window is one clock tick: the step is IDLE_MIN_CPU_S, so a tick now and then is idle.
    readings(monkeypatch, [0.01, 0.02, 0.03])
    watch = PressClock(1.0, root=0, started=0.0)
    assert watch.check(0.5) is None
    assert watch.check(0.9) is None
    assert watch.check(1.0).startswith("idle for 1.0 s, a hang")
    assert IDLE_MIN_CPU_S > 0.03


def test_a_reading_that_drops_while_a_process_is_reaped_does_not_restart_the_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    readings(monkeypatch, [0.9, 0.4, 1.0])
    watch = PressClock(1.0, root=0, started=0.0)
    assert watch.check(1.0) is None and watch.check(1.5) is None
    assert watch.check(2.0).startswith("used 1.0 s of CPU (limit 1 s)")


# -- real presses on the shared worker ---------------------------------------------------------
def module(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text("import os, subprocess, sys, time\n" + textwrap.dedent(body) + "\n\nclass Helper:\n    pass\n")
    return path


def import_error(path: Path, shared_worker, timeout: float) -> str | None:
    """The one line ``list`` gives for ``path`` under ``--timeout timeout``, or None when it imported."""
    shared_worker.use(TraceOptions(timeout=timeout))
    listed = shared_worker.list_classes(str(path), str(path), None)
    if listed.failure is not None:
        return listed.error
    assert [c.name for c in listed.classes] == ["Helper"]
    return None


# The three reasons of the worker's clock (kvaudit.tracer.worker.clock), after "timeout: ".
REASONS = {
    "cpu": re.compile(r": timeout: used (?P<cpu>\d+\.\d) s of CPU \(limit 1 s\) in \d+\.\d s of wall time; killed$"),
    "idle": re.compile(r": timeout: idle for 1\.\d s, a hang \(CPU used (?P<cpu>\d+\.\d) s of the 1 s limit in "
                       r"\d+\.\d s of wall time\); killed$"),
    "ceiling": re.compile(r": timeout: wall-clock ceiling of 3 s \(3 x --timeout\) reached \(CPU used (?P<cpu>\d+\.\d) s "
                          r"of the 1 s limit\); killed$"),
}


def stopped_by(message: str | None) -> tuple[str, float]:
    """(which limit, CPU seconds it reports) of a press stopped under --timeout 1."""
    assert message is not None, "the press was not stopped"
    for kind, pattern in REASONS.items():
        found = pattern.search(message)
        if found:
            return kind, float(found["cpu"])
    raise AssertionError(f"not a timeout of the worker's clock: {message}")


def unless_starved(kind: str, cpu: float, wanted: str) -> None:
    """Skip when the machine gave the press under a third of a core: then the ceiling comes first, rightly."""
    if kind == "ceiling" and wanted != "ceiling" and cpu < 1.0:
        pytest.skip(f"the machine is too busy: the press got {cpu} s of CPU in the 3 s ceiling")


BURN = """
os.sched_setaffinity(0, {{{core}}})  # on the core the competitors spin on
start = time.process_time()
while time.process_time() - start < {need}:
    pass
"""
SPIN = "import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_busy_press_on_a_shared_core_gets_its_cpu_time_not_a_timeout(tmp_path: Path, shared_worker) -> None:
    # The press needs 1 s of CPU, --timeout is 2 s. Two busy processes pinned to its core leave it a
    # third of the core at best: it needs 3 s of wall time or more, and a wall-clock timeout of 2 s
    # killed it. The ceiling (6 s) leaves room down to a sixth of the core.
    core = min(os.sched_getaffinity(0))
    competitors = [subprocess.Popen([sys.executable, "-c", SPIN.format(core=core)]) for _ in range(2)]
    try:
        message = import_error(module(tmp_path, "busy_on_shared_core", BURN.format(core=core, need=1.0)),
                               shared_worker, timeout=2.0)
    finally:
        for competitor in competitors:
            competitor.kill()
            competitor.wait()
    if message is not None and "wall-clock ceiling of 6 s" in message:
        pytest.skip(f"the machine is too busy: the press got under a sixth of a core ({message})")
    assert message is None


def test_a_sleeping_press_is_stopped_as_idle(tmp_path: Path, shared_worker) -> None:
    kind, cpu = stopped_by(import_error(module(tmp_path, "sleeps", "time.sleep(120)"), shared_worker, timeout=1.0))
    assert (kind, cpu) == ("idle", 0.0)


def test_a_spinning_press_is_stopped_at_its_cpu_limit(tmp_path: Path, shared_worker) -> None:
    kind, cpu = stopped_by(import_error(module(tmp_path, "spins", "while True:\n    pass"), shared_worker, timeout=1.0))
    unless_starved(kind, cpu, "cpu")
    assert kind == "cpu" and cpu >= 1.0


def test_the_cpu_of_processes_the_press_starts_counts(tmp_path: Path, shared_worker) -> None:
    # The press itself sleeps (idle, alone); its two children spin: together they reach the CPU limit.
    path = module(tmp_path, "children_spin", """
        spin = [sys.executable, "-c", "while True:\\n    pass"]
        children = [subprocess.Popen(spin), subprocess.Popen(spin, start_new_session=True)]
        time.sleep(120)
    """)
    kind, cpu = stopped_by(import_error(path, shared_worker, timeout=1.0))
    unless_starved(kind, cpu, "cpu")
    assert kind == "cpu" and cpu >= 1.0


def test_a_crawling_press_is_stopped_at_the_wall_clock_ceiling(tmp_path: Path, shared_worker) -> None:
    # About 10 % of a core: progress, never idle; about 0.3 s of CPU (limit 1 s) when the 3 s ceiling comes.
    path = module(tmp_path, "crawls", """
        while True:
            start = time.process_time()
            while time.process_time() - start < 0.005:
                pass
            time.sleep(0.045)
    """)
    kind, cpu = stopped_by(import_error(path, shared_worker, timeout=1.0))
    assert kind == "ceiling" and cpu < 1.0
