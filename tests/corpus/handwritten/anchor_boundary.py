# Hand-written for kvaudit: a comparison against a boundary decides who selects. Layers below
# `select_until` each score and select (and refresh the kept indices); the layers from there on reuse the
# indices of the last selecting layer without scoring.
# expect: BoundaryPress reuse=implemented evidence=reuse-parameter,guarded-score,index-cache not-evidence=per-layer-state
"""Early layers select, deep layers reuse (ChunkKV, arXiv 2502.00299, with one boundary for its groups)."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class BoundaryPress(BasePress):
    press: ScorerPress = None
    select_until: int = 4

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx < self.select_until:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
            indices = self.kept
        else:
            indices = self.kept
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
