"""Mechanism ``layer-similarity``: adjacent layers keep more similar indices under chunk than under token selection."""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import TYPE_CHECKING

from ..mechanism import (
    SIMILAR,
    SIMILAR_TOKEN,
    CheckContext,
    Claimant,
    Mechanism,
    RunResult,
    holds,
    not_applicable,
    set_jaccard,
    violated,
)
from ..model import NOT_APPLICABLE, NOT_RUN, ClaimCheck

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation

RANDOM_WEIGHTS = "random weights: no learned attention (trace with --model trained)"


class LayerSimilarity(Mechanism):
    """
    ChunkKV's argument for layer-wise index reuse is empirical (Table 2): keeping whole chunks makes
    the indices adjacent layers keep more alike than token-level selection with the same scorer
    (Jaccard 57.74% against SnapKV's 27.95% on LLaMA-3-8B). On random weights attention is nearly
    uniform and every method sits at chance, so the claim is only judged on a model whose attention
    was learned (``--model trained``); elsewhere it is not applicable, never a verdict from noise.

    Invariant, per compression ratio, on ``n`` held-out prompts (4) each run by the press and by the
    token-level scorer it wraps at the same ratio: the mean over prompts of the press's mean
    adjacent-layer Jaccard of kept indices exceeds the scorer's by more than the run-to-run spread
    (the standard deviation over prompts of the difference). It is violated when the press's falls below
    the scorer's by more than the spread; a difference inside the spread is inconclusive (not
    applicable, with the numbers), never a verdict. Chance, ``k / (2L − k)`` for two random sets of the
    ``k`` kept of ``L``, is reported beside them.
    """

    id = "layer-similarity"
    name = "similar indices across adjacent layers"
    title = "chunk selection keeps more similar indices in adjacent layers than token selection"
    order = 15
    papers = {
        "chunkkv": Claimant("Table 2 and Section 3.3: the layer-wise index similarity of ChunkKV against SnapKV and "
                            "H2O (Jaccard 57.74% vs 27.95% on LLaMA-3-8B)"),
    }
    needs_similarity = True

    VALID = [
        '''
"""ChunkKV (arXiv 2502.00299) style, the chunks chosen from the layer-0 window scores."""
from kvpress import ChunkKVPress


class LayerSteadyChunkPress(ChunkKVPress):
    """kvpress's ChunkKV (chunks of 10): whole chunks, chosen by the summed scores of every head."""

    def __init__(self):
        from kvpress import SnapKVPress

        super().__init__(press=SnapKVPress(compression_ratio=0.5, window_size=16), chunk_length=10)
''',
    ]
    INVALID = [
        '''
"""ChunkKV (arXiv 2502.00299) in name only: the chunks are drawn at random on every layer."""
from dataclasses import dataclass
import torch
from kvpress import ScorerPress, SnapKVPress


@dataclass
class ScatteredChunkPress(ScorerPress):
    """Scores every chunk of 10 at random, afresh on each layer: adjacent layers share little."""

    press: ScorerPress = None

    def __post_init__(self):
        self.press = self.press or SnapKVPress(compression_ratio=self.compression_ratio, window_size=16)

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        generator = torch.Generator().manual_seed(1234 + module.layer_idx)
        chunks = torch.rand(keys.shape[0], 1, (keys.shape[2] + 9) // 10, generator=generator)
        return chunks.repeat_interleave(10, dim=-1)[..., : keys.shape[2]].expand(-1, keys.shape[1], -1).contiguous()
''',
    ]

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        if not ctx.runs:
            reason = ctx.failures[0] if ctx.failures else "no run completed"
            return ClaimCheck(self.id, paper, NOT_RUN, f"not run: {reason}")
        if not any(run.facts.get("trained_weights") for run in ctx.runs):
            return ClaimCheck(self.id, paper, NOT_APPLICABLE, f"not applicable: {RANDOM_WEIGHTS}")
        firsts = {}  # measured once per ratio: beside the first prompt of each
        for run in ctx.runs:
            firsts.setdefault(run.ratio, run)
        return super().check(replace(ctx, runs=list(firsts.values())), paper)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        press = [p for p in ctx.probes if p.probe == SIMILAR and p.ratio == run.ratio and p.ok]
        token = [p for p in ctx.probes if p.probe == SIMILAR_TOKEN and p.ratio == run.ratio and p.ok]
        pairs = [(a, b) for a in press for b in token if a.seed == b.seed]
        if len(pairs) < 2:
            return not_applicable("no token-level scorer inside the press to compare with, or too few prompts")
        ours = [_adjacent(a) for a, _ in pairs]
        theirs = [_adjacent(b) for _, b in pairs]
        gaps = [x - y for x, y in zip(ours, theirs)]
        gap, spread = statistics.mean(gaps), statistics.stdev(gaps)
        chance = _chance(pairs[0][0])
        numbers = (f"adjacent-layer Jaccard {statistics.mean(ours):.3f} under the press against "
                   f"{statistics.mean(theirs):.3f} under its token-level scorer (chance {chance:.3f}; {len(pairs)} "
                   f"held-out prompts, spread {spread:.3f})")
        if gap > spread:
            return holds(f"chunks keep adjacent layers more alike than tokens: {numbers}",
                         round(statistics.mean(theirs), 4), round(statistics.mean(ours), 4))
        if gap < -spread:
            return violated(f"chunks keep adjacent layers less alike than tokens: {numbers}",
                            round(statistics.mean(theirs), 4), round(statistics.mean(ours), 4), gap=-gap - spread)
        # A difference inside the spread shows neither the paper's effect nor its opposite: more prompts could
        # tip it either way, so it is no verdict.
        return not_applicable(f"inconclusive: the press and its token-level scorer differ by {gap:+.3f}, within the "
                              f"run-to-run spread: {numbers}")


def _adjacent(run: RunObservation) -> float:
    """Mean Jaccard of the kept indices of each layer and the one before (compressed, exactly known layers)."""
    values = []
    for before, after in zip(run.layers, run.layers[1:]):
        if not (before.exact and after.exact and before.compressed and after.compressed):
            continue
        pairs = [(a, b) for row_a, row_b in zip(before.kept, after.kept) for a, b in zip(row_a, row_b)]
        values += [set_jaccard(a, b) for a, b in pairs]
    return statistics.mean(values) if values else 0.0


def _chance(run: RunObservation) -> float:
    """The Jaccard of two random sets of the ``k`` kept positions of ``L``: ``k / (2L − k)``."""
    sizes = [len(head) for layer in run.layers if layer.compressed for row in layer.kept for head in row]
    if not sizes:
        return 0.0
    k = statistics.mean(sizes)
    length = run.layers[0].original_length
    return k / (2 * length - k)
