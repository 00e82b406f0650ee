"""Mechanism ``score-formula``: a press's ``score()`` ranks positions as its paper's formula does.

Each paper's formula is recomputed here, in float64, from the inputs of the very ``score()`` call it
is compared with (:class:`kvaudit.tracer.child.inputs.ScoreInputs`: the keys and values the press was
given, queries projected and rotated by kvaudit's own code, softmax attention with the causal mask).
Nothing of the press or of kvpress is called. The formulas run in the tracer's worker child; this
module imports torch only inside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..mechanism import CheckContext, Claimant, Mechanism, ReproRule, RunResult, head_where, holds, not_applicable, violated

if TYPE_CHECKING:
    from ..tracer.child.inputs import ScoreInputs
    from ..tracer.observations import RunObservation

# A head agrees when this share of the positions the press ranks in its top-n are in the formula's top-n
# (or tied with its n-th), and the other way round. Float32 arithmetic in the press against float64 here
# moves near-tied positions across the edge of the budget; a different formula moves far more.
AGREEMENT = 0.95
# Scores closer than this share of the formula's finite range to its n-th score count as tied with it.
TIE_SHARE = 1e-4

Formula = Callable[["ScoreInputs", dict[str, Any]], Any]


# -- the formulas ---------------------------------------------------------------------------------


def window_attention(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """SnapKV (Algorithm 1): the attention the last ``window_size`` queries give each position, summed over
    the window, smoothed by 1-D average pooling of ``kernel_size`` (stride 1, zero padding); the window itself
    is always kept. Per query head, then averaged over the query heads of each KV head (grouped attention)."""
    import torch

    window = min(int(params.get("window_size", 64)), inputs.length)
    kernel = int(params.get("kernel_size", 5))
    attention = inputs.attention(last=window)  # (batch, heads, window, length)
    votes = attention[..., : inputs.length - window].sum(dim=2)
    pooled = torch.nn.functional.avg_pool1d(votes.flatten(0, 1).unsqueeze(1), kernel_size=kernel, stride=1,
                                            padding=kernel // 2, count_include_pad=True).view(*votes.shape[:2], -1)
    scores = inputs.per_kv_head(pooled[..., : votes.shape[-1]])
    return torch.cat([scores, torch.full((*scores.shape[:2], window), math.inf, dtype=scores.dtype)], dim=-1)


def last_query_attention(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """TOVA (Section 3): each position's attention from the last query, averaged over every head of the layer
    (one decision for the layer); the last position is the query itself and is kept."""
    import torch

    attention = inputs.attention(last=1)[:, :, 0]  # (batch, heads, length)
    scores = attention.mean(dim=1, keepdim=True).expand(-1, inputs.kv_heads, -1).clone()
    scores[..., -1] = math.inf
    return scores.to(torch.float64)


def key_norm(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """Knorm: keys with a low L2 norm draw attention, so the positions with the lowest key norms are kept."""
    return -inputs.k.norm(dim=-1)


def key_diversity(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """KeyDiff: the anchor is the mean of the normalised keys; a key's score is minus its cosine similarity to
    the anchor, so the most distinctive keys are kept."""
    import torch

    unit = inputs.k / inputs.k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    anchor = unit.mean(dim=2, keepdim=True)
    return -torch.nn.functional.cosine_similarity(inputs.k, anchor, dim=-1)


def leverage(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """Compactor: the ridge leverage score of each pre-rotary key, ``[X (XᵀX + λI)⁻¹ Xᵀ]_ii`` with ``X`` the keys
    centred over the sequence. The paper sketches ``X`` with a Gaussian matrix first; a sketch of at least the
    head dimension spans the same space, so the exact scores are its target."""
    import torch

    keys = inputs.keys_pre_rope
    centred = keys - keys.mean(dim=2, keepdim=True)
    gram = centred.transpose(-1, -2) @ centred
    ridge = float(params.get("regularizer", 5e-3)) * torch.eye(gram.shape[-1], dtype=gram.dtype)
    solved = torch.linalg.solve(gram + ridge, centred.transpose(-1, -2))  # (XᵀX + λI)⁻¹ Xᵀ
    return (centred * solved.transpose(-1, -2)).sum(dim=-1)


def lag_relative(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """LagKV: after ``n_sink`` sink tokens the prompt is cut into partitions of ``lag_size``; each partition's keys
    and values are min-max scaled per channel by the *next* partition (the lag reference), a token's score is the
    standard deviation of its scaled channels, softmax-normalised within the partition, keys plus values; each
    partition keeps its best tokens (the rank within the partition), the sinks and the last partitions stay."""
    import torch

    sink = int(params.get("n_sink", 4))
    lag = int(params.get("lag_size", 128))
    length = inputs.length
    scores = torch.full((inputs.batch, inputs.kv_heads, length), math.inf, dtype=torch.float64)
    if length < sink + 2 * lag:
        return scores
    end = sink + (length - sink) // lag * lag

    def spread(states: Any) -> Any:
        parts = states[:, :, sink:end].reshape(inputs.batch, inputs.kv_heads, -1, lag, states.shape[-1])
        reference = parts[:, :, 1:]
        low, high = reference.amin(dim=3, keepdim=True), reference.amax(dim=3, keepdim=True)
        scaled = (parts[:, :, :-1] - low) / (high - low)
        return scaled.std(dim=-1).softmax(dim=-1)  # (batch, kv_heads, partitions - 1, lag)

    combined = spread(inputs.k) + spread(inputs.v)
    ranks = combined.argsort(dim=-1).argsort(dim=-1).to(torch.float64) / lag
    scores[:, :, sink:end - lag] = ranks.flatten(2)
    return scores


def non_causal_attention(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """Compactor's attention half (the authors' code, ``non_causal_attn_scores`` as ``post_rope_scoring`` calls it):
    within each chunk of ``chunk_size`` tokens, every query attends to every key of its chunk (no causal mask,
    unscaled logits, ``sm_scale=1``); a key's score is the probability it receives, summed over the chunk's
    queries and the query heads of its KV head."""
    import torch

    chunk = int(params.get("chunk_size", 128))
    groups = inputs.heads // inputs.kv_heads
    keys = inputs.k.repeat_interleave(groups, dim=1)
    total = torch.zeros(inputs.batch, inputs.heads, inputs.length, dtype=torch.float64)
    for start in range(0, inputs.length, chunk):
        stop = min(start + chunk, inputs.length)
        logits = inputs.queries[:, :, start:stop] @ keys[:, :, start:stop].transpose(-1, -2)
        total[:, :, start:stop] = logits.softmax(dim=-1).sum(dim=2)
    return inputs.per_kv_head(total) * groups  # summed over the group, as the authors' kernel does


def _z_scores(scores: Any) -> Any:
    """Per batch row, over every head and token together (the authors' ``_zscore_per_batch_epilogue``)."""
    flat = scores.flatten(1)
    mean, std = flat.mean(dim=1), flat.std(dim=1, unbiased=False).clamp_min(1e-12)
    return (scores - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


def compactor_blend(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """Compactor (the authors' ``CompactorCompression``): z-scored non-causal attention plus ``blending`` times
    z-scored leverage scores; the first ``sink_size_start`` and last ``sink_size_end`` tokens are always kept."""
    blending = params.get("blending")
    blending = float(blending if isinstance(blending, (int, float)) else params.get("paper_blending", 0.5))
    scores = _z_scores(non_causal_attention(inputs, params)) + blending * _z_scores(leverage(inputs, params))
    first, last = int(params.get("sink_size_start", 16)), int(params.get("sink_size_end", 64))
    scores[..., :first] = math.inf
    if last:
        scores[..., max(first, inputs.length - last):] = math.inf
    return scores


def filter_projection(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """Q-Filters: each layer and KV head has a filter ``f`` (the principal direction of its queries, learned
    offline); a key's score is minus its projection on it, ``−⟨k_i, f⟩``. The filter is read from the press
    (the released one, or kvaudit's seeded stand-in), like the model's weights."""
    filters = params.get("q_filters")
    if filters is None:
        return None
    layer = filters[inputs.module.layer_idx]  # (kv_heads, head_dim)
    return -(inputs.k * layer.view(1, inputs.kv_heads, 1, inputs.head_dim)).sum(dim=-1)


def surrogate(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """KVzap: a small model per layer (linear or a two-layer MLP, trained offline to predict KVzip+ scores) maps the
    layer's input hidden states to one score per KV head and position. The model is read from the press (the
    released one, or kvaudit's seeded stand-in) as a float64 copy."""
    model = params.get("kvzap_model")
    if model is None:
        return None
    hidden = inputs.hidden_states.detach().to(inputs.k.dtype)
    return model.layers[inputs.module.layer_idx](hidden).transpose(1, 2)  # (batch, kv_heads, length)


def _future_rotation(inputs: ScoreInputs, start: int, count: int) -> Any:
    """The rotary embedding's rotation averaged over positions ``start … start + count − 1``, (head_dim, head_dim)."""
    import torch

    config = inputs.module.config
    rope = getattr(config, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    dim = inputs.head_dim
    inverse = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(start, start + count, dtype=torch.float64).unsqueeze(1) * inverse
    cos, sin = torch.cat([angles.cos(), angles.cos()], dim=1), torch.cat([angles.sin(), angles.sin()], dim=1)
    half = dim // 2
    turn = torch.zeros(dim, dim, dtype=torch.float64)  # rotate_half as a matrix: (x1, x2) -> (-x2, x1)
    turn[half:, :half] = torch.eye(half, dtype=torch.float64)
    turn[:half, half:] = -torch.eye(half, dtype=torch.float64)
    return (cos.unsqueeze(2) * torch.eye(dim, dtype=torch.float64) + sin.unsqueeze(2) * turn).mean(dim=0)


def capacity(inputs: ScoreInputs, params: dict[str, Any]) -> Any:
    """CapKV, as the paper's formula with the variants CapPress states (its docstring): ``s_i = w_i u_iᵀ A⁻¹ u_i``,
    ``A = I + Σ_j w_j u_j u_jᵀ``, ``u_i = v_i``, ``w_i = exp(τ(cos(k_i, μ_q) − max))``, ``μ_q`` the mean of the
    non-sink queries before the rotary embedding, rotated by its average over the next ``n_future_positions``
    positions; per query head, averaged over each KV head's; the first ``n_sink`` positions are kept."""
    import torch

    sink = int(params.get("n_sink", 4))
    tau = float(params.get("tau", 5.0))
    future = int(params.get("n_future_positions", 512))
    groups = inputs.heads // inputs.kv_heads
    queries = inputs.queries_pre_rope[:, :, sink:]
    anchor = queries.mean(dim=2) @ _future_rotation(inputs, inputs.length, future).T  # (batch, heads, dim)
    keys = inputs.k[:, :, sink:].repeat_interleave(groups, dim=1)
    values = inputs.v[:, :, sink:].repeat_interleave(groups, dim=1)
    alignment = torch.nn.functional.cosine_similarity(keys, anchor.unsqueeze(2), dim=-1)
    logits = tau * alignment
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    matrix = torch.eye(inputs.head_dim, dtype=torch.float64) + torch.einsum("bht,bhtd,bhte->bhde", weights, values,
                                                                           values)
    leverage = (values * torch.linalg.solve(matrix, values.transpose(-1, -2)).transpose(-1, -2)).sum(dim=-1)
    scores = inputs.per_kv_head(weights * leverage)
    return torch.cat([torch.full((*scores.shape[:2], sink), math.inf, dtype=scores.dtype), scores], dim=-1)


FORMULAS: dict[str, Formula] = {
    "window-attention": window_attention,
    "last-query-attention": last_query_attention,
    "key-norm": key_norm,
    "key-diversity": key_diversity,
    "leverage": leverage,
    "lag-relative": lag_relative,
    "non-causal-attention": non_causal_attention,
    "compactor-blend": compactor_blend,
    "capacity": capacity,
    "filter-projection": filter_projection,
    "surrogate": surrogate,
}


# -- the mechanism ----------------------------------------------------------------------------------


class ScoreFormula(Mechanism):
    """
    A ``ScorerPress`` states its method as a score; the paper it cites gives that score as a formula.
    The check recomputes the paper's formula (float64, kvaudit's own code, the press's own window and
    kernel where it has them) from the inputs of each layer's ``score()`` call on the grid's short
    prefills, and compares the two rankings where it matters: the positions each would keep.

    Invariant, on every compressed layer, batch row and KV head that keeps ``n`` positions: at least
    95% of the ``n`` positions ranked highest by the press's ``score()`` are among the formula's ``n``
    highest (or tied with its ``n``-th), and the other way round.

    Tolerance: 5% of ``n`` per head; scores within ``1e-4 ×`` the formula's range of its ``n``-th
    score count as tied (the press computes in float32). Grouped-query attention: a formula written
    per head (SnapKV) averages the query heads of each KV head, as the paper's formula would on a
    model with fewer KV heads; TOVA decides per layer, averaging every head.
    """

    id = "score-formula"
    name = "the paper's score formula"
    title = "score() ranks positions as the paper's formula does"
    order = 75
    papers = {
        "snapkv": Claimant("Algorithm 1: window attention summed over the observation window, pooled (kernel), "
                           "window kept", {"formula": "window-attention", "window_size": 32, "kernel_size": 5}),
        "tova": Claimant("Section 3: keep the tokens with the highest attention from the last query, averaged "
                         "over heads", {"formula": "last-query-attention"}),
        "knorm": Claimant("abstract and the authors' code (alessiodevoto/l2compress cache.py): keep the keys "
                          "with the lowest L2 norm", {"formula": "key-norm"}),
        "keydiff": Claimant("Section 3: evict the keys most similar (cosine) to the anchor, the mean of the "
                            "normalised keys", {"formula": "key-diversity"}),
        # kvpress implements each half of Compactor as a press of its own, and the blend as CompactorPress.
        "compactor": Claimant("the authors' code (vnchari/compactor-vllm compression/compactor.py): "
                              "CompactorCompression blends z-scored non-causal chunked attention with 0.5 x z-scored "
                              "ridge leverage scores of the centred pre-RoPE keys (regularizer 5e-3), first and last "
                              "tokens protected (compression_config.py: 16, 64)",
                              {"formula": "compactor-blend", "regularizer": 5e-3, "chunk_size": 128,
                               "paper_blending": 0.5, "sink_size_start": 16, "sink_size_end": 64,
                               "formula_of_press": {"LeverageScorePress": "leverage",
                                                    "NonCausalAttnPress": "non-causal-attention"}}),
        "capkv": Claimant("abstract (a log-determinant objective approximated with statistical leverage scores) and "
                          "the formula with its variants as kvpress's CapPress states them (cap_press.py docstring); "
                          "the paper's equation itself was not read",
                          {"formula": "capacity", "tau": 5.0, "n_future_positions": 512, "n_sink": 4}),
        "qfilters": Claimant("Section 3 and the authors' code (NathanGodey/qfilters src/hf_cache.py): a key's score is "
                             "minus its projection on the layer and head's Q-filter", {"formula": "filter-projection"}),
        "kvzap": Claimant("abstract and Section 3: a lightweight surrogate model applied to the hidden states "
                          "predicts each KV pair's score", {"formula": "surrogate"}),
        "curdkv": Claimant("abstract: leverage scores from an approximate CUR decomposition of keys and values",
                           not_checkable="the paper's algorithm (which leverage scores, of which matrices) was not "
                                         "read: kvpress's CURPress ranks by squared key and value norms, and kvaudit "
                                         "cannot say whether the paper does"),
        "restorekv": Claimant("kvpress's RestoreKVPress docstring (restore tokens appended before KVzip's eviction)",
                              not_checkable="the paper could not be found: its rule cannot be taken from it"),
        "kvgrad": Claimant("kvpress's KVgradPress docstring (attention times value-output norm times the gradient of "
                           "the output norm)", not_checkable="the paper could not be found: its rule cannot be taken "
                                                             "from it"),
        "lagkv": Claimant("the authors' code (AI-Lab-China-Merchants-Bank/LagKV lag_kv.py): lag-relative min-max "
                          "scaling by the next partition, channel standard deviation, softmax per partition, keys "
                          "plus values; sinks and the tail kept", {"formula": "lag-relative", "n_sink": 16,
                                                                   "lag_size": 1024}),
    }
    facts = ("window_size", "kernel_size", "n_sink", "lag_size", "chunk_size", "blending", "sink_size_start",
             "sink_size_end", "tau", "n_future_positions", "press_class")
    needs_scores = True
    needs_reference = True
    learned_facts = ("q_filters", "kvzap_model")

    VALID = [
        '''
"""SnapKV (arXiv 2404.14469): window attention, pooled."""
from dataclasses import dataclass
import math
import torch
from kvpress import ScorerPress


@dataclass
class WindowVotePress(ScorerPress):
    """Window attention of the last 16 queries, average-pooled over 5 positions; the window is kept."""

    window_size: int = 16
    kernel_size: int = 5

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        b, length, _ = hidden_states.shape
        heads, dim = module.config.num_attention_heads, module.head_dim
        q = module.q_proj(hidden_states[:, -self.window_size:]).view(b, -1, heads, dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q, _ = apply_rotary_pos_emb(q, q, cos[:, -self.window_size:], sin[:, -self.window_size:])
        k = repeat_kv(keys, heads // keys.shape[1])
        logits = q @ k.transpose(-1, -2) / math.sqrt(dim)
        mask = torch.ones(self.window_size, length, dtype=torch.bool).triu(length - self.window_size + 1)
        attention = logits.masked_fill(mask, float("-inf")).softmax(dim=-1)
        votes = attention[..., : length - self.window_size].sum(dim=2)
        pooled = torch.nn.functional.avg_pool1d(votes, self.kernel_size, 1, self.kernel_size // 2)
        pooled = pooled.view(b, keys.shape[1], -1, pooled.shape[-1]).mean(dim=2)
        window = torch.full((b, keys.shape[1], self.window_size), pooled.max().item() + 1.0)
        return torch.cat([pooled, window], dim=-1)
''',
    ]
    INVALID = [
        '''
"""SnapKV (arXiv 2404.14469), but scored by key norm."""
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class NormInsteadPress(ScorerPress):
    """Claims SnapKV's window vote, scores by the keys' norm; keeps the window."""

    window_size: int = 16
    kernel_size: int = 5

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = keys.norm(dim=-1)
        scores[..., -self.window_size:] = scores.max() + 1.0
        return scores
''',
    ]

    def reference_scores(self, inputs: ScoreInputs, params: dict[str, Any]) -> Any | None:
        formula = FORMULAS.get(formula_name(params, params.get("press_class")))
        return formula(inputs, params) if formula is not None else None

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        formula = formula_name(ctx.params, run.facts.get("press_class"))
        if formula not in FORMULAS:
            return not_applicable(f"the paper gives no formula kvaudit recomputes ({formula or 'none'})")
        judged = 0
        worst: tuple[float, dict[str, int], int] | None = None
        for index, layer in enumerate(run.layers):
            reference = layer.references.get(self.id)
            if not layer.compressed or not layer.exact or layer.scores is None or reference is None:
                continue
            for row, heads in enumerate(layer.kept):
                for head, kept in enumerate(heads):
                    n = len(kept)
                    if not 0 < n < layer.original_length:
                        continue
                    judged += 1
                    agreement = top_agreement(layer.scores[row][head], reference[row][head], n)
                    if worst is None or agreement < worst[0]:
                        worst = (agreement, head_where(index, row, head, run.batch), n)
        if worst is None:
            return not_applicable("no compressed layer with the formula recomputed (the short prefills only)")
        agreement, where, n = worst
        place = f"layer {where['layer']}" + (f" row {where['row']}" if "row" in where else "") + f" head {where['head']}"
        if agreement < AGREEMENT:
            return violated(f"{place}: only {agreement:.0%} of the {n} positions score() ranks highest are among the "
                            f"{n} the paper's {formula} formula ranks highest ({judged} heads checked)",
                            1.0, round(agreement, 4), gap=1.0 - agreement, **where)
        return holds(f"score() ranks the kept positions as the paper's {formula} formula does: at least "
                     f"{agreement:.0%} agreement on each of {judged} heads", 1.0, round(agreement, 4))

    def repro_rule(self, params: dict[str, Any]) -> ReproRule | None:
        """The check, with the claimant's formulas in plain torch (only those written below: None otherwise)."""
        names = {str(params.get("formula") or ""), *(params.get("formula_of_press") or {}).values()}
        needed = {name for formula in names for name in REPRO_NEEDS.get(formula, (formula,))}
        if not names or not needed <= set(REPRO_FORMULAS):
            return None
        formulas = "\n\n".join(REPRO_FORMULAS[name].strip("\n") for name in sorted(needed, key=list(REPRO_FORMULAS).index))
        table = ", ".join(f'"{name}": {name.replace("-", "_")}' for name in sorted(names))
        return ReproRule(formulas + f"\n\n\nFORMULAS = {{{table}}}\n" + REPRO_CHECK)


# -- the same formulas as plain code, for the standalone reproductions (kvaudit.repro) -------------

REPRO_FORMULAS = {
    "causal-attention": '''
def causal_attention(model, run, layer, last):
    """Softmax attention of the last `last` queries over every key, with the causal mask (per query head)."""
    q, k = queries(model, run, layer)[:, :, -last:], run.keys[layer].double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    length = k.shape[2]
    future = torch.arange(length).view(1, -1) > torch.arange(length - last, length).view(-1, 1)
    return logits.masked_fill(future, -math.inf).softmax(dim=-1)
''',
    "window-attention": '''
def window_attention(model, run, layer, p):
    """SnapKV: the attention of the last window_size queries, summed over the window, average-pooled over
    kernel_size positions, then averaged over the query heads of each KV head; the window itself is kept."""
    kv_heads, length = run.keys[layer].shape[1], run.keys[layer].shape[2]
    window, kernel = min(p["window_size"], length), p["kernel_size"]
    votes = causal_attention(model, run, layer, window)[..., :length - window].sum(dim=2)
    pooled = torch.nn.functional.avg_pool1d(votes.flatten(0, 1).unsqueeze(1), kernel, 1, kernel // 2,
                                            count_include_pad=True).view(*votes.shape[:2], -1)[..., :length - window]
    scores = pooled.view(pooled.shape[0], kv_heads, -1, pooled.shape[-1]).mean(dim=2)
    return torch.cat([scores, torch.full((*scores.shape[:2], window), math.inf, dtype=scores.dtype)], dim=-1)
''',
    "last-query-attention": '''
def last_query_attention(model, run, layer, p):
    """TOVA: each position's attention from the last query, averaged over every head of the layer (one
    decision for the layer); the last position is the query itself, and kept."""
    attention = causal_attention(model, run, layer, 1)[:, :, 0]
    scores = attention.mean(dim=1, keepdim=True).expand(-1, run.keys[layer].shape[1], -1).clone()
    scores[..., -1] = math.inf
    return scores
''',
    "key-norm": '''
def key_norm(model, run, layer, p):
    """Knorm: keys with a low L2 norm draw attention, so the lowest norms are kept."""
    return -run.keys[layer].double().norm(dim=-1)
''',
    "key-diversity": '''
def key_diversity(model, run, layer, p):
    """KeyDiff: minus each key's cosine similarity to the anchor, the mean of the normalised keys."""
    k = run.keys[layer].double()
    anchor = (k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)).mean(dim=2, keepdim=True)
    return -torch.nn.functional.cosine_similarity(k, anchor, dim=-1)
''',
    "non-causal-attention": '''
def non_causal_attention(model, run, layer, p):
    """Compactor's attention half: within each chunk of chunk_size tokens, every query attends to every key of
    its chunk (no causal mask, unscaled logits); a key scores the probability it receives, summed over the
    chunk's queries and over the query heads of its KV head."""
    q, k = queries(model, run, layer), run.keys[layer].double()
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    total = torch.zeros(q.shape[:3], dtype=torch.float64)
    for start in range(0, q.shape[2], p["chunk_size"]):
        stop = start + p["chunk_size"]
        total[:, :, start:stop] = (q[:, :, start:stop] @ k[:, :, start:stop].transpose(-1, -2)).softmax(-1).sum(2)
    return total.view(k.shape[0], -1, groups, q.shape[2]).sum(dim=2)
''',
    "leverage": '''
def keys_before_rope(model, run, layer):
    """The layer's keys before the rotary embedding (float64), as its attention computed them."""
    module = model.model.layers[layer].self_attn
    hidden = run.inputs[layer][0]
    k = module.k_proj(hidden).view(*hidden.shape[:2], -1, module.head_dim)
    if hasattr(module, "k_norm"):  # Qwen3 normalises keys per head first
        k = module.k_norm(k)
    return k.transpose(1, 2).double()


def leverage(model, run, layer, p):
    """Compactor's leverage half: the ridge leverage of each pre-rotary key, centred over the sequence,
    [X (X^T X + regularizer I)^-1 X^T]_ii."""
    x = keys_before_rope(model, run, layer)
    x = x - x.mean(dim=2, keepdim=True)
    gram = x.transpose(-1, -2) @ x + p["regularizer"] * torch.eye(x.shape[-1], dtype=x.dtype)
    return (x * torch.linalg.solve(gram, x.transpose(-1, -2)).transpose(-1, -2)).sum(dim=-1)
''',
    "compactor-blend": '''
def z_scores(scores):
    """Per batch row, over every head and position together."""
    flat = scores.flatten(1)
    return (scores - flat.mean(1).view(-1, 1, 1)) / flat.std(1, unbiased=False).clamp_min(1e-12).view(-1, 1, 1)


def compactor_blend(model, run, layer, p):
    """Compactor: z-scored non-causal attention plus `blending` times z-scored leverage; the first
    sink_size_start and the last sink_size_end positions are always kept."""
    blending = p.get("blending", p["paper_blending"])
    scores = z_scores(non_causal_attention(model, run, layer, p)) + blending * z_scores(leverage(model, run, layer, p))
    scores[..., :p["sink_size_start"]] = math.inf
    if p["sink_size_end"]:
        scores[..., max(p["sink_size_start"], scores.shape[-1] - p["sink_size_end"]):] = math.inf
    return scores
''',
}
# The formulas a formula calls.
REPRO_NEEDS = {"compactor-blend": ("non-causal-attention", "leverage", "compactor-blend"),
               "window-attention": ("causal-attention", "window-attention"),
               "last-query-attention": ("causal-attention", "last-query-attention")}

REPRO_CHECK = '''

def agreement(scores, reference, n):
    """The smaller share of each ranking's top n that the other ranks in its top n (ties with its n-th count)."""
    def covered(ranked, other):
        top = ranked.sort(descending=True, stable=True).indices[:n]
        finite = other[other.isfinite()]
        tie = 1e-4 * (finite.max() - finite.min()).item() if len(finite) else 0.0
        return (other[top] >= other.sort(descending=True).values[n - 1] - tie).double().mean().item()
    return min(covered(scores, reference), covered(reference, scores))


def check(model, new_press):
    """The paper's score, recomputed here in float64 from what each layer's score() was given, ranks the
    positions as score() does: on every compressed layer, batch row and KV head keeping n positions, at least
    95% of score()'s top n are in the formula's top n (ties with its n-th count), and the other way round.
    The press's own settings (window, chunk size, sinks, blending) replace the paper's values."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    p = {**PARAMS, **{name: setting(press, name) for name in PARAMS if setting(press, name) is not None}}
    if setting(press, "blending") is not None:
        p["blending"] = setting(press, "blending")
    name = p.get("formula_of_press", {}).get(type(press).__name__, p["formula"])
    worst = None
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        if run.scores[layer] is None or run.scores[layer].shape != run.keys[layer].shape[:3]:
            continue
        reference = FORMULAS[name](model, run, layer, p)
        for row, heads in enumerate(kept_positions(run, layer)):
            for head, kept in enumerate(heads):
                if 0 < len(kept) < length:
                    share = agreement(run.scores[layer][row, head], reference[row, head], len(kept))
                    if worst is None or share < worst[0]:
                        worst = (share, f"layer {layer} row {row} head {head}", len(kept))
    if worst is None:
        return None, f"score() ranks as the {name} formula", "no compressed layer: the rule does not apply"
    share, where, n = worst
    return (share >= 0.95, f"at least 95% of the {n} positions score() ranks highest are the {name} formula's top {n}",
            f"{where}: {share:.0%} are")
'''


def formula_name(params: dict[str, Any], press_class: object) -> str:
    """The paper's formula, or the part of it a press implements on its own (``formula_of_press``)."""
    parts = params.get("formula_of_press") or {}
    return str(parts.get(press_class) or params.get("formula") or "")


def top_agreement(scores: Sequence[float], reference: Sequence[float], n: int) -> float:
    """The smaller share of each ranking's top ``n`` that the other ranks in its top ``n`` (ties with the ``n``-th count)."""
    return min(_covered(scores, reference, n), _covered(reference, scores, n))


def _covered(ranked: Sequence[float], other: Sequence[float], n: int) -> float:
    top = sorted(range(len(ranked)), key=lambda p: -ranked[p])[:n]
    threshold = sorted(other, reverse=True)[n - 1]
    finite = [value for value in other if math.isfinite(value)]
    tolerance = TIE_SHARE * (max(finite) - min(finite)) if finite else 0.0
    return sum(1 for p in top if other[p] >= threshold - tolerance) / n
