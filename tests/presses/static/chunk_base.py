"""A chunk-selection base with no reuse. ChunkKV, arXiv 2502.00299."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkBasePress(BasePress):
    press: ScorerPress = None
    chunk_length: int = 10

    def select(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = max(1, keys.shape[2] // self.chunk_length // 2)
        return scores.topk(n_chunks * self.chunk_length, dim=-1).indices

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        indices = self.select(module, hidden_states, keys, values, attentions, kwargs)
        index = indices.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
