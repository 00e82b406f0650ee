"""Benchmark of the catalogue (issue 11): the whole kvpress audit, every press against every claim.

Runs ``kvaudit trace kvpress.presses --format json`` cold in a fresh process, as a user runs it
(Python start, worker start with the torch/transformers/kvpress imports, then every press of
kvpress 0.5.5 on the full grid: ratios 0.5, 0.8, 0.9; prompts of 512 and 4096 tokens and a batch
of two; 8 decoding steps after each prefill), and prints a Markdown table: the wall time, the
worker's start-up, and the verdicts counted over every claim of every press. With
``--compare-reference`` it times the report's run (the reference press traced beside each).

Run: ``.venv/bin/python benchmarks/bench_catalogue.py [--runs 1] [--compare-reference]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from measure import machine

ROOT = Path(__file__).resolve().parents[1]




def one_run(extra: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kvaudit", "trace", "kvpress.presses", "--format", "json",
                          "--no-config", *extra], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(f"kvaudit trace failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return seconds, json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="cold runs (each takes minutes)")
    parser.add_argument("--compare-reference", action="store_true", help="also trace the reference press")
    args = parser.parse_args()
    extra = ["--compare-reference"] if args.compare_reference else []
    times, document = [], {}
    for _ in range(args.runs):
        seconds, document = one_run(extra)
        times.append(seconds)
    presses = document["presses"]
    verdicts = Counter(c["verdict"] for p in presses for c in p["claims"])
    claims = sum(verdicts.values())
    runs = sum(len(p["runs"]) for p in presses)
    print(f"machine: {machine()}")
    print(f"grid: {document['grid']}")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    label = "with the reference press" if args.compare_reference else "without the reference press"
    print(f"| `kvaudit trace kvpress.presses` cold, {label} (median of {len(times)}) | "
          f"{statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f}) |")
    timings = document.get("timings", {})
    print(f"| of which worker start-up (imports, model) | {timings.get('import_s', 0) + timings.get('build_s', 0):.1f} s |")
    print(f"| presses | {len(presses)} ({sum(1 for p in presses if p['runs'])} with completed runs, {runs} runs) |")
    print(f"| claims checked | {claims}: " + ", ".join(f"{verdicts[v]} {v}" for v in
                                                 ("holds", "violated", "not-applicable", "not-run", "not-checkable")) + " |")
    print(f"| per press with runs | {statistics.median(times) / max(1, sum(1 for p in presses if p['runs'])):.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
