"""Benchmark the reference press (issue 3): per-layer compress() time and whole prefill time.

Configurations: no press; kvpress ``ChunkKVPress(SnapKVPress(r), chunk_length=10)``; the reference
``ChunkKVReusePress(SnapKVPress(r), chunk_length=10, n_reuse=N)`` for N in 1, 2, 4 (forced window = SnapKV's).
Every figure is a median over repeats after a warm-up, under ``torch.no_grad()``, relative to a
prefill without a press at the same length. Prints a Markdown table.

On the CPU (defaults: lengths 2k, 8k, 32k; the tiny Llama shape of audit/tinymodel.py with 4 layers;
float32; one torch thread; glibc malloc thresholds raised, see below) the whole run takes about 3.5
minutes. On a GPU, a Llama-3.1-8B-shaped random model::

    python benchmarks/bench_reference.py --preset llama-3.1-8b --dtype bfloat16 --device cuda --lengths 8192 32768
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from measure import machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# glibc serves every allocation above its (dynamic) mmap threshold with a fresh mmap, and returns
# freed memory to the OS: then every large temporary (SnapKV's (heads, window, tokens) attention,
# 34 MB at 32k tokens on the tiny model) is page-faulted in anew on each call, which on this
# machine made score() 4x slower and its timings erratic. Like a GPU caching allocator, keep freed
# memory in the process: the script re-executes itself once with both thresholds at 4 GiB.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
if (
    __name__ == "__main__"
    and sys.platform.startswith("linux")
    and "--default-malloc" not in sys.argv
    and any(os.environ.get(key) != value for key, value in _MALLOC_ENV.items())
):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})

import torch  # noqa: E402
from kvpress import ChunkKVPress, SnapKVPress  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from kvaudit.reference import ChunkKVReusePress  # noqa: E402
from kvaudit.tinymodel import ARCHES, make_input_ids  # noqa: E402

PRESETS = {
    # The tiny shape of kvaudit.tinymodel. Four layers keep a 32k prefill near 15 s on one CPU
    # thread; per-layer figures and ratios to the prefill do not depend on the layer count.
    "tiny": dict(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=256, vocab=1000),
    "llama-3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768], help="prefill lengths in tokens")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape (flags below override it)")
    p.add_argument("--arch", choices=sorted(ARCHES), default="llama")
    for name in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab"):
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on the CPU, where a second thread stalls whenever "
                        "another process holds a core; torch's choice on a GPU)")
    p.add_argument("--ratio", type=float, default=0.5, help="compression ratio of the SnapKV scorer")
    p.add_argument("--chunk-length", type=int, default=10)
    p.add_argument("--window", type=int, default=64, help="SnapKV observe window")
    p.add_argument("--reuse", type=int, nargs="+", default=[1, 2, 4], help="n_reuse values of the reference")
    p.add_argument("--repeats", type=int, default=None, help="timed prefills per config (default: by length)")
    p.add_argument("--compress-repeats", type=int, default=None, help="timed compress sweeps (default: by length)")
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's default malloc thresholds (see the comment at the top of the script)")
    p.add_argument("--skip-kvpress-above", type=int, default=None,
                   help="skip kvpress's ChunkKVPress at lengths above this (its Python loop is slow)")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace):
    shape = dict(PRESETS[args.preset])
    for key in shape:
        value = getattr(args, key.replace("-", "_"))
        if value is not None:
            shape[key] = value
    config_cls, model_cls = ARCHES[args.arch]
    config = config_cls(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["intermediate"],
        vocab_size=shape["vocab"],
        max_position_embeddings=max(args.lengths) + 1024,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    # Initialise directly in the target dtype and device: an 8B model never exists in float32.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[args.dtype])
    try:
        with torch.device(args.device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    return model, shape


def make_presses(args: argparse.Namespace) -> dict[str, object]:
    def snap():
        return SnapKVPress(args.ratio, window_size=args.window)

    presses: dict[str, object] = {"no press": None}
    presses[f"kvpress ChunkKV (c={args.chunk_length})"] = ChunkKVPress(snap(), chunk_length=args.chunk_length)
    for n in args.reuse:
        presses[f"reference n_reuse={n}"] = ChunkKVReusePress(snap(), chunk_length=args.chunk_length, n_reuse=n)
    return presses


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prefill(model, press, ids, device: str) -> tuple[float, float]:
    """(prefill seconds, seconds spent inside the press's forward hooks during that prefill)."""
    cache = DynamicCache()
    in_hooks = [0.0]
    if press is not None:
        hook = type(press).forward_hook.__get__(press)

        def timed_hook(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            out = hook(*args, **kwargs)
            sync(device)
            in_hooks[0] += time.perf_counter() - start
            return out

        press.forward_hook = timed_hook  # BasePress.__call__ registers self.forward_hook
    sync(device)
    start = time.perf_counter()
    try:
        if press is None:
            model.model(input_ids=ids, past_key_values=cache)
        else:
            with press(model):
                model.model(input_ids=ids, past_key_values=cache)
        sync(device)
        return time.perf_counter() - start, in_hooks[0]
    finally:
        if press is not None:
            del press.forward_hook


def capture_compress_inputs(model, ids) -> list[tuple]:
    """The arguments each layer's forward hook would pass to compress(), from a prefill without a press."""
    captured: list[tuple] = []
    cache = DynamicCache()

    def hook(module, args, kwargs, output):
        layer = cache.layers[module.layer_idx]
        captured.append((module, kwargs["hidden_states"], layer.keys, layer.values, output[1], dict(kwargs)))

    layers = model.model.layers
    handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    try:
        model.model(input_ids=ids, past_key_values=cache)
    finally:
        for handle in handles:
            handle.remove()
    return captured


class _ScoreOnly:
    """Adapter so that compress_sweep() can time a scorer's score() alone."""

    def __init__(self, scorer):
        self.scorer = scorer

    def compress(self, module, hidden, keys, values, attn, kwargs):
        return self.scorer.score(module, hidden, keys, values, attn, kwargs)


def compress_sweep(press, captured, device: str) -> float:
    """Seconds for one prefill's worth of compress() calls, layer 0 to the last, as the hooks make them."""
    sync(device)
    start = time.perf_counter()
    for module, hidden, keys, values, attn, kwargs in captured:
        press.compress(module, hidden, keys, values, attn, kwargs)
    sync(device)
    return time.perf_counter() - start


def default_repeats(length: int) -> tuple[int, int]:
    """(prefill rounds, compress sweeps): fewer at long lengths to keep the CPU run short."""
    if length <= 4096:
        return 7, 7
    if length <= 16384:
        return 4, 5
    return 2, 3


def bench_length(model, presses, args, length: int, n_layers: int, warm_presses: bool) -> list[dict]:
    ids = make_input_ids(length, vocab_size=model.config.vocab_size).to(args.device)
    repeats, sweeps = default_repeats(length)
    repeats = args.repeats or repeats
    sweeps = args.compress_repeats or sweeps
    active = {
        name: press
        for name, press in presses.items()
        if not (name.startswith("kvpress") and args.skip_kvpress_above and length > args.skip_kvpress_above)
    }

    # Per-layer compress(): every press gets the same inputs, captured from a prefill without a press
    # (which also warms this length up). One warm-up sweep each, then sweeps in rounds with a
    # rotating order (as for the prefills below); the median sweep divided by the layer count.
    # The scorer's own score() on the same inputs is the part of compress() both presses share.
    captured = capture_compress_inputs(model, ids)
    sweepers = {name: press for name, press in active.items() if press is not None}
    sweepers["score() only"] = _ScoreOnly(SnapKVPress(args.ratio, window_size=args.window))
    for press in sweepers.values():
        if hasattr(press, "post_init_from_model"):
            press.post_init_from_model(model)
        compress_sweep(press, captured, args.device)
    sweep_times: dict[str, list[float]] = {name: [] for name in sweepers}
    sweep_names = list(sweepers)
    for round_idx in range(sweeps):
        for name in sweep_names[round_idx % len(sweep_names):] + sweep_names[: round_idx % len(sweep_names)]:
            sweep_times[name].append(compress_sweep(sweepers[name], captured, args.device))
    compress_s = {name: statistics.median(times) / n_layers for name, times in sweep_times.items()}
    score_s = compress_s.pop("score() only") * n_layers
    del captured

    # Whole prefill, in rounds with a rotating order so that drift and bursts of load from other
    # processes hit every config alike. The extra cost of a press is the median of its paired
    # differences with the no-press prefill of the same round; the time spent inside the press's
    # hooks is measured in the same prefills, as a precise view of the same extra cost.
    names = list(active)
    for name in names if warm_presses else ["no press"]:
        prefill(model, active[name], ids, args.device)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_idx in range(repeats):
        order = names[round_idx % len(names):] + names[: round_idx % len(names)]
        for name in order:
            samples[name].append(prefill(model, active[name], ids, args.device))
    base_runs = [t for t, _ in samples["no press"]]
    base = statistics.median(base_runs)
    rows = []
    for name in names:
        runs = [t for t, _ in samples[name]]
        rows.append(dict(
            length=length, config=name, prefill=statistics.median(runs), base=base,
            extra=statistics.median([t - b for t, b in zip(runs, base_runs)]),
            hooks=statistics.median([h for _, h in samples[name]]),
            compress=compress_s.get(name), score=score_s / n_layers, rounds=repeats,
        ))
    return rows


def fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.1f}"


def table(rows: list[dict], kvpress_name: str) -> str:
    lines = [
        "| tokens | config | compress()/layer ms | compress()/layer ÷ prefill | vs kvpress compress() "
        "| prefill s | prefill ÷ no press | extra prefill s (paired) | in hooks s | extra ÷ n_reuse=1 "
        "(paired / in hooks) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_len: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_len.setdefault(row["length"], {})[row["config"]] = row
    for length, cfgs in by_len.items():
        kv = cfgs.get(kvpress_name, {}).get("compress")
        ref1 = cfgs.get("reference n_reuse=1")
        for name, row in cfgs.items():
            comp = row["compress"]
            speedup = f"{kv / comp:.1f}× faster" if comp and kv and name.startswith("reference") else ""
            rel = ""
            if ref1 and name.startswith("reference"):
                rel = f"{row['extra'] / ref1['extra']:.0%} / {row['hooks'] / ref1['hooks']:.0%}"
            share = "" if comp is None else f"{comp / row['base']:.2%}"
            extra = "" if name == "no press" else f"{row['extra']:+.3f}"
            hooks = "" if name == "no press" else f"{row['hooks']:.3f}"
            lines.append(
                f"| {length} | {name} | {fmt_ms(comp)} | {share} | {speedup} | {row['prefill']:.3f} | "
                f"×{row['prefill'] / row['base']:.2f} | {extra} | {hooks} | {rel} |"
            )
    lines += [
        "",
        "Where compress() time goes (ms per layer): the scorer's score() is shared by both presses;",
        "the rest is index building and gathering.",
        "",
        "| tokens | SnapKV score() | kvpress compress() − score() | reference n_reuse=1 compress() − score() |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for length, cfgs in by_len.items():
        any_row = next(iter(cfgs.values()))
        score = any_row["score"]
        kv = cfgs.get(kvpress_name, {}).get("compress")
        ref = cfgs.get("reference n_reuse=1", {}).get("compress")
        lines.append(
            f"| {length} | {fmt_ms(score)} | {fmt_ms(None if kv is None else kv - score)} "
            f"| {fmt_ms(None if ref is None else ref - score)} |"
        )
    return "\n".join(lines)


def machine_and_torch() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    malloc = ", glibc malloc mmap/trim thresholds " + (
        "4 GiB" if all(os.environ.get(k) == v for k, v in _MALLOC_ENV.items()) else "default")
    return f"{machine()}{gpu}, torch {torch.__version__}, {torch.get_num_threads()} torch threads{malloc}"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    load_at_start = load_average()
    model, shape = build_model(args)
    presses = make_presses(args)
    kvpress_name = next(name for name in presses if name.startswith("kvpress"))
    rows = []
    with torch.no_grad():
        for i, length in enumerate(args.lengths):
            # Each press is warmed up once, at the first length; each length warms up without a press.
            rows += bench_length(model, presses, args, length, shape["layers"], warm_presses=i == 0)
            print(f"[{length} tokens done at {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    print(f"Model: random {args.arch}, {shape}, {args.dtype} on {args.device}, batch 1, sdpa. "
          f"Scorer SnapKVPress({args.ratio}, window_size={args.window}), chunk_length={args.chunk_length}.")
    rounds = ", ".join(f"{r['length']}: {r['rounds']}" for r in rows if r["config"] == "no press")
    print(f"Machine: {machine_and_torch()}. Prefill rounds per length: {rounds}. "
          f"Total wall time {time.perf_counter() - start:.0f} s. "
          f"Load average (1/5/15 min) at start {load_at_start}, at end {load_average()}.\n")
    print(table(rows, kvpress_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
