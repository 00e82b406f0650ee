# Hand-written for kvaudit: the anchor layers come from the model's configuration
# (`module.config.kv_anchor_layers`), not from the press: anchors score and publish their indices, the
# other layers read them. Reuse with the group set read from a configuration value.
# expect: ConfigAnchorsPress reuse=implemented evidence=guarded-score,index-cache not-evidence=per-layer-state
"""Anchor-layer index reuse (as in ChunkKV, arXiv 2502.00299), anchors chosen by the model's config."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ConfigAnchorsPress(BasePress):
    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        anchors = module.config.kv_anchor_layers
        is_anchor = module.layer_idx in anchors
        if is_anchor:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.published = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.published.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
