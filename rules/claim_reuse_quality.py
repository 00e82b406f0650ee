"""Mechanism ``reuse-quality``: sharing indices across layers costs little quality."""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import TYPE_CHECKING

from ..mechanism import (
    QUALITY_FULL,
    QUALITY_MORE_REUSE,
    QUALITY_NO_REUSE,
    QUALITY_PRESS,
    CheckContext,
    Claimant,
    Mechanism,
    RunResult,
    holds,
    not_applicable,
    violated,
)
from ..model import NOT_APPLICABLE, NOT_RUN, ClaimCheck

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation

# The paper's cost of reuse: LongBench within 0.6% (Table 9). Here, the loss may grow by this share beyond the spread.
RELATIVE_COST = 0.01


class ReuseQuality(Mechanism):
    """
    ChunkKV's reuse is worth it because it costs little: with ``N_reuse = 2`` LongBench changes by at
    most −0.6% (Table 9), while fewer layers score. Quality depends on learned attention, so the claim
    is only judged on the trained model (``--model trained``); on random weights it is not applicable.

    Invariant, per compression ratio, on 4 held-out prompts: the next-token loss of a 64-token
    continuation, after the prefix was compressed by the press, exceeds the loss after the same press
    with its reuse parameter set to 1 (no reuse) by at most the run-to-run spread plus 1%. The losses
    with the prefix kept whole, compressed without reuse and with twice the press's reuse (``n_reuse``
    4 for ChunkKV's 2) are reported beside it, and kept per ratio in the check's figure (the report's
    reuse-quality table). A press with no reuse parameter has no reuse to price: not applicable, its
    loss against the whole prefix said.
    """

    id = "reuse-quality"
    name = "the quality cost of reuse"
    title = "index reuse costs little next-token loss against the same press without reuse"
    order = 12
    papers = {"chunkkv": Claimant("Table 9 and Section 4.4: N_reuse = 2 changes LongBench by at most -0.6%")}
    facts = ("n_reuse", "N_reuse", "reuse_n", "num_reuse")
    needs_quality = True

    VALID = [
        '''
"""ChunkKV (arXiv 2502.00299) with Algorithm 2: kvaudit's reference press, reuse in groups of 2."""
from kvpress import SnapKVPress
from kvaudit.reference import ChunkKVReusePress


class PairedReusePress(ChunkKVReusePress):
    """Layers in pairs: the first scores and selects chunks of 10, the second reuses its indices."""

    def __init__(self, compression_ratio: float = 0.5):
        super().__init__(press=SnapKVPress(compression_ratio=compression_ratio), chunk_length=10, n_reuse=2)
''',
    ]
    INVALID = [
        '''
"""ChunkKV (arXiv 2502.00299) in name only: with reuse on, follower layers keep only the first token."""
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class CarelessReusePress(ScorerPress):
    """Leaders keep their top keys by norm; with n_reuse > 1 the followers keep the first position alone."""

    n_reuse: int = 2

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.n_reuse > 1 and module.layer_idx % self.n_reuse != 0:
            return keys[:, :, :1].contiguous(), values[:, :, :1].contiguous()
        return super().compress(module, hidden_states, keys, values, attentions, kwargs)
''',
    ]

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        if not ctx.runs:
            reason = ctx.failures[0] if ctx.failures else "no run completed"
            return ClaimCheck(self.id, paper, NOT_RUN, f"not run: {reason}")
        if not any(run.facts.get("trained_weights") for run in ctx.runs):
            return ClaimCheck(self.id, paper, NOT_APPLICABLE,
                              "not applicable: random weights: no learned attention (trace with --model trained)")
        firsts: dict = {}
        for run in ctx.runs:
            firsts.setdefault(run.ratio, run)
        check = super().check(replace(ctx, runs=list(firsts.values())), paper)
        figure = _loss_figure(ctx, list(firsts))
        if figure is not None:
            check.figures = [figure]
        return check

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        losses = _losses(ctx, run.ratio)
        full, press, plain = losses[QUALITY_FULL], losses[QUALITY_PRESS], losses[QUALITY_NO_REUSE]
        seeds = sorted(set(full) & set(press))
        if len(seeds) < 2:
            return not_applicable("too few held-out prompts were scored")
        cost = statistics.mean(press[s] - full[s] for s in seeds)
        told = (f"continuation loss {statistics.mean(press[s] for s in seeds):.3f} nats/token with the press against "
                f"{statistics.mean(full[s] for s in seeds):.3f} with the prefix whole ({cost:+.3f})")
        paired = [s for s in seeds if s in plain]
        if len(paired) < 2:
            return not_applicable(f"the press has no reuse parameter to switch off; {told}")
        gaps = [press[s] - plain[s] for s in paired]
        gap, spread = statistics.mean(gaps), statistics.stdev(gaps)
        base = statistics.mean(plain[s] for s in paired)
        numbers = (f"{told}; {base:.3f} without reuse: reuse adds {gap:+.3f} (spread {spread:.3f}, {len(paired)} "
                   "held-out prompts)")
        more = losses[QUALITY_MORE_REUSE]
        if len(more) >= 2:
            numbers += f"; {statistics.mean(more.values()):.3f} with twice the reuse"
        allowed = spread + RELATIVE_COST * base
        if gap > allowed:
            return violated(f"reuse costs more than the paper's small change: {numbers}", round(base + allowed, 4),
                            round(base + gap, 4), gap=gap - allowed)
        return holds(f"reuse costs little: {numbers}", round(base + allowed, 4), round(base + gap, 4))


