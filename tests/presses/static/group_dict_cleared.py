"""ChunkKV (arXiv 2502.00299): a group dict cleared on layer 0, ternary leader test."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ClearedGroupDictPress(BasePress):
    press: ScorerPress = None
    layers_per_group: int = 4
    memo: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx == 0:
            self.memo.clear()
        key = module.layer_idx // self.layers_per_group
        if key not in self.memo:
            self.memo[key] = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort(
                dim=-1, descending=True
            )[..., : keys.shape[2] // 2]
        index = self.memo[key].unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
