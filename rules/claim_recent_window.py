"""Mechanism ``recent-window``: the most recent part of the budget is always kept (H2O)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..mechanism import (
    CheckContext,
    Claimant,
    Mechanism,
    ReproRule,
    RunResult,
    head_where,
    holds,
    not_applicable,
    row_name,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class RecentWindow(Mechanism):
    """
    H2O splits the cache budget between heavy hitters (tokens with the largest accumulated
    attention) and the most recent tokens; the paper's experiments give each half.

    Invariant, on every compressed layer, batch row and KV head that keeps ``n`` positions: the
    last ``floor(share · n)`` positions of the prompt are kept (``share`` = 0.5, the paper's split).
    Measured: the length of the kept run that ends at the last position. Tolerance: one position
    (the split's rounding).
    """

    id = "recent-window"
    name = "the recent window"
    title = "the most recent share of the budget (half, in the paper) is kept in every head"
    order = 50
    papers = {"h2o": Claimant("Section 3 (H2O eviction: heavy hitters plus recent tokens, half each)", {"share": 0.5})}
    diff_tolerance = 1  # one position, the split's rounding

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class HeavyHitterRecentPress(ScorerPress):
    """H2O (arXiv 2306.14048): half the budget for heavy hitters, half for the most recent tokens."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        length = keys.shape[2]
        n_kept = max(1, int(length * (1 - self.compression_ratio)))
        scores = keys.norm(dim=-1)
        scores[..., length - n_kept // 2:] = scores.max() + 1
        return scores
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress



@dataclass
class HeavyHittersOnlyPress(ScorerPress):
    """H2O (arXiv 2306.14048) without the recent half: the first tokens win, the recent ones go."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        import torch

        return -torch.arange(keys.shape[2], dtype=keys.dtype).expand(keys.shape[0], keys.shape[1], -1).clone()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        share = float(ctx.params.get("share", 0.5))
        judged = 0
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact:
                continue
            length = layer.original_length
            for row, heads in enumerate(layer.kept):
                for head, kept in enumerate(heads):
                    judged += 1
                    expected = math.floor(share * len(kept))
                    kept_set = set(kept)
                    recent = 0
                    while length - 1 - recent in kept_set:
                        recent += 1
                    if recent < expected - 1:
                        return violated(
                            f"layer {index}{row_name(row, run.batch)} head {head} keeps the last {recent} positions "
                            f"in a row; the paper's rule keeps the last {expected} ({share:g} of the {len(kept)} kept)",
                            expected, recent, gap=(expected - recent) / max(1, expected),
                            **head_where(index, row, head, run.batch))
        if not judged:
            return not_applicable("no layer was compressed")
        return holds(f"every compressed head keeps at least the most recent {share:g} of its budget", share, share)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """H2O: the budget is split between heavy hitters and the most recent tokens (half each in the paper). Every
    compressed layer, batch row and KV head that keeps n positions keeps the last floor(share * n) of the prompt
    (one position of tolerance)."""
    run = prefill(model, new_press(), make_prompt(TOKENS, BATCH, PROMPT_SEED))
    share = PARAMS["share"]
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        for row, heads in enumerate(kept_positions(run, layer)):
            for head, kept in enumerate(heads):
                if len(kept) == length:
                    continue  # not compressed
                recent = 0  # how many positions, counting back from the last, are kept without a gap
                while length - 1 - recent in kept:
                    recent += 1
                if recent < math.floor(share * len(kept)) - 1:
                    return (False, f"the last {math.floor(share * len(kept))} positions ({share:g} of {len(kept)} kept)",
                            f"layer {layer} row {row} head {head} keeps the last {recent} positions in a row")
    return True, f"the last {share:g} of each head's budget kept", "kept on every compressed head"
''')
