"""SnapKV and PyramidKV style presses: their papers claim no layer-wise reuse."""

from dataclasses import dataclass

from kvpress.presses.scorer_press import ScorerPress


@dataclass
class MySnapKVPress(ScorerPress):
    """SnapKV (arXiv 2404.14469): observation-window attention scores."""

    window_size: int = 64

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)


@dataclass
class MyPyramidKVPress(ScorerPress):
    """PyramidKV: https://arxiv.org/abs/2406.02069 — budgets shrink with depth."""

    window_size: int = 64

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx > 4:
            return -keys.norm(dim=-1)
        return keys.norm(dim=-1)


class NotAPress:
    """ChunkKV mentioned, but this class is not a press."""
