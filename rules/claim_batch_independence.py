"""Mechanism ``batch-independence``: each row of a batch keeps what it keeps when compressed alone."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..mechanism import (
    ALONE,
    CheckContext,
    Claimant,
    Mechanism,
    ReproRule,
    RunResult,
    holds,
    mechanism_by_id,
    not_applicable,
    set_jaccard,
    violated,
)
from ..model import NOT_APPLICABLE, VIOLATED, ClaimCheck

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation

# Batched and single forwards may round differently, which can swap near-tied positions at the edge
# of the budget: a head still matches when its kept sets overlap this much, with equal counts.
MIN_JACCARD = 0.95


class BatchIndependence(Mechanism):
    """
    kvpress's ``BasePress`` contract: a press compresses a batch of prompts, and nothing in the
    contract lets one row's prompt change another row's cache. A press that chooses from row 0 and
    applies the choice to every row (``batch-row-0``), or pools budgets or scores over the batch,
    breaks it.

    Invariant, per compression ratio, for each row ``r`` of the grid's batch-2 prefill (two
    different prompts) and the same prompt run alone on a fresh press: on every layer whose kept
    positions are known exactly, every KV head of row ``r`` keeps as many positions as alone, and
    the same ones.

    Tolerance: equal counts, and a Jaccard of at least 0.95 per head (batched and single forwards may
    round differently and swap near-tied positions at the edge of the budget). The check reports
    how many (layer, row) pairs keep exactly what the row keeps alone, and the smallest Jaccard.
    """

    id = "batch-independence"
    name = "batch independence"
    title = "each row of a batch keeps what it keeps when compressed alone"
    order = 92
    contracts = {"BasePress": Claimant("BasePress compresses every row of a batch; no row may change another's cache")}
    needs_probes = True

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class RowWiseNormPress(ScorerPress):
    """Scores each row's keys on their own; kvpress keeps each row's top-k."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class PooledBatchNormPress(ScorerPress):
    """Pools the key norms over the batch: every row keeps the positions the whole batch prefers."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        norms = keys.norm(dim=-1)
        return norms.mean(dim=0, keepdim=True).expand_as(norms).contiguous()
''',
    ]

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        """Judged on the batch prefills only (a batch of one has no other row to disturb)."""
        batches = [run for run in ctx.runs if run.batch > 1]
        if ctx.runs and not batches:
            return ClaimCheck(self.id, paper, NOT_APPLICABLE, "no batch prefill (the press accepts a batch of one)")
        # A press that keeps other positions for the very same prompt: a row that differs in the batch cannot be
        # told from the press's own randomness (the `deterministic` contract reports that, with its numbers).
        if mechanism_by_id("deterministic").check(ctx, paper).verdict == VIOLATED:
            return ClaimCheck(self.id, paper, NOT_APPLICABLE,
                              "not applicable: the same prompt run twice keeps other positions (`deterministic` is "
                              "violated), so a batch row's difference cannot be told from the press's randomness")
        return super().check(replace(ctx, runs=batches), paper)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        alone = {probe.rows[0]: probe for probe in ctx.probes
                 if probe.probe == ALONE and probe.ok and probe.ratio == run.ratio and probe.tokens == run.tokens
                 and probe.rows is not None and len(probe.rows) == 1}
        pairs, identical = 0, 0
        worst: tuple[tuple[bool, float], dict[str, int], str] | None = None  # ((counts equal, Jaccard), where, what)
        for row, probe in sorted(alone.items()):
            for index, (together, single) in enumerate(zip(run.layers, probe.layers)):
                if not (together.exact and single.exact) or row >= len(together.kept) or not single.kept:
                    continue
                pairs += 1
                identical += together.kept[row] == single.kept[0]
                for head, (kept, own) in enumerate(zip(together.kept[row], single.kept[0])):
                    key = (len(kept) == len(own), set_jaccard(kept, own))
                    if worst is None or key < worst[0]:
                        worst = (key, {"row": row, "layer": index, "head": head},
                                 f"{len(kept)} positions kept in the batch, {len(own)} alone")
        if not pairs or worst is None:
            return not_applicable("no batch row traced alone with exactly known kept positions")
        (counts_equal, score), where, what = worst
        summary = (f"{identical} of {pairs} (layer, row) pairs keep exactly what the row keeps alone; smallest "
                   f"Jaccard {score:.3f} (layer {where['layer']} row {where['row']} head {where['head']}: {what})")
        if not counts_equal or score < MIN_JACCARD:
            rows_same = _rows_identical(run)
            evidence = (f"; rows 0 and 1 keep identical positions on {len(rows_same)} layers although their prompts "
                        "differ (batch-row-0)") if rows_same else ""
            return violated(f"a row's selection changes with the other rows of the batch: {summary}{evidence}",
                            1.0, round(score, 4), gap=(1.0 - score) + (0.0 if counts_equal else 1.0), **where)
        return holds(f"each batch row keeps what it keeps alone: {summary}", 1.0, round(score, 4))

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """kvpress's BasePress contract: one row's prompt cannot change another row's cache. Each row of a batch of
    different prompts keeps, on every layer and KV head, what it keeps when compressed alone on a fresh press:
    as many positions, and the same ones (Jaccard at least 0.95: batched and single forwards may round
    differently and swap near-tied positions at the edge of the budget)."""
    ids = make_prompt(TOKENS, BATCH, PROMPT_SEED)
    first, again = (prefill(model, new_press(), ids[:1], seed=seed) for seed in (PROMPT_SEED, PROMPT_SEED + 7919))
    if any(kept_positions(first, layer) != kept_positions(again, layer) for layer in range(len(first.keys))):
        return (None, "each row keeps what it keeps alone",
                "the same prompt run twice keeps other positions: a row's difference in the batch cannot be told "
                "from the press's randomness, so the rule does not apply")
    together = prefill(model, new_press(), ids)
    batch_kept = [kept_positions(together, layer) for layer in range(len(together.keys))]
    worst = None
    for row in range(BATCH):
        alone = prefill(model, new_press(), ids[row:row + 1])
        for layer in range(len(alone.keys)):
            for head, own in enumerate(kept_positions(alone, layer)[0]):
                kept = batch_kept[layer][row][head]
                jaccard = len(set(kept) & set(own)) / max(1, len(set(kept) | set(own)))
                if worst is None or (len(kept) == len(own), jaccard) < worst[:2]:
                    worst = (len(kept) == len(own), jaccard, f"layer {layer} row {row} head {head}: {len(kept)} "
                             f"positions kept in the batch, {len(own)} alone, Jaccard {jaccard:.3f}")
    same_count, jaccard, where = worst
    return (same_count and jaccard >= 0.95, "each row keeps what it keeps alone (equal counts, Jaccard >= 0.95)",
            f"the worst layer, row and head: {where}")
''', rules=("KVA201",))


def _rows_identical(run: RunObservation) -> list[int]:
    """Layers on which every row keeps the very same positions (rows hold different prompts)."""
    return [index for index, layer in enumerate(run.layers)
            if layer.exact and len(layer.kept) > 1 and all(row == layer.kept[0] for row in layer.kept[1:])
            and layer.compressed]
