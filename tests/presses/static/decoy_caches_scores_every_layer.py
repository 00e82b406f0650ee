"""Decoy: ChunkKV (arXiv 2502.00299) that caches indices but scores on every layer."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class CachesButScoresPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        if module.layer_idx % self.n_reuse == 0:
            self.cached = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.cached.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
