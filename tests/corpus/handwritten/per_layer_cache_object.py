# Hand-written for kvaudit (MLX style, audited through the corpus's [[press-bases]]): one cache object
# per layer, a leader test, but the "reused" indices live on the object itself, so a follower reads
# its own (empty) state, never its leader's: the machinery of reuse without the sharing.
# expect: LonelyLeaderCache reuse=partial fires=KVA102 evidence=per-layer-state,layer-check
"""ChunkKV (arXiv 2502.00299)-style cache for one layer."""

from mlx_lm.models.cache import KVCache


class LonelyLeaderCache(KVCache):
    def __init__(self, layer_id: int, n_reuse: int = 2) -> None:
        super().__init__()
        self._layer_id = layer_id
        self.n_reuse = n_reuse
        self.kept = None

    def update_and_fetch(self, keys, values):
        if self._layer_id % self.n_reuse == 0:
            self.kept = chunkkv_update(keys, values)
        keys, values = keys[..., self.kept, :], values[..., self.kept, :]
        return super().update_and_fetch(keys, values)
