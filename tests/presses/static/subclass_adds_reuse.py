"""A subclass that adds layer-wise index reuse to a base from another file (ChunkKV)."""

from dataclasses import dataclass

from chunk_base import ChunkBasePress


@dataclass
class SubclassReusePress(ChunkBasePress):
    n_reuse: int = 2

    def select(self, module, hidden_states, keys, values, attentions, kwargs):
        leader = module.layer_idx // self.n_reuse * self.n_reuse
        if module.layer_idx == leader:
            self.indices = super().select(module, hidden_states, keys, values, attentions, kwargs)
        return self.indices
