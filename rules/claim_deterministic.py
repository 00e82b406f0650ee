"""Mechanism ``deterministic``: the same prompt twice gives the same selection."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..mechanism import (
    REPEAT,
    CheckContext,
    Claimant,
    Mechanism,
    ReproRule,
    RunResult,
    holds,
    not_applicable,
    set_jaccard,
    violated,
)
from ..model import NOT_APPLICABLE, ClaimCheck

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class Deterministic(Mechanism):
    """
    kvpress's ``BasePress`` contract, as every paper states its method: the cache a press leaves is
    a function of the prompt (and the press's settings). A press that draws fresh randomness on
    every call keeps another selection for the same prompt; it must say so and take a seed.

    Invariant, per compression ratio: the grid's first prompt, run again on a freshly built press
    with torch's global random generator seeded differently, keeps the same positions on every
    layer, row and KV head whose kept positions are known exactly.

    Tolerance: none (the same process, the same inputs and one thread give the same arithmetic).
    """

    id = "deterministic"
    name = "determinism"
    title = "the same prompt twice keeps the same positions"
    order = 94
    contracts = {"BasePress": Claimant("BasePress: the compressed cache is a function of the prompt and the settings")}
    needs_probes = True

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class KeyNormPress(ScorerPress):
    """Scores by key norm: the same keys give the same selection."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class CoinFlipPress(ScorerPress):
    """Scores with fresh random numbers on every call, from torch's global generator, unseeded."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return torch.rand(keys.shape[:3], device=keys.device)
''',
    ]

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        """Judged on the runs a repeat probe ran again (the first prompt of each ratio)."""
        repeated = [run for run in ctx.runs if self._repeat_of(run, ctx) is not None]
        if ctx.runs and not repeated:
            return ClaimCheck(self.id, paper, NOT_APPLICABLE, "no prompt was run twice")
        return super().check(replace(ctx, runs=repeated), paper)

    @staticmethod
    def _repeat_of(run: RunObservation, ctx: CheckContext) -> RunObservation | None:
        if run.batch != 1 or run.probe:
            return None
        return next((probe for probe in ctx.probes if probe.probe == REPEAT and probe.ok and probe.ratio == run.ratio
                     and probe.tokens == run.tokens and probe.seed == run.seed), None)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        again = self._repeat_of(run, ctx)
        assert again is not None
        compared = 0
        for index, (first, second) in enumerate(zip(run.layers, again.layers)):
            if not (first.exact and second.exact):
                continue
            compared += 1
            for row, (heads, other) in enumerate(zip(first.kept, second.kept)):
                for head, (kept, kept_again) in enumerate(zip(heads, other)):
                    if kept != kept_again:
                        score = set_jaccard(kept, kept_again)
                        return violated(
                            f"the same prompt, run again on a fresh press, keeps other positions: layer {index} "
                            f"head {head} keeps {len(kept)} then {len(kept_again)} positions (Jaccard {score:.3f}); "
                            "a press that draws fresh randomness must say so and take a seed",
                            1.0, round(score, 4), gap=1.0 - score, layer=index, head=head)
        if not compared:
            return not_applicable("no layer whose kept positions are known exactly")
        return holds(f"the same prompt, run again on a fresh press, keeps the same positions on all {compared} layers",
                     1.0, 1.0)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """kvpress's BasePress contract: the compressed cache is a function of the prompt and the press's settings.
    The same prompt, run again on a fresh press with torch's global random generator seeded otherwise, keeps
    the same positions on every layer, row and KV head."""
    ids = make_prompt(TOKENS, BATCH, PROMPT_SEED)
    first = prefill(model, new_press(), ids)
    again = prefill(model, new_press(), ids, seed=PROMPT_SEED + 7919)  # another global seed
    for layer in range(len(first.keys)):
        for row, (heads, heads_again) in enumerate(zip(kept_positions(first, layer), kept_positions(again, layer))):
            for head, (kept, kept_again) in enumerate(zip(heads, heads_again)):
                if kept != kept_again:
                    jaccard = len(set(kept) & set(kept_again)) / max(1, len(set(kept) | set(kept_again)))
                    return (False, "the same positions, run after run",
                            f"layer {layer} row {row} head {head} keeps {len(kept)} then {len(kept_again)} positions "
                            f"(Jaccard {jaccard:.3f})")
    return True, "the same positions, run after run", "the same positions on every layer, row and head"
''')
