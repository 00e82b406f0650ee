# Hand-written for kvaudit: anchor layers keep their indices for the others, but the other layers call
# score() anyway (and throw the result away) before gathering with the anchor's indices: the machinery is
# there, the saving is not. Partial.
# expect: WastedScorePress reuse=partial fires=KVA102 evidence=index-cache
"""Anchor-layer reuse (ChunkKV, arXiv 2502.00299) whose followers still score."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class WastedScorePress(BasePress):
    press: ScorerPress = None
    anchor_layers: tuple = (0, 16)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        if module.layer_idx in self.anchor_layers:
            self.kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
