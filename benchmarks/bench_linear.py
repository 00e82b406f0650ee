"""Benchmark (issue 9, linear cost): press inheritance chains, suppression comments, a 10 MB file.

Each figure is a cold `kvaudit check --no-cache -f json` (unless the row says otherwise) on a file generated here (benchmarks/crafted.py),
timed from outside, beside the same machine's floor in the same run:
- chains of 40, 120 and 300 presses (goal: 300 in 2 s), the 300 also in the terminal format;
  floor: `check` of a one-press file;
- 20,000 suppression comments, on code lines and as one comment block (goal: 2 s);
- a 10 MB file with one press against the same file without it (goal: within 2x).

    .venv/bin/python benchmarks/bench_linear.py [--size-mb 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import crafted
from measure import cold, kvaudit, machine


def row(label: str, path: Path, floor: float | None = None, fmt: str = "json") -> dict:
    figure = cold([kvaudit(), "check", "--no-cache", str(path), "-f", fmt])
    if figure["rc"] not in (0, 1) or "Traceback" in figure["stderr"]:
        raise SystemExit(f"{label}: kvaudit failed ({figure['rc']}): {figure['stderr']}")
    ratio = f"{figure['seconds'] / floor:.2f}x" if floor else ""
    print(f"| {label} | {figure['seconds']:.2f} s | {figure['peak_mb']:.0f} MB | {ratio} |", flush=True)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)

        def write(name: str, text: str) -> Path:
            (root / name).write_text(text, encoding="utf-8")
            return root / name

        print("| input | wall time | peak memory | against the floor |\n| --- | --- | --- | --- |")
        floor = row("floor: one press (startup and imports)", write("one.py", crafted.press_chain(1)))["seconds"]
        for classes in (40, 120, 300):
            row(f"chain of {classes} presses (one file)", write(f"chain{classes}.py", crafted.press_chain(classes)), floor)
        # The default format prints a source excerpt for each of the chain's findings.
        row("chain of 300 presses, terminal format", root / "chain300.py", floor, fmt="terminal")
        row("20,000 suppressions on code lines", write("inline.py", crafted.suppressions(20_000, standalone=False)),
            floor)
        row("20,000 suppression comment lines (one block)",
            write("block.py", crafted.suppressions(20_000, standalone=True)), floor)
        size = int(args.size_mb * 1_000_000)
        without = row(f"{args.size_mb:g} MB file, no press (its floor)", write("plain.py", crafted.large_module(size, False)))
        row(f"{args.size_mb:g} MB file with one press", write("pressed.py", crafted.large_module(size, True)),
            without["seconds"])
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
