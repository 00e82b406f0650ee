# Hand-written for kvaudit (KVA201): `[0]` on a list of `[start, end]` pairs is not a batch row;
# `[0]` on scores from score() is.
# expect: SpanPairsPress quiet=KVA201
# expect: RowZeroPress fires=KVA201
"""Two SnapKV-style presses (arXiv 2404.14469); no reuse claimed."""

from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class SpanPairsPress(BasePress):
    press: ScorerPress = None
    window: int = 4

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).mean(dim=1)
        seeds = scores.topk(8, dim=-1).indices
        spans = []
        for seed in seeds[:, 0].tolist():
            spans.append([max(0, seed - self.window), seed + self.window])
        starts = [span[0] for span in spans]
        kept = torch.cat([torch.arange(span[0], span[1]) for span in spans]).sort()[0]
        kept = kept.view(1, 1, -1, 1).expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        del starts
        return keys.gather(2, kept), values.gather(2, kept)


@dataclass
class RowZeroPress(BasePress):
    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        kept = scores.mean(dim=1)[0].topk(keys.shape[2] // 2).indices
        kept = kept.view(1, 1, -1, 1).expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, kept), values.gather(2, kept)
