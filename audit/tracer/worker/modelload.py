"""The model every press is traced on: the embedded tiny model, or a local Hugging Face folder.

Never downloads: HF_HUB_OFFLINE=1 is set before transformers is imported, and a local folder is
opened with ``local_files_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..options import TraceOptions  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelInfo:
    """What the report says about the model."""

    arch: str
    layers: int
    source: str


def load_model(options: TraceOptions) -> tuple[nn.Module, ModelInfo]:
    """Build (or load) the model of ``options``; eval mode, on its device and dtype."""
    dtype = DTYPES[options.dtype]
    if options.model_folder:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            options.model_folder, local_files_only=True, dtype=dtype, attn_implementation="sdpa"
        ).to(options.device)
        model.eval()
        config = model.config
        source = (f"kvaudit's tiny trained model ({config.num_hidden_layers}-layer Llama trained on the standard "
                  f"library's source; prompts from its held-out text; HF_HUB_OFFLINE=1)" if options.trained
                  else f"local folder {options.model_path} (HF_HUB_OFFLINE=1: nothing is downloaded)")
        return model, ModelInfo(arch=str(config.model_type), layers=int(config.num_hidden_layers), source=source)

    from ...tinymodel import build_tiny_model

    model = build_tiny_model(options.arch, options.layers, options.seed, dtype, options.device)
    return model, ModelInfo(
        arch=options.arch,
        layers=options.layers,
        source=(
            f"embedded tiny {options.arch}: random weights built locally from a config, seed {options.seed} "
            "(HF_HUB_OFFLINE=1: nothing is downloaded)"
        ),
    )


def warm_up(model: nn.Module) -> None:
    """One prefill without and one with a kvpress press, in the worker, before any fork.

    Why: the first prefill of a process pays one-time costs (allocator, lazy initialisation of
    kernels and of kvpress code paths). Paid once here, every forked child inherits the warm
    state, so the first traced press is not timed slower than the others. Only trusted library
    code runs here, never the user's press.
    """
    from kvpress import SnapKVPress
    from transformers import DynamicCache

    from ...tinymodel import make_input_ids

    device = next(model.parameters()).device
    input_ids = make_input_ids(128, 1, seed=12345, vocab_size=model.config.vocab_size).to(device)
    with torch.no_grad():
        model(input_ids=input_ids, past_key_values=DynamicCache(), use_cache=True)
        with SnapKVPress(compression_ratio=0.5, window_size=16)(model):
            model(input_ids=input_ids, past_key_values=DynamicCache(), use_cache=True)
