"""Train kvaudit's tiny model on the standard library's source: ``make tiny-model``.

``python -m kvaudit.trained.train --out FOLDER`` trains a byte-level BPE tokenizer (4096 ids) and a
small Llama with a fixed seed, a fixed number of steps and one torch thread, then writes into FOLDER:

- ``config.json``, ``generation_config.json``, ``model.safetensors`` (``save_pretrained``, bf16);
- ``tokenizer.json``, ``tokenizer_config.json``: ``AutoTokenizer.from_pretrained(FOLDER)`` works offline,
  so presses that load the tokenizer from ``model.config.name_or_path`` (KVzipPress) run;
- ``manifest.json``: the corpus (Python version, every file with its split, SHA-256 and token count);
- ``training-log.json``: the settings, the loss curve, the held-out loss, the unigram baseline and the
  attention figures of the saved weights;
- ``SHA256SUMS``: the checksum of every other file (``sha256sum -c`` reads it).

The settings below are the committed ones; ``--set NAME=JSON`` overrides one for an exploration run
(the log records every setting used). Training is statistically reproducible: on another CPU the
floating-point sums differ, so the loss differs a little; the committed weights are the reference.
Importing this module imports neither torch nor tokenizers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Files this script writes (and may replace in an output folder that holds an earlier model).
CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
LOG = "training-log.json"


@dataclass(frozen=True)
class Phase:
    """A stretch of training steps with one batch recipe.

    ``synthetic_share`` of each batch's rows are copies of a random segment (``layout``) drawn from
    the first ``synthetic_vocab`` ids of a fixed random order of the vocabulary (0: all ids); the
    other rows are windows of standard-library text.
    """

    steps: int
    seq_len: int
    batch: int
    synthetic_share: float = 0.0
    synthetic_vocab: int = 0
    segment: tuple[int, int] = (8, 32)
    layout: str = "spaced"  # "spaced": data.spaced_copies; "tiled": data.repeated_segments (s s s ...)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (the defaults are the committed model's)."""

    seed: int = 0
    vocab_size: int = 4096
    layers: int = 6
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    max_positions: int = 8192
    init_std: float = 0.02  # initializer_range of the Llama config
    lr: float = 5e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Text only: no synthetic curriculum gave induction heads within this budget (reports/tiny-model.md).
    # 660 steps of 4096 tokens: about 2.7M tokens, 1.2 passes over the training files.
    phases: tuple[Phase, ...] = (Phase(steps=300, seq_len=256, batch=16), Phase(steps=360, seq_len=512, batch=8))
    log_every: int = 25
    eval_every: int = 100
    eval_windows: int = 64  # held-out windows of the final held-out loss
    eval_len: int = 512
    save_dtype: str = "bfloat16"

    @property
    def steps(self) -> int:
        return sum(phase.steps for phase in self.phases)


def with_overrides(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``config`` with ``NAME=JSON`` assignments applied (``phases`` takes a list of Phase fields)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        if name not in names or not text:
            raise SystemExit(f"--set {assignment!r}: expected NAME=JSON with NAME one of {', '.join(sorted(names))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise SystemExit(f"--set {name}: {text!r} is not JSON ({error.msg})") from None
        if name == "phases":
            try:
                value = tuple(Phase(**{**p, "segment": tuple(p.get("segment", (8, 32)))}) for p in value)
            except (TypeError, AttributeError) as error:
                raise SystemExit(f"--set phases: expected a list of objects with Phase's fields ({error})") from None
        changes[name] = value
    return dataclasses.replace(config, **changes)


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then a cosine decay to ``min_lr_ratio`` of the peak at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_output(out: Path) -> None:
    """Refuse (SystemExit, one line) an output folder that is neither empty nor an earlier model's.

    Checked before training, so that a wrong ``--out`` costs nothing.
    """
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CHECKSUMS).is_file())):
        raise SystemExit(f"{out} is not an empty folder nor an earlier model (no {CHECKSUMS}): choose another --out")


def _prepare_output(out: Path) -> None:
    """Create ``out``, or clear the files of the earlier model in it (those its ``SHA256SUMS`` lists)."""
    check_output(out)
    if (out / CHECKSUMS).is_file():
        for line in (out / CHECKSUMS).read_text().splitlines():
            (out / line.partition("  ")[2]).unlink(missing_ok=True)
        (out / CHECKSUMS).unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_checksums(out: Path) -> None:
    """``SHA256SUMS`` (``sha256sum`` format) over every other file of ``out``, sorted by name."""
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != CHECKSUMS)
    (out / CHECKSUMS).write_text("".join(f"{_sha256(out / name)}  {name}\n" for name in names))


@dataclass
class _Corpus:
    """The tokenized corpus: the tokenizer, the files of each split, their ids and token streams."""

    tokenizer: Any
    train_files: list[Any]
    heldout_files: list[Any]
    train_ids: list[list[int]]
    heldout_ids: list[list[int]]
    train_stream: Any  # numpy int64
    heldout_stream: Any
    skipped: list[str]


