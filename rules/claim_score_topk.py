"""Mechanism ``score-topk``: a ScorerPress keeps the top-k of its own ``score()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import (
    CheckContext,
    Claimant,
    Mechanism,
    RunResult,
    head_where,
    holds,
    not_applicable,
    row_name,
    tie_tolerance,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class ScoreTopK(Mechanism):
    """
    kvpress's ``ScorerPress`` contract: ``score()`` gives every position an importance, and the
    press keeps the ``n`` best (``compress`` prunes "those with the lowest scores"). Every paper
    a ScorerPress implements states its method as a score, so the kept set must follow it.

    Invariant, on every compressed layer, batch row and KV head that keeps ``n`` positions: no
    kept position scores below the ``n``-th best score of the layer's ``score()`` output, and no
    dropped position above it. The output checked is the layer's last outermost ``score()`` call
    of the prefill; positions a paper protects are already protected by their score (SnapKV's
    window, TOVA's last token). Tolerance: scores within ``1e-6 ×`` the largest count as tied.
    """

    id = "score-topk"
    name = "top-k selection by score"
    title = "kept positions are the top-k of the press's own score()"
    order = 80
    contracts = {"ScorerPress": Claimant("ScorerPress.compress keeps the positions with the highest score()")}
    needs_scores = True

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class NormScorerPress(ScorerPress):
    """Scores each position by the norm of its key; kvpress keeps the top-k."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress



@dataclass
class KeepsTheWorstPress(ScorerPress):
    """Scores by key norm but keeps the lowest-scored positions."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.score(module, hidden_states, keys, values, attentions, kwargs)
        n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
        index = (-scores).topk(n_kept, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        judged = 0
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact or layer.scores is None:
                continue
            length = layer.original_length
            for row, heads in enumerate(layer.kept):
                if row >= len(layer.scores):
                    continue
                for head, kept in enumerate(heads):
                    scores = layer.scores[row][head] if head < len(layer.scores[row]) else ()
                    if len(scores) != length or not kept:
                        continue
                    judged += 1
                    n = len(kept)
                    threshold = sorted(scores, reverse=True)[n - 1]
                    tolerance = tie_tolerance(scores)
                    kept_set = set(kept)
                    below = [p for p in kept if scores[p] < threshold - tolerance]
                    above = [p for p in range(length) if p not in kept_set and scores[p] > threshold + tolerance]
                    if below or above:
                        worst = min(below, key=lambda p: scores[p]) if below else None
                        best = max(above, key=lambda p: scores[p]) if above else None
                        detail = []
                        if worst is not None:
                            detail.append(f"kept position {worst} scores {scores[worst]:.4g}")
                        if best is not None:
                            detail.append(f"dropped position {best} scores {scores[best]:.4g}")
                        return violated(
                            f"layer {index}{row_name(row, run.batch)} head {head} kept {len(below)} positions below "
                            f"its {n}-th best score ({threshold:.4g}) and dropped {len(above)} above it "
                            f"({'; '.join(detail)}); the rule keeps the top {n}", n, n - len(below),
                            gap=len(below) / n, **head_where(index, row, head, run.batch))
        if not judged:
            return not_applicable("no compressed layer with a score() output of the cache's shape")
        return holds(f"every compressed head keeps the top-k of its score() ({judged} heads checked)", 0, 0)
