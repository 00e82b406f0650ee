# kvaudit test corpus. Provenance: https://github.com/rajveer43/VeloxQuant-MLX,
# veloxquant_mlx/cache/chunkkv_cache.py, commit 0c459ae434757c54c9c479b6496200a936f1b40b.
# Licence: MIT, Copyright (c) 2026 Rajveer Rathod (the repository's LICENSE: permission to copy and
# modify with this notice kept). Trimmed: the module docstring is shortened, method docstrings and
# long comments are cut, and make_mask(), is_trimmable() and the read-only properties are left out;
# the code of __init__, _ensure_states, _head_idx and update_and_fetch is unchanged.
# Verdict reached by reading the code: an MLX cache, one object per layer (mlx_lm builds a list of
# caches). With a coordinator, `coordinator.is_leader(layer_id)` (layer_id == (layer_id // N) * N)
# decides in the constructor whether this layer leads its block of N layers. The leader runs
# `chunkkv_update` (scoring and selecting) and publishes the kept positions under its own layer id;
# a follower never scores: it fetches from the coordinator, which looks them up under the leader
# `leader_for(layer_id)`, and replays them. That is ChunkKV's Algorithm 2.
# expect: ChunkKVCache reuse=implemented evidence=guarded-score,index-cache
"""ChunkKV-adapted KV cache — chunk-level (semantic-block) eviction.

Inspired by "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient
Long-Context LLM Inference" (Liu et al., 2025, arXiv:2502.00299). Documented as
"ChunkKV-adapted (VeloxQuant-MLX implementation)" — not a faithful port.

Optionally, setting ``chunkkv_reuse_layers > 1`` enables the paper's Algorithm 2
(layer-wise index reuse): layers are grouped into consecutive blocks of that
size, only the first ("leader") layer per block runs eviction, and the rest
("follower" layers) reuse the leader's exact kept-token positions via a shared
``ChunkKVIndexReuseCoordinator`` (injected at ``for_model`` build time).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache as _MLXKVCache

from veloxquant_mlx.cache._eviction_mask import eviction_make_mask
from veloxquant_mlx.cache.chunkkv_coordinator import ChunkKVIndexReuseCoordinator
from veloxquant_mlx.quantizers.chunkkv import (
    ChunkKVState,
    chunkkv_apply_reuse_indices,
    chunkkv_fp16_bytes,
    chunkkv_get_kv,
    chunkkv_trim_to,
    chunkkv_update,
    init_chunkkv_state,
)


def _replay_positions(
    positions: mx.array | None, new_positions: mx.array, kept_positions: list[list[int]]
) -> mx.array:
    """Replay ``chunkkv_update``'s per-token append-then-select-by-index steps on positions."""
    S = int(new_positions.shape[0])
    for i in range(S):
        p_i = new_positions[i : i + 1]
        positions = p_i if positions is None else mx.concatenate([positions, p_i], axis=0)
        positions = positions[kept_positions[i]]
    return positions


