# Hand-written for kvaudit: the leader stores under its own index, followers read under the leader
# index `layer_idx - layer_idx % n`. Algorithm 2.
# expect: LeaderKeyedPress reuse=implemented evidence=cross-layer-read,index-cache,guarded-score,reuse-parameter
"""ChunkKV (arXiv 2502.00299), followers read the leader's entry."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class LeaderKeyedPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2
    by_layer: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer_idx = module.layer_idx
        if layer_idx == 0:
            self.by_layer.clear()
        leader = layer_idx - layer_idx % self.n_reuse
        if layer_idx == leader:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.by_layer[layer_idx] = scores.topk(keys.shape[2] // 2, dim=-1).indices
        indices = self.by_layer[leader]
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
