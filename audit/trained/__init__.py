"""kvaudit's tiny trained model: a small Llama trained on the standard library's source, shipped as package data.

Random weights exercise the mechanics of a press; claims about *learned* attention (layer-wise index
similarity, quality after reuse, sinks, retrieval heads) need a model that learned something. This
package holds one (``tiny-trained/``, built by ``make tiny-model`` with :mod:`kvaudit.trained.train`)
and what a claim needs around it:

- :func:`trained_model_path` and :func:`verify_checksum`: the folder, and whether it is intact;
- :func:`load`: the model and its tokenizer, offline;
- :func:`heldout_prompts`: token windows from the held-out standard-library files of the manifest,
  deterministic by seed (attention on real text has structure to find; random ids have none);
- :mod:`kvaudit.trained.measure`: locality, sink mass, induction score, next-token loss.

Importing this package imports neither torch nor tokenizers; :func:`load` and
:func:`heldout_prompts` import them when called.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

MODEL_FOLDER = "tiny-trained"
CHECKSUMS, MANIFEST, LOG = "SHA256SUMS", "manifest.json", "training-log.json"


class ChecksumMismatch(ValueError):
    """A file of the model folder is missing or differs from its recorded SHA-256."""


class HeldOutTextUnavailable(RuntimeError):
    """The running interpreter lacks the held-out standard-library files the manifest names."""


def trained_model_path() -> Path:
    """The folder of the committed model (``config.json``, weights, tokenizer, manifest, log, checksums)."""
    return Path(__file__).resolve().parent / MODEL_FOLDER


def _folder(folder: Path | str | None) -> Path:
    return trained_model_path() if folder is None else Path(folder)


def checksum_problems(folder: Path | str | None = None) -> list[str]:
    """One line per file of ``SHA256SUMS`` that is missing or differs; empty when the folder is intact."""
    folder = _folder(folder)
    try:
        lines = (folder / CHECKSUMS).read_text().splitlines()
    except OSError:
        return [f"{folder / CHECKSUMS}: missing"]
    problems = []
    for line in lines:
        digest, _, name = line.partition("  ")
        try:
            actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError:
            problems.append(f"{name}: missing")
            continue
        if actual != digest:
            problems.append(f"{name}: sha256 {actual[:12]}…, recorded {digest[:12]}…")
    return problems


def verify_checksum(folder: Path | str | None = None) -> None:
    """Raise :class:`ChecksumMismatch` (one line) unless every file of ``SHA256SUMS`` matches."""
    problems = checksum_problems(folder)
    if problems:
        raise ChecksumMismatch(f"the trained model in {_folder(folder)} is damaged: " + "; ".join(problems))


def manifest(folder: Path | str | None = None) -> dict[str, Any]:
    """The corpus manifest: Python version, files with split, SHA-256 and token count."""
    return json.loads((_folder(folder) / MANIFEST).read_text())


def training_log(folder: Path | str | None = None) -> dict[str, Any]:
    """The training log: settings, loss curve, held-out loss, unigram baseline, attention figures."""
    return json.loads((_folder(folder) / LOG).read_text())


def load(folder: Path | str | None = None, dtype: str = "float32", attn_implementation: str = "sdpa",
         verify: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the trained model, offline, the model in eval mode.

    ``model.config.name_or_path`` is the folder, so that kvpress presses which call
    ``AutoTokenizer.from_pretrained(model.config.name_or_path)`` find the tokenizer beside it.
    """
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = _folder(folder)
    if verify:
        verify_checksum(folder)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the caller's stderr
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=getattr(torch, dtype),
                                                     attn_implementation=attn_implementation)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


@lru_cache(maxsize=4)
def _heldout_stream(folder: Path, strict: bool) -> tuple["np.ndarray", int]:
    from tokenizers import Tokenizer

    from .corpus import read_source, stdlib_root
    from .data import token_stream

    root = stdlib_root()
    texts = []
    for entry in manifest(folder)["files"]:
        if entry["split"] != "heldout":
            continue
        read = read_source(root, entry["path"])
        if read is not None and (read[1] == entry["sha256"] or not strict):
            texts.append(read[0])
    if not texts:
        recorded = manifest(folder)["python"]
        raise HeldOutTextUnavailable(
            f"none of the held-out standard-library files of the trained model's manifest (Python {recorded}) "
            f"is present{' unchanged' if strict else ''} under {root}"
        )
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return token_stream(e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)), len(texts)


def heldout_prompts(length: int, batch: int = 1, seed: int = 0, folder: Path | str | None = None,
                    strict: bool = True) -> "torch.Tensor":
    """``batch`` windows of ``length`` token ids from the model's held-out text: BOS, then held-out tokens.

    The held-out files of the manifest are read from the running interpreter's standard library
    (their text is not stored in kvaudit) and tokenized with the model's tokenizer; windows start
    at offsets drawn by ``numpy.random.default_rng(seed)``, so the same arguments give the same
    tensor. ``strict`` uses only files whose SHA-256 matches the manifest (the text the figures were
    recorded on); ``strict=False`` also takes held-out files another Python version changed.

    Raises
    ------
    HeldOutTextUnavailable
        No held-out file is usable (another Python, or a standard library without sources).
    """
    import numpy as np
    import torch

    from .data import text_windows

    stream, _ = _heldout_stream(_folder(folder).resolve(), strict)
    return torch.from_numpy(text_windows(stream, length, batch, np.random.default_rng(seed)))
