# Hand-written for kvaudit: layer 0 alone selects (`layer_idx == 0`, equality with one layer) and keeps its
# choice as a mask (`zeros_like(...).scatter_(-1, indices, True)`); every later layer applies that mask
# without scoring. Reuse of a selection kept as a mask.
# expect: FirstLayerMaskPress reuse=implemented evidence=guarded-score,index-cache not-evidence=per-layer-state
"""Selection made once on the first layer and applied by every layer (arXiv 2502.00299's Algorithm 2 with one group)."""

from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class FirstLayerMaskPress(BasePress):
    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx == 0:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            top = scores.topk(keys.shape[2] // 2, dim=-1).indices
            self._keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
        keep = self._keep[..., None]
        return keys * keep, values * keep
