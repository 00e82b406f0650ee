"""Skips score() on odd layers but selects afresh there, with no sharing (→ partial).

Odd layers rank positions by key norm (KnormPress's rule, inline): cheap, but not reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvpress import BasePress, ScorerPress


@dataclass
class SkipScoreOddLayersPress(BasePress):
    """A ChunkKV (arXiv 2502.00299) variant: the scorer on even layers; the lowest key norms on odd layers."""

    press: ScorerPress

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % 2 == 0:
            return self.press.compress(module, hidden_states, keys, values, attentions, kwargs)
        n_kept = max(1, int(keys.shape[2] * (1 - self.press.compression_ratio)))
        positions = (-keys.norm(dim=-1)).topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = positions.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
