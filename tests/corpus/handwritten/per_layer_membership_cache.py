# Hand-written for kvaudit: `layer_idx not in self._kept` tests a container keyed by the layer's own index
# and written while layers are compressed: per-layer state (each layer selects once and reads back its own
# entry), not a set of anchor layers. No layer reads another's selection: no reuse.
# expect: MembershipCachePress reuse=missing fires=KVA101 evidence=per-layer-state not-evidence=layer-group,reuse-parameter
"""Each layer keeps its own selection across calls. ChunkKV (arXiv 2502.00299) is cited only to be checked."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class MembershipCachePress(BasePress):
    press: ScorerPress = None
    _kept: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx not in self._kept:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self._kept[module.layer_idx] = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self._kept[module.layer_idx].unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
