# Hand-written for kvaudit (the pattern of Quest's strategy, research/microsoft__kascade): a fixed set of
# layers (`self.dense_layers`) is left uncompressed, and every other layer scores and selects for itself. The
# set decides who compresses, not who selects for whom: no reuse, and not a layer group.
# expect: DenseLayersPress reuse=missing fires=KVA101 not-evidence=layer-group,index-cache
"""Full cache on a few layers, per-layer selection elsewhere. ChunkKV (arXiv 2502.00299) is cited only to be checked."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class DenseLayersPress(BasePress):
    press: ScorerPress = None
    dense_layers: tuple = (0, 1)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx in self.dense_layers:
            return keys, values
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