QUALITY_KINDS = (QUALITY_FULL, QUALITY_PRESS, QUALITY_NO_REUSE, QUALITY_MORE_REUSE)


def _losses(ctx: CheckContext, ratio: float | None) -> dict[str, dict[int, float]]:
    """The continuation loss of each held-out prompt (by seed), per variant, at ``ratio``."""
    return {kind: {p.seed: p.facts["loss"] for p in ctx.probes
                   if p.probe == kind and p.ratio == ratio and p.ok and "loss" in p.facts}
            for kind in QUALITY_KINDS}


def _loss_figure(ctx: CheckContext, ratios: list[float | None]) -> dict | None:
    """Mean loss (and its spread over prompts) per reuse parameter and ratio, beside the whole prefix's.

    ``x`` holds the reuse parameters (1, the press's, twice it); ``series`` the mean loss per ratio, ``spread``
    their standard deviations, ``whole`` the loss with the prefix kept whole: the report's reuse-quality table.
    """
    reuse = {p.probe: p.facts["n_reuse"] for p in ctx.probes if p.probe in QUALITY_KINDS and "n_reuse" in p.facts}
    if QUALITY_NO_REUSE not in reuse:  # no reuse parameter: nothing to compare by it
        return None
    kinds = (QUALITY_NO_REUSE, QUALITY_PRESS, QUALITY_MORE_REUSE)  # always three columns; None where none ran
    series, spread, whole = {}, {}, {}
    for ratio in ratios:
        losses = _losses(ctx, ratio)
        label = f"ratio {ratio:g}" if ratio is not None else "as built"
        series[label] = [_mean(losses[kind]) for kind in kinds]
        spread[label] = [_sd(losses[kind]) for kind in kinds]
        whole[label] = _mean(losses[QUALITY_FULL])
    return {"title": "next-token loss of a held-out continuation by reuse parameter", "kind": "bar",
            "x_label": "reuse parameter (n_reuse)", "y_label": "loss (nats/token)", "x": [reuse.get(k) for k in kinds],
            "series": series, "spread": spread, "whole": whole}


def _mean(values: dict[int, float]) -> float | None:
    return round(statistics.mean(values.values()), 4) if values else None


def _sd(values: dict[int, float]) -> float | None:
    return round(statistics.stdev(values.values()), 4) if len(values) > 1 else None