def _tokenized_corpus(config: TrainConfig) -> _Corpus:
    """Read the standard library, train the tokenizer on the training files, tokenize both splits."""
    from ..tinymodel import build_local_tokenizer
    from . import corpus, data

    files, skipped = corpus.collect()
    train_files = [f for f in files if not f.heldout]
    heldout_files = [f for f in files if f.heldout]
    tokenizer = build_local_tokenizer(config.vocab_size, [f.text for f in train_files], config.max_positions)
    tokenizer.add_bos_token = True  # tokenizer(text) starts with BOS, as every training window does
    encode = tokenizer.backend_tokenizer.encode_batch
    train_ids = [e.ids for e in encode([f.text for f in train_files], add_special_tokens=False)]
    heldout_ids = [e.ids for e in encode([f.text for f in heldout_files], add_special_tokens=False)]
    return _Corpus(tokenizer, train_files, heldout_files, train_ids, heldout_ids,
                   data.token_stream(train_ids), data.token_stream(heldout_ids), skipped)


def _new_model(config: TrainConfig, pad_token_id: int) -> Any:
    """A freshly initialised Llama of ``config`` (torch's global seed decides the weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .data import BOS_ID, EOS_ID

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.kv_heads, intermediate_size=config.ffn,
        max_position_embeddings=config.max_positions, tie_word_embeddings=True,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=pad_token_id,
        initializer_range=config.init_std, attn_implementation="sdpa",
    ))


def _optimizer(model: Any, config: TrainConfig) -> Any:
    """AdamW; no weight decay on the norms' gains (the one-dimensional parameters)."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))


def _batch(phase: Phase, stream: Any, order: Any, rng: Any) -> tuple[Any, Any]:
    """One batch of ``phase``: text windows, then its synthetic rows; ``(input_ids, labels)`` tensors."""
    import numpy as np
    import torch

    from . import data

    n_synthetic = round(phase.batch * phase.synthetic_share)
    windows = data.text_windows(stream, phase.seq_len, phase.batch - n_synthetic, rng)
    ids, labels = [windows], [data.next_token_labels(windows)]
    if n_synthetic:
        vocab = order if phase.synthetic_vocab == 0 else order[:phase.synthetic_vocab]
        layout = data.spaced_copies if phase.layout == "spaced" else data.repeated_segments
        rep = layout(phase.seq_len, n_synthetic, rng, vocab, phase.segment)
        ids.append(rep.input_ids)
        labels.append(rep.labels)
    return torch.from_numpy(np.concatenate(ids)), torch.from_numpy(np.concatenate(labels))


def _evaluate(model: Any, step: int, phase: Phase, order: Any, probe: Any) -> dict[str, Any]:
    """Held-out loss on the probe windows; copying on the phase's synthetic vocabulary and on the full one."""
    from . import measure

    model.eval()
    vocab = order[:phase.synthetic_vocab or 64]
    segment = min(phase.segment[1], 32)
    own = measure.induction_stats(model, segment=segment, rows=4, seed=step, vocab=vocab)
    full = measure.induction_stats(model, segment=32, rows=4, seed=step)
    row = {"step": step, "heldout_loss": round(measure.next_token_loss(model, probe), 4),
           "copy_vocab": len(vocab), "copy_segment": segment,
           "copy_accuracy": round(own.copy_accuracy, 4), "copy_loss": round(own.copy_loss, 4),
           "copy_accuracy_full_vocab": round(full.copy_accuracy, 4), "copy_loss_full_vocab": round(full.copy_loss, 4),
           "induction_max_over_uniform": round(float(full.score.max() / full.uniform), 2)}
    model.train()
    return row


def _manifest(c: _Corpus) -> dict[str, Any]:
    """The corpus manifest: Python version, rules, and every file with its split, SHA-256 and token count."""
    from . import corpus

    files = [{"path": f.path, "split": "heldout" if f.heldout else "train", "sha256": f.sha256, "tokens": len(ids)}
             for f, ids in zip(c.train_files + c.heldout_files, c.train_ids + c.heldout_ids)]
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "licence": "PSF-2.0 (the CPython standard library; the text is not stored here, only paths and hashes)",
        "excluded_dirs": sorted(corpus.EXCLUDED_DIRS),
        "heldout_rule": f"int(sha256(path)[:8], 16) % {corpus.HELDOUT_EVERY} == 0",
        "skipped_not_utf8": c.skipped,
        "tokens": {"train": int(c.train_stream.size), "heldout": int(c.heldout_stream.size)},
        "files": sorted(files, key=lambda entry: entry["path"]),
    }


