"""Leaves its first layers uncompressed, scores every later layer (→ not-observed).

Layers below ``first_layer`` skip ``score()`` but keep everything: an uncompressed layer is not
index reuse, so the tracer must not call this reuse, nor partial.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvpress import BasePress, ScorerPress


@dataclass
class LateStartPress(BasePress):
    """A ChunkKV (arXiv 2502.00299) variant: per-head top-k of the scorer, from layer ``first_layer`` on."""

    press: ScorerPress
    first_layer: int = 4

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx < self.first_layer:
            return keys, values
        return self.press.compress(module, hidden_states, keys, values, attentions, kwargs)
