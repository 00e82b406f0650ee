"""ChunkKV with layer-wise index reuse: the reference press of kvaudit.

ChunkKV (Liu et al., "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context
LLM Inference", arXiv 2502.00299, NeurIPS 2025) has two mechanisms:

- Algorithm 1, chunk-wise selection: score tokens, split the sequence into chunks of ``c`` tokens, keep
  the top chunks in their original order, and always keep the observe window.
- Algorithm 2, layer-wise index reuse: layers form groups of ``N_reuse`` consecutive layers; only the
  first layer of a group scores and selects, the others gather with its indices.

kvpress 0.5.5's ``ChunkKVPress`` implements only a variant of Algorithm 1. This press implements both,
with whole-tensor index building (no Python loop over chunks, no host-device sync per chunk).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import torch
from torch import nn
from transformers import PreTrainedModel

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


def _n_kept(kv_len: int, ratio: float) -> int:
    """Positions kept at ``ratio``: none at 1.0, else at least one (kvpress 0.5.5's rule, ``compute_n_kept``).

    Written here rather than imported: kvpress 0.5.4 has no ``compute_n_kept``, and the reference press must
    run beside every kvpress version that ``kvaudit diff`` compares.
    """
    return 0 if ratio >= 1.0 else max(1, int(kv_len * (1 - ratio)))


@dataclass
class _LeaderState:
    """Indices chosen by a group leader during one prefill, and what identifies that prefill."""

    indices: torch.Tensor  # (batch, 1 or kv_heads, n_kept), int64, on the keys' device
    rows: torch.Tensor  # the same indices as row numbers of the (batch * kv_heads * kv_len, head_dim) view
    batch: int
    kv_heads: int
    kv_len: int
    device: torch.device
    source_layer: int


@dataclass
class ChunkKVReusePress(BasePress):
    """
    ChunkKV with chunk-wise selection (Algorithm 1) and layer-wise index reuse (Algorithm 2).

    Based on ChunkKV (Liu et al., arXiv 2502.00299, https://arxiv.org/abs/2502.00299).

    The wrapped scorer gives token scores of shape (batch, kv_heads, kv_len). They are summed over
    heads, the sequence is split into chunks of ``chunk_length`` tokens, and each chunk is ranked by
    the **mean** of its head-summed scores (a partial tail chunk is therefore not penalised for being
    short). The top chunks are kept in their original order (paper, Algorithm 1). Each batch row
    chooses its own chunks. Layers are grouped as ``layer_idx // n_reuse``: the first layer of a group
    scores and selects, the others gather with the same indices and never call ``score()``
    (paper, Algorithm 2, ``I_l = I[floor(l / N_reuse) * N_reuse]``).

    Kept-count and tail rule (pinned by ``tests/test_reference_rules.py``). Let ``L`` be the key
    length, ``c = chunk_length``, ``r = L % c``, ``n_chunks = ceil(L / c)`` and ``ratio`` the
    compression ratio:

    - ``ratio == 0``: the cache is returned unchanged and nothing is scored.
    - ``L < c`` (no complete chunk): token-wise selection exactly as the scorer's own ``compress``
      (kvpress does the same): per row and per head, the ``max(1, int(L * (1 - ratio)))`` best
      tokens, in score order. A forced window raises that count to ``min(w, L)`` if needed.
    - otherwise ``K = max(1, int(n_chunks * (1 - ratio)))`` chunks are kept per row (kvpress's
      count). The tail chunk holds ``r`` tokens when ``r > 0``: a row that keeps it keeps
      ``K * c - (c - r)`` tokens, a row that does not keeps ``K * c``.
    - Rows keep equal counts because the cache is one tensor: when some rows keep the tail and others
      do not (only possible with ``batch > 1``, ``r > 0`` and no forced window), every row keeps
      ``K * c`` tokens, and a row that kept the partial tail fills its ``c - r`` missing slots with
      its best-scored (head-summed) tokens outside its chunks. With ``batch == 1`` this never happens.
    - Forced window ``w > 0``: every chunk that overlaps the last ``w`` tokens is kept, and counts in
      the budget: ``K`` becomes ``max(K, n_window_chunks)``. The tail chunk always overlaps the
      window, so every row keeps ``K * c - (c - r) % c`` tokens and no fill is ever needed.

    Reuse state. The indices of a group leader live in the press for one prefill only. They are
    dropped when layer 0 runs, when the press is entered with ``with press(model)``, and when the
    ``past_key_values`` object differs from the one the state was built on. A follower also checks
    that the leader's state matches its own (batch, kv_heads, kv_len, device); if it does not (for
    instance the leader was skipped, or ``compress`` is called by hand out of order), the follower
    scores and selects itself and its indices become the group's state. A stale index is never reused.

    Deliberate differences from kvpress's ``ChunkKVPress`` (each tested): ``chunk_length`` defaults
    to the paper's 10, not 20; each batch row chooses its own chunks (kvpress applies row 0's
    choice to every row); the observe window is forced into the kept set by default; the index
    building is vectorised; eager attention is accepted (kvpress asserts). With ``n_reuse=1``,
    batch 1 and ``window_size=0`` the kept indices equal kvpress's exactly.

    Parameters
    ----------
    press : ScorerPress
        The scorer giving token importance, as in kvpress's ``ChunkKVPress`` (the paper scores with
        the attention of the observe window, i.e. ``SnapKVPress``).
    chunk_length : int, default=10
        Tokens per chunk, ``c`` in the paper; 10 is the paper's default (kvpress defaults to 20).
    n_reuse : int, default=2
        Consecutive layers per reuse group, ``N_reuse`` in the paper's Algorithm 2; the paper's
        experiments use 2. ``n_reuse=1`` means no reuse: every layer scores and selects.
    window_size : int or None, default=None
        The observe window ``w`` of Algorithm 1: the last ``w`` tokens are always kept. ``None``
        takes the scorer's ``window_size`` when it has one (e.g. ``SnapKVPress.window_size``, 64)
        and 0 otherwise. ``0`` turns the forced window off (kvpress's behaviour).
    """

    press: ScorerPress
    chunk_length: int = 10
    n_reuse: int = 2
    window_size: int | None = None

    # Per-prefill reuse state: group id -> leader's indices. Not a parameter.
    _states: dict[int, _LeaderState] = field(default_factory=dict, init=False, repr=False, compare=False)
    _cache_ref: Callable[[], Any] | None = field(default=None, init=False, repr=False, compare=False)
    _cache_id: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Clear errors at construction rather than an assertion deep inside a forward hook.
        if not isinstance(self.press, ScorerPress):
            raise ValueError(f"press must be a kvpress ScorerPress, got {type(self.press).__name__}")
        for name in ("chunk_length", "n_reuse"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.window_size is not None and (
            isinstance(self.window_size, bool) or not isinstance(self.window_size, int) or self.window_size < 0
        ):
            raise ValueError(f"window_size must be None or an integer >= 0, got {self.window_size!r}")
        self._check_ratio(self.press.compression_ratio)

    @staticmethod
    def _check_ratio(value: float) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(f"compression_ratio must be in [0, 1), got {value!r}")

    @property
    def compression_ratio(self) -> float:
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value: float) -> None:
        self._check_ratio(value)
        self.press.compression_ratio = value

    @property
    def effective_window_size(self) -> int:
        """The forced window ``w`` actually used: ``window_size``, else the scorer's, else 0."""
        if self.window_size is not None:
            return self.window_size
        return int(getattr(self.press, "window_size", 0) or 0)

    def post_init_from_model(self, model: nn.Module) -> None:
        self.press.post_init_from_model(model)

    def reset(self) -> None:
        """Forget every leader's indices (done automatically at each new prefill)."""
        self._states.clear()
        self._cache_ref, self._cache_id = None, None

    @contextmanager
    def __call__(self, model: PreTrainedModel) -> Generator:
        # A `with press(model)` block never inherits indices, nor keeps them alive after it.
        self.reset()
        try:
            with super().__call__(model):
                yield
        finally:
            self.reset()

    # ------------------------------------------------------------------ compression

    def compress(
        self,
        module: nn.Module,
        hidden_states: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attentions: torch.Tensor,
        kwargs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.press.compression_ratio == 0:
            return keys, values

        layer_idx = int(getattr(module, "layer_idx", 0))
        self._start_prefill_if_new(layer_idx, kwargs)
        group = layer_idx // self.n_reuse
        batch, kv_heads, kv_len, head_dim = keys.shape

        state = self._states.get(group)
        is_leader = layer_idx % self.n_reuse == 0
        if is_leader or not self._matches(state, keys):
            # The leader (or a follower without a usable leader state) scores and selects.
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            indices = self.select(scores)
            # Flat row numbers: gathering whole head_dim rows with index_select is several times
            # faster than torch.gather with an index expanded over head_dim (which reads one int64
            # per element), and followers reuse the rows as they are.
            heads = torch.arange(batch * kv_heads, device=keys.device).view(batch, kv_heads, 1)
            rows = (heads * kv_len + indices).reshape(-1)
            state = _LeaderState(indices, rows, batch, kv_heads, kv_len, keys.device, layer_idx)
            self._states[group] = state

        n_kept = state.indices.shape[-1]
        keys = keys.reshape(-1, head_dim).index_select(0, state.rows).view(batch, kv_heads, n_kept, head_dim)
        values = values.reshape(-1, head_dim).index_select(0, state.rows).view(batch, kv_heads, n_kept, -1)
        return keys, values

    def _start_prefill_if_new(self, layer_idx: int, kwargs: dict) -> None:
        """Drop all reuse state when a new prefill starts (layer 0, or another cache object)."""
        cache = kwargs.get("past_key_values") if isinstance(kwargs, dict) else None
        if layer_idx == 0 or (cache is not None and not self._is_current_cache(cache)):
            self._states.clear()
            self._cache_ref, self._cache_id = None, None
            if cache is not None:
                self._cache_id = id(cache)
                try:  # a weak reference: the cache must not outlive its prefill because of us
                    self._cache_ref = weakref.ref(cache)
                except TypeError:
                    pass  # no weakref support: compare ids (layer 0 and the shape check still guard)

    def _is_current_cache(self, cache: Any) -> bool:
        if self._cache_ref is not None:
            return self._cache_ref() is cache
        return self._cache_id is not None and self._cache_id == id(cache)

    @staticmethod
    def _matches(state: _LeaderState | None, keys: torch.Tensor) -> bool:
        if state is None:
            return False
        batch, kv_heads, kv_len, _ = keys.shape
        return (
            state.batch == batch
            and state.kv_heads == kv_heads
            and state.kv_len == kv_len
            and state.device == keys.device
        )

    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """Kept token indices for ``scores`` of shape (batch, kv_heads, kv_len).

        Returns an int64 tensor of shape (batch, 1, n_kept) (chunk path, shared by all heads) or
        (batch, kv_heads, n_kept) (token path, ``kv_len < chunk_length``), on the scores' device.
        Follows the kept-count and tail rule of the class docstring.
        """
        batch, _, kv_len = scores.shape
        c = self.chunk_length
        ratio = self.press.compression_ratio
        window = min(self.effective_window_size, kv_len)
        device = scores.device

        n_complete, r = divmod(kv_len, c)
        if n_complete == 0:
            # No complete chunk: token-wise, per head, exactly as ScorerPress.compress (kvpress delegates).
            n_kept = _n_kept(kv_len, ratio)
            if window > 0:
                n_kept = max(n_kept, window)
                scores = scores.clone()
                scores[..., kv_len - window :] = torch.finfo(scores.dtype).max
            return scores.topk(n_kept, dim=-1).indices

        # Chunk scores: the mean of head-summed scores. Same operations as kvpress's ChunkKVPress so
        # that the ranking, ties included, is bit-identical to it.
        chunk_scores = scores[..., : n_complete * c].sum(dim=1).view(batch, n_complete, c).mean(dim=-1)
        if r > 0:
            tail_score = scores[..., -r:].sum(dim=1).mean(dim=-1, keepdim=True)
            chunk_scores = torch.cat([chunk_scores, tail_score], dim=-1)
        n_chunks = chunk_scores.shape[-1]

        n_chunks_kept = max(1, int(n_chunks * (1 - ratio)))
        if window > 0:
            # Every chunk overlapping the window ranks first and counts in the budget.
            first_window_chunk = (kv_len - window) // c
            n_chunks_kept = max(n_chunks_kept, n_chunks - first_window_chunk)
            chunk_scores[:, first_window_chunk:] = float("inf")

        top = chunk_scores.topk(n_chunks_kept, dim=-1).indices.sort(dim=-1).values  # (batch, K)
        # Expand chunks to tokens: ascending within and across chunks, so rows stay sorted.
        offsets = torch.arange(c, device=device)
        tokens = (top.unsqueeze(-1) * c + offsets).reshape(batch, n_chunks_kept * c)
        if r == 0:
            return tokens.unsqueeze(1)

        # A partial tail chunk (index n_chunks - 1) sorts last, so its c - r missing tokens
        # (positions >= kv_len) are the last c - r entries of the rows that kept it.
        missing = c - r
        kept_tail = top[:, -1] == n_chunks - 1  # (batch,)
        if window > 0 or batch == 1:
            # Every row agrees (the window always keeps the tail; one row agrees with itself).
            # One host sync per selecting layer at most, never per chunk.
            if window > 0 or bool(kept_tail[0]):
                return tokens[:, : n_chunks_kept * c - missing].unsqueeze(1)
            return tokens.unsqueeze(1)
        return self._fill_rows(scores, tokens, kept_tail, missing, kv_len).unsqueeze(1)

    @staticmethod
    def _fill_rows(
        scores: torch.Tensor, tokens: torch.Tensor, kept_tail: torch.Tensor, missing: int, kv_len: int
    ) -> torch.Tensor:
        """Equal counts across rows: rows that kept the partial tail get their best other tokens."""
        # If every row kept the partial tail, trim them all alike (one host sync per selecting layer).
        if bool(kept_tail.all()):
            return tokens[:, : tokens.shape[1] - missing]
        batch = tokens.shape[0]
        valid = tokens < kv_len
        mask = torch.zeros(batch, kv_len + 1, dtype=torch.bool, device=tokens.device)
        mask.scatter_(1, tokens.clamp(max=kv_len), True)
        token_scores = scores.sum(dim=1).masked_fill(mask[:, :kv_len], float("-inf"))
        extra = token_scores.topk(missing, dim=-1).indices  # best tokens outside the row's chunks
        tail = tokens[:, -missing:]
        tokens = torch.cat([tokens[:, :-missing], torch.where(valid[:, -missing:], tail, extra)], dim=-1)
        return tokens.sort(dim=-1).values