def _final_figures(out: Path, config: TrainConfig, c: _Corpus, order: Any) -> dict[str, Any]:
    """The figures of the weights as saved (rounded to bf16), loaded back the way users load them."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from . import data, heldout_prompts, measure

    saved = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    saved.eval()
    rng = np.random.default_rng(config.seed + 2)
    heldout_eval = data.text_windows(c.heldout_stream, config.eval_len, config.eval_windows, rng)
    counts = np.bincount(c.train_stream, minlength=config.vocab_size) + 1.0  # add-one: every id gets a probability
    unigram = -np.log(counts / counts.sum())[data.next_token_labels(heldout_eval)[:, :-1]].mean()
    probe = heldout_prompts(PROBE_LENGTH, PROBE_BATCH, seed=0, folder=out).numpy()  # what the tests score
    figures: dict[str, Any] = {
        "heldout_loss": round(measure.next_token_loss(saved, heldout_eval), 4),
        "heldout_windows": [config.eval_windows, config.eval_len],
        "unigram_loss": round(float(unigram), 4),
        "probe_loss": round(measure.next_token_loss(saved, probe), 4),
        "probe": {"length": PROBE_LENGTH, "batch": PROBE_BATCH, "seed": 0},
    }
    for length in (512, 1024):  # the longest training window, and twice it
        windows = data.text_windows(c.heldout_stream, length, 4, rng)
        figures[f"attention_t{length}"] = measure.summary(measure.attention_stats(saved, windows))
    figures["induction_full_vocab"] = measure.summary(measure.induction_stats(saved, segment=64, rows=4, seed=0))
    figures["induction_small_vocab"] = measure.summary(
        measure.induction_stats(saved, segment=32, rows=4, seed=0, vocab=order[:64]))
    return figures


def _environment(load_at_start: list[float]) -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            # Other jobs on a shared machine slow training: the time depends on them.
            "load_average_at_start": load_at_start, "load_average_at_end": _load()}


def train(config: TrainConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train, save into ``out`` and return the training log (also written to ``out``)."""
    check_output(out)  # before the imports: a wrong --out costs nothing
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from . import data

    hf_logging.disable_progress_bar()  # no bars from save/load in the log
    load_at_start = _load()
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)  # training batches only
    c = _tokenized_corpus(config)
    say(f"corpus ({sys.version.split()[0]}): {len(c.train_files)} training files, {len(c.heldout_files)} held out; "
        f"{c.train_stream.size} and {c.heldout_stream.size} tokens")
    model = _new_model(config, c.tokenizer.pad_token_id)
    optimizer = _optimizer(model, config)
    order = data.synthetic_ids(config.vocab_size, config.seed)
    # Its own stream: the evaluation never shifts the training data.
    probe = data.text_windows(c.heldout_stream, config.eval_len, 8, np.random.default_rng(config.seed + 1))

    curve: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    tokens, step, recent = 0, 0, []
    model.train()
    for index, phase in enumerate(config.phases):
        say(f"phase {index}: {phase}")
        for _ in range(phase.steps):
            input_ids, targets = _batch(phase, c.train_stream, order, rng)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            logits = model(input_ids=input_ids).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=data.IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            tokens += input_ids.numel()
            recent.append(loss.item())
            step += 1
            if step % config.log_every == 0 or step == config.steps:
                curve.append({"step": step, "seconds": round(time.perf_counter() - started, 1), "tokens": tokens,
                              "lr": round(lr_at(config, step - 1), 6), "train_loss": round(sum(recent) / len(recent), 4)})
                recent = []
                say(f"step {step}/{config.steps} loss {curve[-1]['train_loss']} ({tokens} tokens)")
            if step % config.eval_every == 0 and step < config.steps:
                evals.append(_evaluate(model, step, phase, order, probe))
                say(" ".join(f"{k}={v}" for k, v in evals[-1].items()))
    train_seconds = time.perf_counter() - started

    model.eval()
    _prepare_output(out)
    model.to(getattr(torch, config.save_dtype)).save_pretrained(out)
    c.tokenizer.save_pretrained(out)
    (out / MANIFEST).write_text(json.dumps(_manifest(c), indent=1) + "\n")
    say("measuring the saved weights")
    final = _final_figures(out, config, c, order)
    say(f"held-out loss {final['heldout_loss']} (unigram {final['unigram_loss']})")
    log = {
        "settings": dataclasses.asdict(config),
        "environment": _environment(load_at_start),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_trained": tokens,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "curve": curve,
        "evals": evals,
        "final": final,
    }
    (out / LOG).write_text(json.dumps(log, indent=1) + "\n")
    write_checksums(out)
    say(f"wrote {out} ({sum(p.stat().st_size for p in out.iterdir()) / 1e6:.2f} MB)")
    return log


# The held-out windows the tests score against the recorded probe loss (kvaudit.trained.heldout_prompts).
PROBE_LENGTH, PROBE_BATCH = 256, 4


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvaudit.trained.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model into")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                        help="override one setting (exploration runs only; the log records it)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    config = with_overrides(TrainConfig(), args.set)
    train(config, args.out, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
