"""ChunkKV (arXiv 2502.00299) that scores once and reuses forever: an `is None` guard only."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class StaleIsNonePress(BasePress):
    press: ScorerPress = None
    kept: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.kept is None:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.kept.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
