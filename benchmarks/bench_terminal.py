"""Benchmark (issue 15, part 4): the terminal view against JSON and concise on 20,000 findings.

The input is a file with 20,000 unused suppression comments (benchmarks/crafted.py), so 20,000
KVA001 findings, each printed in the terminal view with its source excerpt. Each figure is a cold
`kvaudit check --no-cache FILE -f FORMAT` timed from outside with stdout piped (as CI logs and
`| less` get it), the formats interleaved run by run; the goal is the terminal view within 2x of
JSON. `--tty` adds the terminal view in a pseudo-terminal (boxes and colours, through `script`),
for information: one run, it takes about a minute.

    .venv/bin/python benchmarks/bench_terminal.py [--runs 5] [--findings 20000] [--tty]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import crafted
from measure import cold, kvaudit, machine

FORMATS = ("json", "concise", "terminal")


def piped(path: Path, fmt: str) -> float:
    figure = cold([kvaudit(), "check", "--no-cache", str(path), "-f", fmt])
    if figure["rc"] not in (0, 1) or "Traceback" in figure["stderr"]:
        raise SystemExit(f"{fmt}: kvaudit failed ({figure['rc']}): {figure['stderr']}")
    return figure["seconds"]


def in_a_terminal(path: Path) -> float | None:
    """The terminal view in a pseudo-terminal (``script``), its output thrown away; None without ``script``."""
    script = shutil.which("script")
    if script is None:
        return None
    command = shlex.join([kvaudit(), "check", "--no-cache", str(path)])
    start = time.perf_counter()
    subprocess.run([script, "-q", "-c", command, "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--findings", type=int, default=20_000)
    parser.add_argument("--tty", action="store_true", help="also time the terminal view in a pseudo-terminal")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "suppressions.py"
        path.write_text(crafted.suppressions(args.findings, standalone=False), encoding="utf-8")
        for fmt in FORMATS:
            piped(path, fmt)  # warm the OS file cache, not the interpreter
        times: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
        for _ in range(args.runs):
            for fmt in FORMATS:
                times[fmt].append(piped(path, fmt))
        json_median = statistics.median(times["json"])
        print(f"{args.findings:,} unused suppressions ({args.findings:,} findings), stdout piped, {args.runs} runs each\n")
        print("| format | median | min | max | against JSON |\n| --- | ---: | ---: | ---: | ---: |")
        for fmt in FORMATS:
            median = statistics.median(times[fmt])
            print(f"| `-f {fmt}` | {median:.2f} s | {min(times[fmt]):.2f} s | {max(times[fmt]):.2f} s "
                  f"| {median / json_median:.2f}x |", flush=True)
        if args.tty:
            seconds = in_a_terminal(path)
            shown = "no `script` on this machine" if seconds is None else f"{seconds:.1f} s (one run)"
            print(f"\nterminal view in a pseudo-terminal (boxes, colours): {shown}")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
