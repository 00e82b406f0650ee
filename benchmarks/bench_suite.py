"""Benchmark of the test suite's own cost (issue 8 §7): goal, the whole suite under 90 s on 2 cores.

Runs ``python -m pytest -q`` in one process and as ``make test`` runs it (two pytest-xdist
workers), and for comparison ``-m "not slow"``, in fresh processes, and
reports wall time, the CPU time of the whole process tree (pytest, its workers and kvaudit
subprocesses), and how many trace workers were started cold and imported torch (bare workers
that the process-hygiene tests start without a model cost a fraction of a second and are not counted). Most of the suite's cost used to be
cold tracer-worker start-ups (torch, transformers and kvpress imports); the suite now shares one.

Cold starts are counted with a ``sitecustomize`` on ``PYTHONPATH`` that appends one line to a file
when a ``kvaudit.tracer.worker`` process first imports torch (nothing in kvaudit changes).

Run: ``.venv/bin/python benchmarks/bench_suite.py [--runs 1] [--quick-only | --make-test-only]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import machine

ROOT = Path(__file__).resolve().parents[1]
# What `make test` adds (Makefile): two pytest-xdist workers, each test file kept on one of them.
MAKE_TEST_ARGS = ["-n", "2", "--dist", "loadfile"]

COUNTER = '''
import os, sys
try:
    with open("/proc/self/cmdline", "rb") as handle:
        command = handle.read().split(b"\\0")
except OSError:
    command = []
if b"kvaudit.tracer.worker" in command:

    class NoteTorch:
        """Record this worker once, when it first imports torch (a cold start that pays for it)."""

        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                sys.meta_path.remove(self)
                with open(os.environ["KVAUDIT_BENCH_WORKERS"], "a") as handle:
                    handle.write(f"{os.getpid()}\\n")
            return None

    sys.meta_path.insert(0, NoteTorch())
'''




def run_suite(extra: list[str]) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds of the process tree, cold workers, pytest exit code)."""
    with tempfile.TemporaryDirectory() as folder:
        counter = Path(folder) / "sitecustomize.py"
        counter.write_text(COUNTER)
        workers = Path(folder) / "workers.txt"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([folder, *filter(None, [env.get("PYTHONPATH")])])
        env["KVAUDIT_BENCH_WORKERS"] = str(workers)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL).returncode
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cold = len(workers.read_text().split()) if workers.exists() else 0
    return wall, cpu, cold, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick-only", action="store_true", help='only -m "not slow"')
    parser.add_argument("--make-test-only", action="store_true", help="only the whole suite as `make test` runs it")
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    print("| suite | wall s | CPU s (process tree) | cold trace workers (torch imported) | pytest exit |")
    print("| --- | --- | --- | --- | --- |")
    variants = [("-m 'not slow'", ["-m", "not slow"])] + ([] if args.quick_only else [
        ("whole, one process", []), ("whole, as `make test` runs it", MAKE_TEST_ARGS)])
    if args.make_test_only:
        variants = variants[-1:]
    status = 0
    for label, extra in variants:
        for _ in range(args.runs):
            wall, cpu, cold, code = run_suite(extra)
            status |= code
            print(f"| {label} | {wall:.1f} | {cpu:.1f} | {cold} | {code} |", flush=True)
    print("\nGoal: the whole suite under 90 s on 2 cores.")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
