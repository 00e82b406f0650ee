"""Tiny causal language models built locally from a config: no download, ever.

Used by the tracer, the reference-press tests and the benchmarks. Importing this module
imports torch and transformers, so only the dynamic paths import it.
"""

from __future__ import annotations

import os

# Nothing may be fetched from a hub at run time; presses that download must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# The shape and the vocabulary (4096 ids: why, in kvaudit.defaults) live where the reproductions read them.
from .defaults import TINY_MODEL, VOCAB_SIZE  # noqa: E402

ARCHES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def build_tiny_model(
    arch: str = "llama",
    layers: int = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    max_position_embeddings: int = TINY_MODEL["max_position_embeddings"],
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """Build a randomly initialised tiny model of ``arch`` with a fixed seed.

    Hidden size 128, 4 heads, 2 KV heads, vocabulary ``VOCAB_SIZE`` (4096, so that a prompt can
    use each token id once): small enough that a
    512-token prefill takes tens of milliseconds on a CPU.
    """
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(sorted(ARCHES))}")
    config_cls, model_cls = ARCHES[arch]
    shape = {**TINY_MODEL, "max_position_embeddings": max_position_embeddings}
    config = config_cls(num_hidden_layers=layers, **shape, vocab_size=VOCAB_SIZE,
                        attn_implementation=attn_implementation)
    torch.manual_seed(seed)
    model = model_cls(config).to(device=device, dtype=dtype)
    model.eval()
    return model


def make_input_ids(tokens: int, batch: int = 1, seed: int = 0, vocab_size: int = VOCAB_SIZE) -> torch.Tensor:
    """Deterministic random token ids of shape (batch, tokens); rows differ from each other.

    Each row uses distinct ids when the vocabulary allows it (``tokens <= vocab_size``): repeated
    ids would give identical layer-0 values, which the tracer cannot tell apart.
    """
    generator = torch.Generator().manual_seed(seed)
    if tokens <= vocab_size:
        return torch.stack([torch.randperm(vocab_size, generator=generator)[:tokens] for _ in range(batch)])
    return torch.randint(0, vocab_size, (batch, tokens), generator=generator)


_TOKENIZER_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A key-value cache stores the keys and values of past tokens. "
    "Compression keeps the most important tokens and drops the others, so that long contexts fit in memory. "
    "ChunkKV keeps whole chunks of tokens, because a chunk carries more meaning than scattered words. "
    "Layers that keep similar tokens can share their indices, which saves the cost of scoring every layer. "
    "What is the capital of France? Paris is the capital of France. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000."
)


def build_local_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None, model_max_length: int = 65536):
    """A byte-level BPE tokenizer trained locally with ``tokenizers``: no download, ever.

    Wrapped in ``PreTrainedTokenizerFast`` so that transformers pipelines (including kvpress's
    ``KVPressTextGenerationPipeline``) accept it. Byte-level, so any text encodes. ``vocab_size``
    must not exceed the tiny models' vocabulary (``VOCAB_SIZE``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size > VOCAB_SIZE:
        raise ValueError(f"vocab_size {vocab_size} exceeds the tiny models' vocabulary of {VOCAB_SIZE}")
    specials = ["<unk>", "<bos>", "<eos>", "<pad>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or [_TOKENIZER_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        model_max_length=model_max_length,
    )
