"""ChunkKV (arXiv 2502.00299) reuse through a dict keyed by group that is never cleared."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class StaleGroupDictPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2
    by_group: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        group = module.layer_idx // self.n_reuse
        if group not in self.by_group:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.by_group[group] = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.by_group[group].unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
