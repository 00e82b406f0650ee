# Hand-written for kvaudit: 0.2 x the previous layer's scores blended into each layer's own, while
# every layer still scores and selects. Shared scores, not reused indices.
# expect: BlendPreviousPress reuse=missing fires=KVA101 evidence=cross-layer-read not-evidence=index-cache
"""Cross-layer score smoothing. Cites ChunkKV (arXiv 2502.00299) to be checked."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class BlendPreviousPress(BasePress):
    press: ScorerPress = None
    residual: float = 0.2
    layer_scores: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer_idx = module.layer_idx
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        previous = self.layer_scores.get(layer_idx - 1)
        if previous is not None and previous.shape == scores.shape:
            scores = (1 - self.residual) * scores + self.residual * previous
        self.layer_scores[layer_idx] = scores.detach()
        kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
