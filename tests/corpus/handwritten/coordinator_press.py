# Hand-written for kvaudit: a kvpress press holding a coordinator object (a class of the run): the
# group leader publishes its indices, followers fetch them by the leader's index.
# expect: CoordinatedPress reuse=implemented evidence=guarded-score,index-cache,cross-layer-read
"""ChunkKV (arXiv 2502.00299) with the exchange delegated to a coordinator."""

from dataclasses import dataclass, field

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


class IndexBoard:
    def __init__(self, every: int = 2) -> None:
        self.every = every
        self.board = {}

    def leader(self, layer: int) -> int:
        return layer // self.every * self.every

    def publish(self, layer: int, indices) -> None:
        self.board[layer] = indices

    def fetch(self, layer: int):
        return self.board[self.leader(layer)]


@dataclass
class CoordinatedPress(BasePress):
    press: ScorerPress = None
    coordinator: IndexBoard = field(default_factory=IndexBoard)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer = module.layer_idx
        if layer == self.coordinator.leader(layer):
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.coordinator.publish(layer, scores.topk(keys.shape[2] // 2, dim=-1).indices)
        indices = self.coordinator.fetch(layer)
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
