# Hand-written for kvaudit: the leader test and the score() call live in a module-level function
# that receives the press as its first argument.
# expect: ModuleHelperPress reuse=implemented evidence=guarded-score,index-cache,reuse-parameter
"""ChunkKV (arXiv 2502.00299), with the work done by a module-level helper."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


def _select(press, module, hidden_states, keys, values, attentions, kwargs):
    if module.layer_idx % press.n_reuse == 0:
        scores = press.press.score(module, hidden_states, keys, values, attentions, kwargs)
        press.indices = scores.topk(keys.shape[2] // 2, dim=-1).indices
    return press.indices


@dataclass
class ModuleHelperPress(BasePress):
    press: ScorerPress = None
    n_reuse: int = 2
    indices: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        indices = _select(self, module, hidden_states, keys, values, attentions, kwargs)
        index = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
