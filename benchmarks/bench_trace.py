"""Benchmarks of the tracer (issue 4).

1. Cold end to end: ``kvaudit trace kvpress.presses.chunkkv_press`` in a fresh process, as a user
   runs it (Python start, CLI, worker start with torch/transformers/kvpress imports, model build,
   three prefills, analysis, output). Goal: ≤ 10 s on a 2-core machine.
2. Instrumentation overhead on prefill: the same prefill with the press alone, and with the
   tracer's hooks and score() wrappers (:mod:`kvaudit.tracer.child.instrument`), interleaved, medians.
   Goal: ≤ 5 %. The index matching that follows each traced prefill is reported apart: it runs
   after the timed prefill and is part of the trace's cost, not of the measured prefill.

Run: ``.venv/bin/python benchmarks/bench_trace.py [--runs 5] [--reps 40]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import machine

ROOT = Path(__file__).resolve().parents[1]




def bench_cold(runs: int) -> dict[str, float]:
    """Wall time of a cold ``kvaudit trace kvpress.presses.chunkkv_press`` (fresh process each run)."""
    env = dict(os.environ)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "kvaudit", "trace", "kvpress.presses.chunkkv_press"],
            capture_output=True, text=True, cwd=ROOT, env=env,
        )
        times.append(time.perf_counter() - started)
        if out.returncode not in (0, 1):
            raise SystemExit(f"kvaudit trace failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return {"min": min(times), "median": statistics.median(times), "max": max(times)}


def bench_overhead(reps: int, tokens: int) -> dict[str, float]:
    """Median prefill time with the press alone vs. with the tracer's instrumentation."""
    import torch
    from kvpress import ChunkKVPress, SnapKVPress
    from transformers import DynamicCache

    from kvaudit.tinymodel import build_tiny_model, make_input_ids
    from kvaudit.tracer.child.instrument import Instrumentation
    from kvaudit.tracer.child.keptindices import kept_positions

    torch.set_num_threads(1)  # as in the tracer's worker
    model = build_tiny_model("llama", 8, 0)
    input_ids = make_input_ids(tokens, 1, 0)
    press = ChunkKVPress(SnapKVPress(compression_ratio=0.5), chunk_length=20)

    def plain() -> float:
        with torch.no_grad(), press(model):
            started = time.perf_counter()
            model(input_ids=input_ids, past_key_values=DynamicCache(), use_cache=True)
            return time.perf_counter() - started

    def instrumented() -> tuple[float, float]:
        cache = DynamicCache()
        instrumentation = Instrumentation(model, press)
        with torch.no_grad(), instrumentation.before_press() as recorder:
            with press(model), instrumentation.after_press(recorder):
                started = time.perf_counter()
                model(input_ids=input_ids, past_key_values=cache, use_cache=True)
                prefill = time.perf_counter() - started
        started = time.perf_counter()
        for index, record in enumerate(recorder.layers):  # the post-prefill analysis, timed apart
            layer = cache.layers[index]
            kept_positions(record.original_keys, record.original_values, layer.keys, layer.values, None)
        return prefill, time.perf_counter() - started

    for _ in range(5):  # warm-up
        plain()
        instrumented()
    plain_times, traced_times, matching_times = [], [], []
    for _ in range(reps):  # interleaved, so drift and neighbours hit both alike
        plain_times.append(plain())
        prefill, matching = instrumented()
        traced_times.append(prefill)
        matching_times.append(matching)
    plain_median, traced_median = statistics.median(plain_times), statistics.median(traced_times)
    return {
        "tokens": tokens,
        "plain_ms": plain_median * 1000,
        "traced_ms": traced_median * 1000,
        "overhead_pct": (traced_median / plain_median - 1) * 100,
        "matching_ms": statistics.median(matching_times) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold end-to-end runs")
    parser.add_argument("--reps", type=int, default=40, help="prefills per variant for the overhead")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    cold = bench_cold(args.runs)
    print(
        f"cold `kvaudit trace kvpress.presses.chunkkv_press`, {args.runs} runs: "
        f"min {cold['min']:.2f} s, median {cold['median']:.2f} s, max {cold['max']:.2f} s (goal ≤ 10 s)"
    )
    print("| tokens | press alone (ms) | with instrumentation (ms) | overhead | index matching after (ms) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for tokens in (512, 2048):
        o = bench_overhead(args.reps, tokens)
        print(
            f"| {o['tokens']} | {o['plain_ms']:.1f} | {o['traced_ms']:.1f} | {o['overhead_pct']:+.1f} % "
            f"| {o['matching_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
