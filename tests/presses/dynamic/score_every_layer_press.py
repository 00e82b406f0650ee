"""Caches and reuses a leader's indices, yet still calls score() on every layer (→ partial).

The reuse saves nothing: followers compute scores and throw them away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvpress import BasePress, ScorerPress


@dataclass
class ScoreEveryLayerReusePress(BasePress):
    """ChunkKV (arXiv 2502.00299) reuse gone wrong: followers gather with the leader's indices but only after scoring themselves."""

    press: ScorerPress
    n_reuse: int = 2
    _indices: dict = field(default_factory=dict, init=False, repr=False)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)  # every layer
        group = module.layer_idx // self.n_reuse
        if module.layer_idx % self.n_reuse == 0:
            token_scores = scores.sum(dim=1)
            n_kept = max(1, int(token_scores.shape[-1] * (1 - self.press.compression_ratio)))
            self._indices[group] = token_scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values
        positions = self._indices[group]
        index = positions[:, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
