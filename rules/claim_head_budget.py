"""Mechanism ``head-budget``: a layer's budget is shared among its KV heads, adaptively, with a floor."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..mechanism import (
    CheckContext,
    Claimant,
    Mechanism,
    RunResult,
    holds,
    not_applicable,
    ratio_of,
    row_name,
    setting,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class HeadBudget(Mechanism):
    """
    Ada-KV selects the ``heads × n`` best entries of a layer across all its KV heads at once, so
    heads whose attention is concentrated give budget to heads whose attention is spread; a
    safeguard keeps at least ``alpha · n`` entries in every head. CriticalAdaKV applies its
    criticality scores on the same head-wise budget.

    Invariant, on every compressed layer and batch row, with ``n = max(1, int(L(1 − ratio)))``
    the per-head budget:

    * the heads' kept counts sum to ``heads × n`` (masked entries are dropped ones);
    * the smallest head keeps at least ``floor(alpha · n)`` (the press's ``alpha_safeguard``, else
      the paper's 0.2);
    * heads differ: in each run, some layer gives its heads different counts (a uniform split is
      no adaptive allocation).

    Tolerance: none on the sum and the floor; "heads differ" needs one layer of the run.
    """

    id = "head-budget"
    name = "head-wise budget allocation"
    title = "per-head counts sum to heads × budget, respect the safeguard, and differ"
    order = 70
    papers = {
        "adakv": Claimant("Algorithm 1 (adaptive budget allocation across heads, with a safeguard alpha)",
                          {"alpha_safeguard": 0.2}),
        "criticaladakv": Claimant("CriticalKV's selection on Ada-KV's head-wise budget", {"alpha_safeguard": 0.2}),
    }
    facts = ("alpha_safeguard",)

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import BasePress, ScorerPress


@dataclass
class AcrossHeadsPress(BasePress):
    """AdaKV (arXiv 2407.11550): the layer's budget goes to the best entries across all heads."""

    press: ScorerPress = None
    alpha_safeguard: float = 0.2

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        batch, heads, length = scores.shape
        n_kept = max(1, int(length * (1 - self.compression_ratio)))
        safe = scores.topk(int(n_kept * self.alpha_safeguard), dim=-1).indices
        scores = scores.scatter(-1, safe, torch.finfo(scores.dtype).max)
        # head 0 leans ahead: the heads get different shares of the layer's budget
        scores[:, 0] = scores[:, 0] + 1
        pruned = (-scores.reshape(batch, -1)).topk(heads * (length - n_kept), dim=-1).indices.flatten()
        rows = torch.arange(batch).repeat_interleave(heads * (length - n_kept))
        module.masked_key_indices = (rows, pruned // length, pruned % length)
        return keys, values
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import BasePress, ScorerPress



@dataclass
class EqualHeadsPress(BasePress):
    """AdaKV (arXiv 2407.11550) in name only: every head keeps the same number of entries."""

    press: ScorerPress = None
    alpha_safeguard: float = 0.2

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
        index = scores.topk(n_kept, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        ratio = ratio_of(run)
        if ratio is None:
            return not_applicable("the press has no compression ratio")
        alpha = float(setting(run, ctx.params, "alpha_safeguard", default=0.2))
        judged = 0
        differ = False
        for index, layer in enumerate(run.layers):
            if not layer.compressed:
                continue
            length = layer.original_length
            n = max(1, int(length * (1 - ratio)))
            floor = math.floor(alpha * n)
            for row, counts in enumerate(layer.lengths):
                judged += 1
                who = f"layer {index}{row_name(row, run.batch)}"
                where = {"layer": index, **({"row": row} if run.batch > 1 else {})}
                heads = len(counts)
                if sum(counts) != heads * n:
                    return violated(f"{who}: its {heads} KV heads keep {sum(counts)} entries ({', '.join(map(str, counts))}); "
                                    f"the paper's rule gives {heads} × {n} = {heads * n}", heads * n, sum(counts),
                                    gap=abs(sum(counts) - heads * n) / (heads * n), **where)
                if min(counts) < floor:
                    head = counts.index(min(counts))
                    return violated(f"{who} head {head} keeps {min(counts)} entries, below the safeguard "
                                    f"floor(alpha {alpha:g} × {n}) = {floor}", floor, min(counts),
                                    gap=(floor - min(counts)) / max(1, floor), head=head, **where)
                differ = differ or len(set(counts)) > 1
        if not judged:
            return not_applicable("no layer was compressed")
        if not differ:
            counts = run.layers[0].lengths[0]
            return violated(f"every compressed layer gives each of its heads the same count ({counts[0]}): no "
                            "head-wise allocation; the paper's rule shares the layer's budget by score across heads",
                            "heads differ", list(counts), gap=0.5)
        return holds(f"head counts sum to heads × budget, respect floor(alpha {alpha:g} × budget), and differ",
                     alpha, alpha)
