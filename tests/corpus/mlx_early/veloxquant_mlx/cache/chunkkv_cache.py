# kvaudit test corpus. Provenance: https://github.com/rajveer43/VeloxQuant-MLX,
# veloxquant_mlx/cache/chunkkv_cache.py, commit c0e17f77b17138f1208fa735991e6e3363f99a37 (an earlier
# version of the file in ../../mlx, before index reuse was added).
# Licence: MIT, Copyright (c) 2026 Rajveer Rathod (the repository's LICENSE: permission to copy and
# modify with this notice kept). Trimmed: the module docstring is shortened (its citation and its
# "no layer-wise kept-index reuse" limitation kept), method docstrings are cut and the read-only
# properties are left out; the code of the methods kept is unchanged.
# Verdict reached by reading the code: one cache object per layer, and each runs `chunkkv_update`
# on every call for every head; nothing is shared with other layers. The docstring says so itself:
# no layer-wise kept-index reuse.
# expect: ChunkKVCache reuse=missing fires=KVA101
"""ChunkKV-adapted KV cache — chunk-level (semantic-block) eviction.

Inspired by "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient
Long-Context LLM Inference" (Liu et al., 2025, arXiv:2502.00299). Documented as
"ChunkKV-adapted (VeloxQuant-MLX implementation)" — not a faithful port.

Adaptation limitations (stated plainly):
  - No layer-wise kept-index reuse (a decode-speed trick in the paper); each
    layer resolves chunks independently.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache as _MLXKVCache

from veloxquant_mlx.quantizers.chunkkv import (
    ChunkKVState,
    chunkkv_fp16_bytes,
    chunkkv_get_kv,
    chunkkv_trim_to,
    chunkkv_update,
    init_chunkkv_state,
)


class ChunkKVCache(_MLXKVCache):
    """KV cache implementing ChunkKV-adapted chunk-level eviction for one layer."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self._budget = int(getattr(config, "chunkkv_budget", 512))
        self._chunk_size = int(getattr(config, "chunkkv_chunk_size", 8))
        self._n_sink = int(getattr(config, "chunkkv_n_sink", 4))
        self._score_mode = str(getattr(config, "chunkkv_score", "attn_mass"))

        self._head_dim: int = 0
        self._states: list[ChunkKVState] = []
        self._B: int = 0
        self._H: int = 0

        self._chunkkv_kept_bytes: int = 0
        self._full_seq_bytes: int = 0
        self._tokens_seen_total: int = 0

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

    def _head_idx(self, b: int, h: int) -> int:
        return b * self._H + h

    # ------------------------------------------------------------------
    def update_and_fetch(self, keys: mx.array, values: mx.array):
        """Absorb new K/V tokens, apply ChunkKV eviction, return retained window."""
        B, H, S, D = keys.shape
        self._ensure_states(B, H, D)

        self._full_seq_bytes += B * H * S * D * 2 * 2  # K + V, fp16
        self._tokens_seen_total += B * H * S

        # 1) Update every head's state independently.
        for b in range(B):
            for h in range(H):
                idx = self._head_idx(b, h)
                self._states[idx] = chunkkv_update(
                    self._states[idx],
                    keys[b, h].astype(mx.float16),
                    values[b, h].astype(mx.float16),
                )

        # 2) Align every head to the common minimum kept-length.
        min_kept = min(
            (chunkkv_get_kv(st)[0].shape[0] for st in self._states),
            default=0,
        )
        for idx, st in enumerate(self._states):
            self._states[idx] = chunkkv_trim_to(st, min_kept)

        k_out_b, v_out_b = [], []
        for b in range(B):
            k_out_h, v_out_h = [], []
            for h in range(H):
                k_h, v_h = chunkkv_get_kv(self._states[self._head_idx(b, h)])
                k_out_h.append(k_h)  # [min_kept, D]
                v_out_h.append(v_h)
            k_out_b.append(mx.stack(k_out_h, axis=0))  # [H, min_kept, D]
            v_out_b.append(mx.stack(v_out_h, axis=0))

        K_out = mx.stack(k_out_b, axis=0)  # [B, H, min_kept, D]
        V_out = mx.stack(v_out_b, axis=0)

        # Byte accounting: sum across all head states.
        self._chunkkv_kept_bytes = sum(chunkkv_fp16_bytes(st) for st in self._states)

        return K_out, V_out


__all__ = ["ChunkKVCache"]
