"""Reuse in an overridden forward_hook. Based on ChunkKV (arXiv 2502.00299)."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress
from kvpress.utils import extract_keys_and_values


@dataclass
class HookReusePress(BasePress):
    press: ScorerPress = None
    group_size: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        self.last = scores.topk(keys.shape[2] // 2, dim=-1).indices
        index = self.last.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)

    def forward_hook(self, module, input, kwargs, output):
        if module.layer_idx % self.group_size:
            cache = kwargs["past_key_values"]
            keys, values = extract_keys_and_values(cache, module.layer_idx)
            index = self.last.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
            cache.layers[module.layer_idx].keys = keys.gather(2, index)
            cache.layers[module.layer_idx].values = values.gather(2, index)
            return output
        return super().forward_hook(module, input, kwargs, output)
