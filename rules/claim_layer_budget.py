"""Mechanism ``layer-budget``: one budget shared across layers, allocated where the scores are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import (CheckContext, Claimant, Mechanism, ReproRule, RunResult, holds, layers_missing_rows,
                         not_applicable, ratio_of, violated)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class LayerBudget(Mechanism):
    """
    Some papers rank every (layer, head, position) of the cache at once against one threshold, so
    that layers (and heads) whose scores are high keep more than others, within one global budget:
    KVCompose composes per-layer scores and allocates globally, KVzip and Fast KVzip keep the pairs
    above one threshold over the whole cache.

    Invariant, per prefill, with ``ρ`` the ratio the press reports and ``L`` the prompt length:

    * the cache keeps ``(1 − ρ)`` of all its (layer, head, position) entries, over every layer and
      head together (masked entries are dropped ones);
    * the budget is not split evenly: some two layers keep different numbers of positions (a
      uniform split is no global allocation).

    Tolerance: one position per layer and head for rounding.
    """

    id = "layer-budget"
    name = "a global budget across layers"
    title = "one budget over all layers and heads, not split evenly"
    order = 65
    papers = {
        "kvcompose": Claimant("abstract: composite tokens allocated with a global budget across layers (kvpress's "
                              "kvcompose_press.py: one top-k over every layer's composite scores)"),
        "kvzip": Claimant("the authors' code (snu-mllab/KVzip attention/score.py, 'pair' ratio): one threshold "
                          "over every (layer, head, position) score"),
        "fastkvzip": Claimant("the authors' code (Janghyun1230/FastKVzip method/compression/fastkvzip.py): one "
                              "threshold over every (layer, head, position) gate score"),
    }

    VALID = [
        '''
"""KVzip (arXiv 2505.23416) style: one budget shared by the layers, unevenly."""
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class SharedBudgetNormPress(ScorerPress):
    """Even layers keep a quarter more than their share, odd layers a quarter less: one budget over the layers."""

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        share = (1 - self.compression_ratio) * (1.25 if module.layer_idx % 2 == 0 else 0.75)
        n_kept = max(1, min(keys.shape[2], round(keys.shape[2] * share)))
        index = keys.norm(dim=-1).topk(n_kept, dim=-1).indices.sort(dim=-1).values
        gather = index.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, gather).contiguous(), values.gather(2, gather).contiguous()

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
"""KVzip (arXiv 2505.23416) in name only: every layer keeps the same share."""
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class EvenSplitPress(ScorerPress):
    """Keeps 1 - compression_ratio of every layer: a uniform split, no global allocation."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        ratio = ratio_of(run)
        layers = [layer for layer in run.layers if layer.original_length]
        if ratio is None or not layers:
            return not_applicable("the press reports no compression_ratio" if ratio is None else "no layer observed")
        lost = layers_missing_rows(run)
        if lost:  # the kept-fraction contract reports it; the budget's allocation cannot be read from what is left
            return not_applicable(f"layer {lost[0]} holds fewer than the {run.batch} batch rows: the press dropped "
                                  "whole rows (see kept-fraction), so how it allocates its budget cannot be read here")
        seen = [[n for row in layer.lengths for n in row] for layer in layers]
        heads = max((len(row) for layer in layers for row in layer.lengths), default=0)
        entries = sum(layer.original_length * run.batch * heads for layer in layers)
        kept = sum(sum(counts) for counts in seen)
        expected = entries * (1 - ratio)
        tolerance = len(layers) * run.batch * heads  # one per layer, row and head
        per_layer = [sum(counts) / len(counts) for counts in seen if counts]
        shares = f"layers keep {min(per_layer):.0f}–{max(per_layer):.0f} positions" if per_layer else ""
        if abs(kept - expected) > tolerance:
            return violated(f"the cache keeps {kept} of its {entries} (layer, head, position) entries "
                            f"({kept / entries:.1%}); one budget for compression_ratio {ratio:g} keeps {expected:.0f} "
                            f"({1 - ratio:.1%}); {shares}", round(1 - ratio, 4), round(kept / entries, 4),
                            gap=abs(kept - expected) / entries)
        if max(per_layer) - min(per_layer) < 1:
            return violated(f"every layer keeps {per_layer[0]:.0f} positions: the budget is split evenly, not "
                            f"allocated across layers", "layers differ", "uniform", gap=0.5)
        return holds(f"one budget over all layers ({kept / entries:.1%} of the entries kept, compression_ratio "
                     f"{ratio:g}); {shares}", round(1 - ratio, 4), round(kept / entries, 4))

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """One budget over every layer and head: with r the ratio the press reports, the cache keeps (1 - r) of all
    its (layer, batch row, KV head, position) entries together (masked entries count as dropped; one per layer,
    row and head of tolerance), and the layers do not all keep the same number. A press that dropped whole
    batch rows breaks another rule (kept-fraction): this one does not apply."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    ratio = getattr(press, "compression_ratio", None)
    if ratio is None:
        return None, "one global budget", "the press reports no compression_ratio: the rule does not apply"
    layers, heads = len(run.keys), run.keys[0].shape[1]
    if any(run.cache.layers[layer].keys.shape[0] < BATCH for layer in range(layers)):
        return None, "one global budget", "the press dropped whole batch rows (kept-fraction): the rule does not apply"
    per_layer = [sum(visible(run, layer, run.masked[layer], row, head)
                     for row in range(run.cache.layers[layer].keys.shape[0]) for head in range(heads))
                 for layer in range(layers)]
    entries = layers * BATCH * heads * TOKENS
    expected = f"{entries * (1 - ratio):.0f} of {entries} entries ({1 - ratio:.1%}), the layers unequal"
    observed = f"{sum(per_layer)} entries ({sum(per_layer) / entries:.1%}); per layer {per_layer}"
    in_budget = abs(sum(per_layer) - entries * (1 - ratio)) <= layers * BATCH * heads
    return in_budget and len(set(per_layer)) > 1, expected, observed
''')
