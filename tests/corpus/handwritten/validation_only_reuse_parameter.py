# Hand-written for kvaudit: n_reuse is asserted, checked with a raise, logged, shown in __repr__
# and copied into a field nothing reads, but never acts on anything: declared but unused.
# expect: ValidatedOnlyPress reuse=partial fires=KVA102,KVA103
"""ChunkKV (arXiv 2502.00299) whose reuse knob does nothing."""

import logging
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress

logger = logging.getLogger(__name__)


@dataclass
class ValidatedOnlyPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2

    def __post_init__(self):
        assert self.n_reuse >= 1, "n_reuse must be at least 1"
        if self.n_reuse > 64:
            raise ValueError(f"n_reuse={self.n_reuse} is too large")
        self._configured_groups = self.n_reuse

    def __repr__(self):
        return f"ValidatedOnlyPress(n_reuse={self.n_reuse})"

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        logger.debug("layer groups of %d", self.n_reuse)
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(keys.shape[2] // 2, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
