"""Benchmark: a cold `kvaudit check` over the installed kvpress/presses directory.

Each run is a fresh interpreter (cold: imports, parsing and analysis all counted), timed
from outside. Prints a Markdown table row; issue 2's goal is a median of at most 1.0 s.

    .venv/bin/python benchmarks/bench_check.py [--runs 11]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import machine

from kvaudit.targets import resolve_module


def cold_run(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"kvaudit failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    presses = resolve_module("kvpress.presses")
    if presses is None:
        raise SystemExit("kvpress is not installed")
    folder = presses.parent
    files = sorted(folder.glob("*.py"))
    kvaudit = shutil.which("kvaudit", path=str(Path(sys.executable).parent)) or "kvaudit"
    for fmt in ("json", "terminal"):
        command = [kvaudit, "check", str(folder), "--format", fmt]
        cold_run(command)  # warm the OS file cache, not the interpreter
        times = [cold_run(command) for _ in range(args.runs)]
        print(f"| `kvaudit check kvpress/presses -f {fmt}` ({len(files)} files) | {statistics.median(times):.3f} s "
              f"| {min(times):.3f} s | {max(times):.3f} s | {args.runs} |")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
