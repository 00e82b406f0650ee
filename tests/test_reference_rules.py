"""Unit tests of ChunkKVReusePress's selection rules on synthetic scores (no model).

The kept-count and tail rule of the class docstring is re-derived here independently, so a change
to the press's rule makes these tests fail.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kvpress")

from kvpress import ChunkKVPress, KnormPress, ScorerPress, SnapKVPress  # noqa: E402

from kvaudit.reference import ChunkKVReusePress  # noqa: E402


class FixedScorer(ScorerPress):
    """A scorer returning preset scores of shape (batch, heads, kv_len); counts its calls."""

    def __init__(self, scores: torch.Tensor | None = None, compression_ratio: float = 0.5):
        super().__init__(compression_ratio=compression_ratio)
        self.scores = scores
        self.calls: list[int] = []

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        self.calls.append(module.layer_idx)
        return self.scores if self.scores is not None else -keys.norm(dim=-1)


class FakeCache:
    """Stands for a transformers Cache: a plain object that supports weak references."""


def expected_count(kv_len: int, c: int, ratio: float, window: int, kept_tail: bool) -> int:
    """The docstring's rule, written out independently of the implementation."""
    if kv_len < c:
        return max(max(1, int(kv_len * (1 - ratio))), min(window, kv_len))
    n_chunks = math.ceil(kv_len / c)
    k = max(1, int(n_chunks * (1 - ratio)))
    if window > 0:
        window = min(window, kv_len)
        k = max(k, n_chunks - (kv_len - window) // c)
        kept_tail = True
    short = (c - kv_len % c) % c
    return k * c - (short if kept_tail else 0)


def module(layer_idx: int = 0) -> SimpleNamespace:
    return SimpleNamespace(layer_idx=layer_idx, head_dim=4)


def kv(batch: int, kv_len: int, heads: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch, heads, kv_len, 4, generator=g)
    return keys, torch.randn(batch, heads, kv_len, 4, generator=g)


def compress(press, keys, values, layer_idx=0, cache=None):
    kwargs = {"past_key_values": cache} if cache is not None else {}
    return press.compress(module(layer_idx), torch.zeros(keys.shape[0], keys.shape[2], 8), keys, values, None, kwargs)


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunk_length": 0},
        {"chunk_length": -3},
        {"chunk_length": 2.5},
        {"n_reuse": 0},
        {"n_reuse": -1},
        {"window_size": -1},
    ],
)
def test_bad_integer_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ChunkKVReusePress(SnapKVPress(0.5), **kwargs)


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_ratio_outside_unit_interval_raises_value_error(ratio):
    scorer = SnapKVPress(0.5)
    scorer.compression_ratio = ratio  # ScorerPress only asserts in its own __post_init__
    with pytest.raises(ValueError, match="compression_ratio"):
        ChunkKVReusePress(scorer)
    press = ChunkKVReusePress(SnapKVPress(0.5))
    with pytest.raises(ValueError, match="compression_ratio"):
        press.compression_ratio = ratio
    assert press.compression_ratio == 0.5


@pytest.mark.parametrize("scorer", [ChunkKVPress(SnapKVPress(0.5)), "snapkv", None])
def test_scorer_must_be_a_scorer_press(scorer):
    with pytest.raises(ValueError, match="ScorerPress"):
        ChunkKVReusePress(scorer)


def test_defaults_follow_the_paper_and_ratio_passes_through():
    scorer = SnapKVPress(0.3, window_size=32)
    press = ChunkKVReusePress(scorer)
    assert (press.chunk_length, press.n_reuse) == (10, 2)
    assert press.effective_window_size == 32  # the scorer's observe window
    assert ChunkKVReusePress(KnormPress(0.3)).effective_window_size == 0  # no window to take
    assert ChunkKVReusePress(scorer, window_size=0).effective_window_size == 0
    press.compression_ratio = 0.7
    assert scorer.compression_ratio == 0.7 and press.compression_ratio == 0.7


# ---------------------------------------------------------------- Algorithm 1 rules


