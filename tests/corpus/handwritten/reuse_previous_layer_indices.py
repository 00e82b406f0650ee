# Hand-written for kvaudit: odd layers reuse the previous layer's kept indices, read by another
# layer's index (`layer_idx - 1`); only even layers score. Index reuse with groups of two.
# expect: PreviousLayerIndicesPress reuse=implemented evidence=cross-layer-read,index-cache,guarded-score
"""ChunkKV (arXiv 2502.00299) with reuse in pairs of layers, keyed by the previous layer."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PreviousLayerIndicesPress(BasePress):
    press: ScorerPress = None
    kept: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer_idx = module.layer_idx
        if layer_idx % 2 == 1 and layer_idx - 1 in self.kept:
            indices = self.kept[layer_idx - 1]
        else:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            indices = scores.topk(keys.shape[2] // 2, dim=-1).indices
        self.kept[layer_idx] = indices
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
