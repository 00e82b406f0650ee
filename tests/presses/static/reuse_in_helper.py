# Paper: https://arxiv.org/abs/2502.00299 (ChunkKV), layer-wise index reuse.
from dataclasses import dataclass, field

from kvpress import BasePress, ScorerPress


@dataclass
class HelperReusePress(BasePress):
    """Reuse lives in helper methods; the leader test returns through two helpers."""

    press: ScorerPress = None
    share_every: int = 3
    _kept: dict = field(default_factory=dict, init=False)

    def _layer(self, module):
        return getattr(module, "layer_idx", 0)

    def _leads_group(self, layer: int) -> bool:
        return layer - layer % self.share_every == layer

    def _select(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        return scores.argsort(dim=-1, descending=True)[..., : keys.shape[2] // 2]

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer = self._layer(module)
        if self._leads_group(layer):
            self._kept["current"] = self._select(module, hidden_states, keys, values, attentions, kwargs)
        index = self._kept["current"].unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
