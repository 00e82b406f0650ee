"""Benchmark of reuse-quality (issue 18): what layer-index reuse costs in next-token loss, on the trained model.

The reference press (``kvaudit.reference.ChunkKVReusePress``: ChunkKV with Algorithm 2 around SnapKV, chunks
of 10) compresses a held-out prompt of the tiny trained model at each compression ratio with ``n_reuse`` 1
(no reuse), 2 and 4; the next-token loss of the 64 tokens that follow is measured after each (the same
measure as the ``reuse-quality`` claim: ``kvaudit.tracer.child.runner.continuation_loss``), beside the loss
with the prefix kept whole. Prints a Markdown table: mean loss over the prompts and its standard deviation,
and the change against no reuse.

Run: ``.venv/bin/python benchmarks/bench_reuse_quality.py [--prompts 8] [--tokens 512]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from measure import machine

CONTINUATION = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts per cell")
    parser.add_argument("--tokens", type=int, default=512, help="prefix length")
    parser.add_argument("--ratios", default="0.5,0.8,0.9")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from kvpress import SnapKVPress

    from kvaudit.reference import ChunkKVReusePress
    from kvaudit.trained import heldout_prompts, load
    from kvaudit.tracer.child.runner import continuation_loss

    model, _ = load()
    ratios = [float(r) for r in args.ratios.split(",")]
    prompts = [heldout_prompts(args.tokens + CONTINUATION, 1, 2000 + n).long() for n in range(args.prompts)]
    started = time.perf_counter()
    full = [continuation_loss(model, None, ids, args.tokens) for ids in prompts]
    rows = []
    for ratio in ratios:
        losses = {}
        for n_reuse in (1, 2, 4):
            losses[n_reuse] = [continuation_loss(
                model, ChunkKVReusePress(press=SnapKVPress(compression_ratio=ratio), chunk_length=10, n_reuse=n_reuse),
                ids, args.tokens) for ids in prompts]
        for n_reuse, values in losses.items():
            change = [a - b for a, b in zip(values, losses[1])]
            rows.append((ratio, n_reuse, statistics.mean(values), statistics.stdev(values),
                         statistics.mean(change), statistics.stdev(change)))
    seconds = time.perf_counter() - started
    print(f"machine: {machine()}")
    print(f"model: kvaudit's tiny trained model; {args.prompts} held-out prompts of {args.tokens} tokens, the next "
          f"{CONTINUATION} scored; {seconds:.0f} s")
    print()
    print(f"prefix kept whole: {statistics.mean(full):.4f} ± {statistics.stdev(full):.4f} nats/token")
    print()
    print("| ratio | n_reuse | loss (nats/token) | ± sd | vs n_reuse 1 | ± sd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ratio, n_reuse, mean, sd, change, change_sd in rows:
        print(f"| {ratio:g} | {n_reuse} | {mean:.4f} | {sd:.4f} | {change:+.4f} | {change_sd:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
