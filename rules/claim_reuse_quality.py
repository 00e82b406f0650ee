"""Mechanism ``reuse-quality``: sharing indices across layers costs little quality."""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import TYPE_CHECKING

from ..mechanism import (
    QUALITY_FULL,
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
    with the prefix kept whole and compressed without reuse are reported beside it. A press with no
    reuse parameter has no reuse to price: not applicable, its loss against the whole prefix said.
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
        return super().check(replace(ctx, runs=list(firsts.values())), paper)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        losses = {kind: {p.seed: p.facts["loss"] for p in ctx.probes
                         if p.probe == kind and p.ratio == run.ratio and p.ok and "loss" in p.facts}
                  for kind in (QUALITY_FULL, QUALITY_PRESS, QUALITY_NO_REUSE)}
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
        allowed = spread + RELATIVE_COST * base
        if gap > allowed:
            return violated(f"reuse costs more than the paper's small change: {numbers}", round(base + allowed, 4),
                            round(base + gap, 4), gap=gap - allowed)
        return holds(f"reuse costs little: {numbers}", round(base + allowed, 4), round(base + gap, 4))
