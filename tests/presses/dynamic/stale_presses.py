"""Index reuse whose cache is never refreshed for a new sequence (→ stale-indices).

``StaleReusePress`` fills its per-group cache once and keeps it forever: a later, longer prompt
silently keeps the positions chosen for the first one. ``StaleMaskPress`` caches a boolean mask
instead: the first longer prompt fails on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from kvpress import BasePress, ScorerPress


def topk_positions(scores: torch.Tensor, compression_ratio: float) -> torch.Tensor:
    """Per-row positions to keep, (batch, n_kept), sorted, from head-summed scores."""
    token_scores = scores.sum(dim=1)
    n_kept = max(1, int(token_scores.shape[-1] * (1 - compression_ratio)))
    return token_scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values


@dataclass
class StaleReusePress(BasePress):
    """ChunkKV (arXiv 2502.00299) Algorithm 2 with a cache keyed by group only: filled on the first prefill, never refreshed."""

    press: ScorerPress
    n_reuse: int = 2
    _indices: dict = field(default_factory=dict, init=False, repr=False)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        group = module.layer_idx // self.n_reuse
        if group not in self._indices:  # BUG: nothing clears this for the next prompt
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self._indices[group] = topk_positions(scores, self.press.compression_ratio)
        positions = self._indices[group]
        index = positions[:, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()


@dataclass
class StaleMaskPress(BasePress):
    """The same bug with a boolean keep-mask: the next prompt of another length fails on it."""

    press: ScorerPress
    n_reuse: int = 2
    _masks: dict = field(default_factory=dict, init=False, repr=False)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        group = module.layer_idx // self.n_reuse
        if group not in self._masks:  # BUG: never refreshed
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            mask = torch.zeros(scores.shape[-1], dtype=torch.bool, device=keys.device)
            mask[topk_positions(scores[:1], self.press.compression_ratio)[0]] = True
            self._masks[group] = mask
        keep = self._masks[group]
        return keys[:, :, keep].contiguous(), values[:, :, keep].contiguous()