class ChunkKVCache(_MLXKVCache):
    """KV cache implementing ChunkKV-adapted chunk-level eviction for one layer.

    Args:
        config: :class:`KVCacheConfig`.
        layer_id: This layer's index (used to resolve leader/follower role and
            report/query the coordinator). ``None`` for single-cache
            construction — the layer then always runs its own eviction (as if
            it were its own leader).
        coordinator: Shared :class:`ChunkKVIndexReuseCoordinator`, or ``None``.
            When present and ``layer_id`` is not the block's leader, this layer
            reuses the leader's kept-token positions instead of evicting itself.
    """

    def __init__(
        self,
        config: Any,
        layer_id: int | None = None,
        coordinator: ChunkKVIndexReuseCoordinator | None = None,
    ) -> None:
        super().__init__()
        self._budget = int(getattr(config, "chunkkv_budget", 512))
        self._chunk_size = int(getattr(config, "chunkkv_chunk_size", 8))
        self._n_sink = int(getattr(config, "chunkkv_n_sink", 4))
        self._score_mode = str(getattr(config, "chunkkv_score", "attn_mass"))

        self._layer_id = layer_id
        self._coordinator = coordinator
        self._is_leader = coordinator is None or layer_id is None or coordinator.is_leader(layer_id)

        self._head_dim: int = 0
        self._states: list[ChunkKVState] = []
        self._B: int = 0
        self._H: int = 0

        self._chunkkv_kept_bytes: int = 0
        self._full_seq_bytes: int = 0
        self._tokens_seen_total: int = 0

        self._true_offset: int = 0
        self._bh_positions: list[mx.array | None] = []
        self._kept_positions: mx.array | None = None
        self._last_returned: tuple[mx.array, mx.array] | None = None

    # ------------------------------------------------------------------
    def _ensure_states(self, B: int, H: int, D: int) -> None:
        """Lazily initialise per-head ChunkKVState list on first call."""
        if not self._states:
            self._B = B
            self._H = H
            self._head_dim = D
            self._states = [
                init_chunkkv_state(
                    self._n_sink,
                    self._budget,
                    D,
                    chunk_size=self._chunk_size,
                    score_mode=self._score_mode,
                )
                for _ in range(B * H)
            ]
            self._bh_positions = [None for _ in range(B * H)]

    def _head_idx(self, b: int, h: int) -> int:
        return b * self._H + h

    # ------------------------------------------------------------------
    def update_and_fetch(self, keys: mx.array, values: mx.array):
        """Absorb new K/V tokens, apply ChunkKV eviction, return retained window."""
        B, H, S, D = keys.shape
        self._ensure_states(B, H, D)

        if keys.dtype != mx.float16:
            keys = keys.astype(mx.float16)
        if values.dtype != mx.float16:
            values = values.astype(mx.float16)

        if S == 0:
            if self._last_returned is not None:
                return self._last_returned
            return keys, values

        self._full_seq_bytes += B * H * S * D * 2 * 2  # K + V, fp16
        self._tokens_seen_total += B * H * S

        new_positions = mx.arange(self._true_offset, self._true_offset + S, dtype=mx.int32)

        previous_k = [chunkkv_get_kv(st)[0] if st.keys is not None else None for st in self._states]
        previous_v = [chunkkv_get_kv(st)[1] if st.keys is not None else None for st in self._states]

        # 1) Update every head's state — leaders evict and publish their kept
        #    positions; followers reuse their leader's positions (Algorithm 2).
        for b in range(B):
            for h in range(H):
                idx = self._head_idx(b, h)
                if self._is_leader:
                    self._states[idx], kept = chunkkv_update(
                        self._states[idx],
                        keys[b, h],
                        values[b, h],
                        record_kept_positions=True,
                    )
                    if self._coordinator is not None and self._layer_id is not None:
                        self._coordinator.publish(self._layer_id, h, kept)
                else:
                    # _is_leader is False only when coordinator/layer_id are both
                    # non-None (see the `_is_leader =` assignment in __init__).
                    assert self._coordinator is not None and self._layer_id is not None
                    fetched = self._coordinator.fetch(self._layer_id, h)
                    if fetched is None:
                        raise RuntimeError(
                            f"ChunkKVCache: follower layer {self._layer_id} fetched no "
                            f"published indices for head {h} — its leader layer must be "
                            f"updated first within the same step (see "
                            f"ChunkKVIndexReuseCoordinator.fetch's docstring)."
                        )
                    self._states[idx] = chunkkv_apply_reuse_indices(
                        self._states[idx],
                        keys[b, h],
                        values[b, h],
                        fetched,
                    )
                    kept = fetched
                self._bh_positions[idx] = _replay_positions(
                    self._bh_positions[idx], new_positions, kept
                )

        # 2) Align every head to the common minimum kept-length.
        min_kept = min(
            (chunkkv_get_kv(st)[0].shape[0] for st in self._states),
            default=0,
        )
        for idx, st in enumerate(self._states):
            n_before = 0 if st.keys is None else st.keys.shape[0]
            self._states[idx] = chunkkv_trim_to(st, min_kept)
            n_after = min(n_before, min_kept)
            if self._bh_positions[idx] is not None and n_after < n_before:
                n_sink_eff = min(st.n_sink, n_before, n_after)
                n_recent = n_after - n_sink_eff
                tail_start = n_before - n_recent if n_recent > 0 else n_before
                keep_idx = list(range(n_sink_eff)) + list(range(tail_start, n_before))
                self._bh_positions[idx] = self._bh_positions[idx][keep_idx]

        k_out_b, v_out_b = [], []
        k_full_b, v_full_b = [], []
        for b in range(B):
            k_out_h, v_out_h = [], []
            k_full_h, v_full_h = [], []
            for h in range(H):
                idx = self._head_idx(b, h)
                k_h, v_h = chunkkv_get_kv(self._states[idx])
                k_out_h.append(k_h)  # [min_kept, D]
                v_out_h.append(v_h)
                new_k_bh = keys[b, h]
                new_v_bh = values[b, h]
                if previous_k[idx] is None:
                    k_full_h.append(new_k_bh)
                    v_full_h.append(new_v_bh)
                else:
                    k_full_h.append(mx.concatenate([previous_k[idx], new_k_bh], axis=0))
                    v_full_h.append(mx.concatenate([previous_v[idx], new_v_bh], axis=0))
            k_out_b.append(mx.stack(k_out_h, axis=0))  # [H, min_kept, D]
            v_out_b.append(mx.stack(v_out_h, axis=0))
            k_full_b.append(mx.stack(k_full_h, axis=0))  # [H, n_full, D]
            v_full_b.append(mx.stack(v_full_h, axis=0))

        K_out = mx.stack(k_out_b, axis=0)  # [B, H, min_kept, D] — for STORAGE
        V_out = mx.stack(v_out_b, axis=0)
        K_full = mx.stack(k_full_b, axis=0)  # [B, H, n_full, D] — this call's RETURN
        V_full = mx.stack(v_full_b, axis=0)

        self._chunkkv_kept_bytes = sum(chunkkv_fp16_bytes(st) for st in self._states)

        head0_positions = [self._bh_positions[self._head_idx(b, 0)] for b in range(B)]
        self._kept_positions = mx.stack(head0_positions, axis=0)

        self.keys = None
        self.values = None
        self.offset = 0
        super().update_and_fetch(K_out, V_out)
        self._true_offset += S
        self.offset = self._true_offset
        out = (K_full, V_full)
        self._last_returned = out
        return out


__all__ = ["ChunkKVCache"]
