# Hand-written for kvaudit (the pattern of Kascade's and OmniKV's strategies, research/microsoft__kascade,
# written as a kvpress press): a constructor field lists the anchor layers; only they score and select,
# every other layer gathers with the indices the last anchor kept. Index reuse with explicit anchors.
# expect: AnchorLayerSetPress reuse=implemented evidence=reuse-parameter,guarded-score,index-cache not-evidence=per-layer-state quiet=KVA102
"""ChunkKV-style (arXiv 2502.00299) index reuse, with the selecting layers listed by hand."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class AnchorLayerSetPress(BasePress):
    press: ScorerPress = None
    anchor_layers: tuple = (0, 8, 16, 24)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx in self.anchor_layers:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self._kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self._kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
