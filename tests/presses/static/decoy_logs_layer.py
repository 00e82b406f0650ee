"""Decoy: ChunkKV (arXiv 2502.00299) that only logs the layer index."""

import logging
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress

logger = logging.getLogger(__name__)


@dataclass
class LogsLayerPress(BasePress):
    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        logger.info(f"layer {module.layer_idx}: compressing {keys.shape[2]} tokens")
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(keys.shape[2] // 2, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, module.head_dim)
        return keys.gather(2, index), values.gather(2, index)
