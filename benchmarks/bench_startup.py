"""Benchmark: cold start-up of `kvaudit --help`, against `python -c "import typer"` (issue 8 §5).

Every run is a fresh interpreter, timed from outside; the runs of the commands are interleaved
(one of each per round), so machine load hits them alike. Prints a Markdown table: median, min,
max, and the median ratio to `import typer`. Issue 8's goal: `kvaudit --help` at most 2x.

    .venv/bin/python benchmarks/bench_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import machine

SMALL = "import os\n\n\ndef helper():\n    return os.sep\n"


def cold_run(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    kvaudit = shutil.which("kvaudit", path=str(Path(sys.executable).parent)) or "kvaudit"
    with tempfile.TemporaryDirectory() as folder:
        small = Path(folder) / "small.py"
        small.write_text(SMALL)
        commands = {
            'python -c "import typer"': [sys.executable, "-c", "import typer"],
            "kvaudit --help": [kvaudit, "--help"],
            "kvaudit rules": [kvaudit, "rules"],
            "kvaudit check small.py (no press)": [kvaudit, "check", str(small), "--no-config"],
        }
        for command in commands.values():
            cold_run(command)  # warm the OS file cache, not the interpreter
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(cold_run(command))
    base = statistics.median(times['python -c "import typer"'])
    print("| command | median | min | max | median / `import typer` | runs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} s | {min(values):.3f} s | {max(values):.3f} s | {median / base:.2f}x "
              f"| {args.runs} |")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
