"""A correct ChunkKV Algorithm-2 press: group leaders score, followers reuse (→ observed).

Layers form groups of ``n_reuse``; the first layer of a group (``layer_idx % n_reuse == 0``) calls
``score()`` and selects per batch row; the other layers gather with the leader's indices. The
leader overwrites its group's indices on every prefill, so nothing leaks between prefills.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from kvpress import BasePress, ScorerPress


def chunk_select(scores: torch.Tensor, chunk_length: int, compression_ratio: float) -> torch.Tensor:
    """Per-row positions to keep, (batch, n_kept), sorted: tokens ranked by their chunk's mean score."""
    batch, _, length = scores.shape
    token_scores = scores.sum(dim=1)  # (batch, length): one choice per row, shared by the KV heads
    chunk_of = torch.arange(length, device=scores.device) // chunk_length
    n_chunks = int(chunk_of[-1]) + 1
    sums = torch.zeros(batch, n_chunks, device=scores.device, dtype=token_scores.dtype)
    sums.index_add_(1, chunk_of, token_scores)
    counts = torch.bincount(chunk_of, minlength=n_chunks).to(token_scores.dtype)
    chunk_scores = (sums / counts)[:, chunk_of]  # each token carries its chunk's mean
    # Earlier positions win ties inside a chunk, so whole chunks are kept where the budget allows.
    tie_break = torch.linspace(0, 1e-6, length, device=scores.device, dtype=token_scores.dtype)
    n_kept = max(1, int(length * (1 - compression_ratio)))
    return (chunk_scores - tie_break).topk(n_kept, dim=-1).indices.sort(dim=-1).values


def gather(keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    index = positions[:, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
    return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()


@dataclass
class Algorithm2ChunkPress(BasePress):
    """ChunkKV (arXiv 2502.00299) with layer-wise index reuse, done right."""

    press: ScorerPress
    chunk_length: int = 10
    n_reuse: int = 2
    _indices: dict = field(default_factory=dict, init=False, repr=False)

    def post_init_from_model(self, model):
        self.press.post_init_from_model(model)

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.press.compression_ratio == 0:
            return keys, values
        group = module.layer_idx // self.n_reuse
        if module.layer_idx % self.n_reuse == 0:  # the leader selects afresh on every prefill
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self._indices[group] = chunk_select(scores, self.chunk_length, self.press.compression_ratio)
        return gather(keys, values, self._indices[group])
