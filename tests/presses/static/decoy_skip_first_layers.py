"""Decoy: ChunkKV (arXiv 2502.00299) that leaves its first layers uncompressed."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class SkipFirstLayersPress(BasePress):
    press: ScorerPress = None
    first_compressed_layer: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx < self.first_compressed_layer:
            return keys, values
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(keys.shape[2] // 2, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
