# Hand-written for kvaudit (pattern of kvpress 0.5.5's CAMPress / DecodingPress): per-layer decode-step
# counters and per-layer running sums; each layer scores when its own counter fires.
# expect: StepCounterPress reuse=missing fires=KVA101 evidence=per-layer-state not-evidence=layer-group
"""A decoding press in the style of CaM. ChunkKV (arXiv 2502.00299) is cited only to be checked."""

from collections import defaultdict
from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class StepCounterPress(BasePress):
    base_press: ScorerPress = None
    compression_interval: int = 64
    layer_step_counts: dict = field(default_factory=lambda: defaultdict(int))
    running: dict = field(default_factory=dict)

    def forward_hook(self, module, input, kwargs, output):
        layer_idx = int(module.layer_idx)
        hidden_states = kwargs["hidden_states"]
        if layer_idx not in self.running:
            self.running[layer_idx] = hidden_states.new_zeros(1)
        self.running[layer_idx] += hidden_states.abs().mean()
        self.layer_step_counts[layer_idx] += 1
        if self.layer_step_counts[layer_idx] >= self.compression_interval:
            cache = kwargs["past_key_values"]
            keys, values = cache.layers[layer_idx].keys, cache.layers[layer_idx].values
            scores = self.base_press.score(module, hidden_states, keys, values, None, kwargs)
            kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
            index = kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
            cache.layers[layer_idx].keys = keys.gather(2, index)
            cache.layers[layer_idx].values = values.gather(2, index)
            self.layer_step_counts[layer_idx] = 0
        return output
