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

from ..mechanism import CheckContext, Claimant, Mechanism, RunResult, head_where, holds, not_applicable, violated

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


FORMULAS: dict[str, Formula] = {
    "window-attention": window_attention,
    "last-query-attention": last_query_attention,
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
    }
    facts = ("window_size", "kernel_size")
    needs_scores = True
    needs_reference = True

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
        formula = FORMULAS.get(str(params.get("formula", "")))
        return formula(inputs, params) if formula is not None else None

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        formula = ctx.params.get("formula")
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


def top_agreement(scores: Sequence[float], reference: Sequence[float], n: int) -> float:
    """The smaller share of each ranking's top ``n`` that the other ranks in its top ``n`` (ties with the ``n``-th count)."""
    return min(_covered(scores, reference, n), _covered(reference, scores, n))


def _covered(ranked: Sequence[float], other: Sequence[float], n: int) -> float:
    top = sorted(range(len(ranked)), key=lambda p: -ranked[p])[:n]
    threshold = sorted(other, reverse=True)[n - 1]
    finite = [value for value in other if math.isfinite(value)]
    tolerance = TIE_SHARE * (max(finite) - min(finite)) if finite else 0.0
    return sum(1 for p in top if other[p] >= threshold - tolerance) / n
