"""ChunkKV with Algorithm 2 written the obvious way (arXiv 2502.00299)."""

from dataclasses import dataclass

import torch

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class Alg2ModuloPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        n_kept = int(keys.shape[2] * (1 - self.press.compression_ratio))
        if module.layer_idx % self.n_reuse == 0:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.indices = scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = self.indices.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