def test_chunks_rank_by_mean_so_a_short_tail_is_not_penalised():
    # L=25, c=10: chunks [0,10) [10,20) and a 5-token tail. ratio 0.5 keeps 1 chunk.
    scores = torch.cat([torch.full((10,), 0.9), torch.full((10,), 0.1), torch.full((5,), 1.0)]).view(1, 1, 25)
    press = ChunkKVReusePress(FixedScorer(scores.expand(1, 2, 25)), n_reuse=1, window_size=0)
    # By sum chunk 0 wins (9 > 5); by mean the tail wins (1.0 > 0.9).
    assert press.select(scores.expand(1, 2, 25)).flatten().tolist() == list(range(20, 25))


def test_scores_are_summed_over_heads():
    # Head 0 prefers chunk 0 a little, head 1 prefers chunk 1 a lot: the sum picks chunk 1.
    scores = torch.zeros(1, 2, 20)
    scores[0, 0, :10], scores[0, 1, 10:] = 1.0, 3.0
    press = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0)
    assert press.select(scores).flatten().tolist() == list(range(10, 20))


@pytest.mark.parametrize("c", [1, 3, 7, 10])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("window", [0, 5])
def test_kept_count_and_shape_follow_the_documented_rule(c, ratio, window):
    press = ChunkKVReusePress(FixedScorer(compression_ratio=ratio), chunk_length=c, n_reuse=1, window_size=window)
    for kv_len in range(1, 48):
        scores = torch.rand(1, 2, kv_len, generator=torch.Generator().manual_seed(kv_len))
        idx = press.select(scores)
        if kv_len < c:  # token-wise per head, as the scorer's compress
            assert idx.shape[1] == 2
            for h in range(2):
                want = scores[0, h].topk(expected_count(kv_len, c, ratio, window, False)).indices
                if window:
                    assert set(range(max(0, kv_len - window), kv_len)) <= set(idx[0, h].tolist())
                else:
                    assert idx[0, h].tolist() == want.tolist()
            continue
        flat = idx[0, 0].tolist()
        kept_tail = kv_len % c != 0 and (kv_len - 1) in flat
        assert len(flat) == expected_count(kv_len, c, ratio, window, kept_tail), (kv_len, flat)
        assert flat == sorted(set(flat)) and 0 <= flat[0] and flat[-1] < kv_len
        chunks = {i // c for i in flat}  # whole chunks only (the tail chunk whole up to kv_len)
        assert sorted(flat) == [i for ch in sorted(chunks) for i in range(ch * c, min(ch * c + c, kv_len))]
        if window:
            assert set(range(max(0, kv_len - window), kv_len)) <= set(flat)


def test_forced_window_overrides_low_scores():
    scores = torch.ones(1, 2, 40)
    scores[..., 30:] = -5.0  # the window scores worst of all
    on = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=8).select(scores).flatten().tolist()
    off = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0).select(scores).flatten().tolist()
    assert set(range(32, 40)) <= set(on) and len(on) == 20  # window chunks count in the budget of 2 chunks
    assert not set(range(30, 40)) & set(off)


def test_chunk_length_one_is_token_wise_selection_of_head_summed_scores():
    scores = torch.rand(2, 2, 30, generator=torch.Generator().manual_seed(1))
    idx = ChunkKVReusePress(FixedScorer(), chunk_length=1, n_reuse=1, window_size=0).select(scores)
    want = scores.sum(1).topk(15, dim=-1).indices.sort(-1).values
    assert torch.equal(idx[:, 0], want)


# ---------------------------------------------------------------- batches


def test_each_row_chooses_its_own_chunks():
    scores = torch.rand(3, 2, 60, generator=torch.Generator().manual_seed(2))
    press = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0)
    idx = press.select(scores)
    for row in range(3):
        assert torch.equal(idx[row], press.select(scores[row : row + 1])[0])
    assert len({tuple(idx[row, 0].tolist()) for row in range(3)}) == 3


