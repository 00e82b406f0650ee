# Hand-written for kvaudit: a mask kept per layer and refreshed every few decoding steps; every
# layer computes its own mask. Emptiness checks on per-layer values are not layer-group tests.
# expect: PerLayerMaskPress reuse=missing fires=KVA101 evidence=per-layer-state not-evidence=layer-group
"""Per-layer masks refreshed while decoding. Cites ChunkKV (arXiv 2502.00299) to be checked."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PerLayerMaskPress(BasePress):
    press: ScorerPress = None
    refresh_every: int = 16
    masks: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer = module.layer_idx
        self.steps[layer] = self.steps.get(layer, 0) + 1
        keep_budget = self.budgets.get(layer, keys.shape[2] // 2)
        if keep_budget == 0:
            return keys[:, :, :0], values[:, :, :0]
        mask = self.masks.get(layer)
        if mask is None or mask.numel() == 0 or self.steps[layer] % self.refresh_every == 0:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            mask = scores.topk(keep_budget, dim=-1).indices
            self.masks[layer] = mask
        index = mask.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
