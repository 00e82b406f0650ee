"""ChunkKV (arXiv 2502.00299): the leader test lives in a staticmethod."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class StaticLeaderPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2

    @staticmethod
    def _leads(layer: int, every: int) -> bool:
        return layer % every == 0

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self._leads(module.layer_idx, self.n_reuse):
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