def test_rows_that_disagree_on_the_partial_tail_keep_equal_counts():
    # L=25, c=10, ratio 0.5 -> K=1 chunk. Row 0 prefers the 5-token tail, row 1 prefers chunk 0.
    scores = torch.zeros(2, 1, 25)
    scores[0, 0, 20:] = 1.0
    scores[0, 0, 10:15] = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3])  # row 0's best tokens outside the tail
    scores[1, 0, :10] = 1.0
    idx = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0).select(scores)
    assert idx.shape == (2, 1, 10)  # K * c for every row
    assert idx[0, 0].tolist() == [10, 11, 12, 13, 14, 20, 21, 22, 23, 24]  # tail + its 5 best other tokens
    assert idx[1, 0].tolist() == list(range(10))
    # When every row keeps the tail, every row keeps K * c - (c - r).
    both = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0).select(scores[[0, 0]])
    assert both.shape == (2, 1, 5)


# ---------------------------------------------------------------- Algorithm 2 state


def test_follower_reuses_only_a_matching_leader_state():
    scorer = FixedScorer()
    press = ChunkKVReusePress(scorer, n_reuse=2, window_size=0)
    cache = SimpleNamespace()  # stands for past_key_values: one object per prefill
    keys, values = kv(1, 50)
    k0, _ = compress(press, keys, values, layer_idx=0, cache=cache)
    k1, _ = compress(press, *kv(1, 50, seed=1), layer_idx=1, cache=cache)
    assert scorer.calls == [0]  # the follower did not score
    # A follower whose leader state has another length, batch or cache scores itself.
    for other_keys, other_cache in [(kv(1, 60), cache), (kv(2, 50), cache), (kv(1, 50, seed=2), SimpleNamespace())]:
        scorer.calls.clear()
        k, v = other_keys
        out, _ = compress(press, k, v, layer_idx=3, cache=other_cache)
        fresh = FixedScorer()
        want, _ = compress(ChunkKVReusePress(fresh, n_reuse=1, window_size=0), k, v, layer_idx=3)
        assert scorer.calls == [3] and torch.equal(out, want)
        # ...and becomes its group's state: the next follower of group 1 reuses it.
        compress(press, k, v, layer_idx=3, cache=other_cache)
        assert scorer.calls == [3]


def test_a_new_prefill_never_reuses_the_previous_one_even_with_the_same_shape():
    # A follower whose leader did not run in this prefill (e.g. a skipped layer) must not pick up
    # the previous prefill's indices. Two signals start a new prefill: layer 0, and a new cache.
    def fresh_result(keys, values, layer_idx):
        return compress(ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0), keys, values, layer_idx)[0]

    a, b = kv(1, 50, seed=0), kv(1, 50, seed=5)
    # 1. No cache object: layer 0 of the new sequence runs, the leader of group 1 (layer 2) does not.
    scorer = FixedScorer()
    press = ChunkKVReusePress(scorer, n_reuse=2, window_size=0)
    for layer in range(4):
        compress(press, *a, layer_idx=layer)
    compress(press, *b, layer_idx=0)
    out = compress(press, *b, layer_idx=3)[0]
    assert scorer.calls == [0, 2, 0, 3] and torch.equal(out, fresh_result(*b, 3))
    # 2. A new cache object and no layer 0 at all (weakref-able caches as transformers', and not).
    for cache_type in (FakeCache, SimpleNamespace):
        scorer = FixedScorer()
        press = ChunkKVReusePress(scorer, n_reuse=2, window_size=0)
        first, second = cache_type(), cache_type()  # both alive: ids cannot be recycled
        compress(press, *a, layer_idx=0, cache=first)
        out = compress(press, *b, layer_idx=1, cache=second)[0]
        assert scorer.calls == [0, 1] and torch.equal(out, fresh_result(*b, 1))


def test_ratio_zero_is_the_identity_and_scores_nothing():
    scorer = FixedScorer(compression_ratio=0.0)
    keys, values = kv(2, 33)
    k, v = compress(ChunkKVReusePress(scorer), keys, values)
    assert k is keys and v is values and scorer.calls == []


def test_index_building_has_no_loop_over_chunks():
    # The number of torch calls made by select() must not grow with the number of chunks.
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    press = ChunkKVReusePress(FixedScorer(), n_reuse=1, window_size=0)
    counts = []
    for kv_len in (105, 10_005):
        scores = torch.rand(2, 2, kv_len)
        scores[..., -5:] = 2.0  # every row keeps the tail: the same branch at both lengths
        with Count() as mode:
            press.select(scores)
        counts.append(mode.n)
    assert counts[0] == counts[1]
