"""Benchmark (issue 9, scale): `kvaudit check` on the installed transformers tree and on a whole site-packages.

Against the same machine's floor, measured in the same run: a single-thread `ast.parse` of
every file of the tree (read included). Goals: transformers within 0.3x of that floor, peak
memory at most 300 MB; the whole site-packages with no traceback (its time reported).
Each kvaudit figure is a cold process timed from outside; `--no-cache` unless it says cached.

    .venv/bin/python benchmarks/bench_scale.py [--tree PATH] [--site-packages PATH]
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

from measure import cold, kvaudit, machine


def ast_floor(tree: Path) -> tuple[float, int]:
    files = sorted(tree.rglob("*.py"))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass
    return time.perf_counter() - start, len(files)


def run(label: str, command: list[str], floor: float | None) -> dict:
    figure = cold(command)
    if figure["rc"] not in (0, 1, 2) or "Traceback" in figure["stderr"]:
        raise SystemExit(f"{label}: kvaudit failed ({figure['rc']}): {figure['stderr']}")
    ratio = f"{figure['seconds'] / floor:.2f}x" if floor else ""
    print(f"| {label} | {figure['seconds']:.2f} s | {figure['peak_mb']:.0f} MB | {ratio} | {figure['rc']} |", flush=True)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    site = Path(sysconfig.get_paths()["purelib"])
    parser.add_argument("--tree", type=Path, default=site / "transformers")
    parser.add_argument("--site-packages", type=Path, default=site)
    args = parser.parse_args()
    floor, count = ast_floor(args.tree)
    print("| run | wall time | peak memory | against the floor | exit |\n| --- | --- | --- | --- | --- |")
    print(f"| floor: single-thread `ast.parse` of {count} files of {args.tree.name} | {floor:.2f} s | | 1.00x | |")
    base = [kvaudit(), "check", str(args.tree), "-f", "json"]
    run(f"`check {args.tree.name}` (every core)", [*base, "--no-cache"], floor)
    run(f"`check {args.tree.name} -j 1`", [*base, "--no-cache", "-j", "1"], floor)
    with tempfile.TemporaryDirectory() as cache:
        run(f"`check {args.tree.name}`, cache filled", [*base, "--cache-dir", cache], floor)
        run(f"`check {args.tree.name}`, cached re-run", [*base, "--cache-dir", cache], floor)
    whole = run(f"`check` whole site-packages ({sum(1 for _ in args.site_packages.rglob('*.py'))} .py files)",
                [kvaudit(), "check", str(args.site_packages), "-f", "json", "--no-cache"], None)
    print(f"\nsite-packages: exit {whole['rc']}, no traceback; machine: {machine()}")


if __name__ == "__main__":
    main()
