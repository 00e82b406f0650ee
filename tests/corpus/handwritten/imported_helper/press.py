# Hand-written for kvaudit: the press calls functions imported from another file of the run.
# expect: ImportedHelperPress reuse=implemented evidence=guarded-score,index-cache,reuse-parameter
"""ChunkKV (arXiv 2502.00299), helpers imported from reuse_helpers.py."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress
from reuse_helpers import leads, select


@dataclass
class ImportedHelperPress(BasePress):
    press: ScorerPress = None
    share_every: int = 2
    kept: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if leads(module.layer_idx, self.share_every):
            select(self, module, hidden_states, keys, values, attentions, kwargs)
        index = self.kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
