"""Mechanism ``protected-positions``: the first ``S`` and the last ``W`` positions are always kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    setting,
    spans,
    violated,
)
from ..model import NOT_APPLICABLE, ClaimCheck

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class ProtectedPositions(Mechanism):
    """
    Many papers protect positions from eviction whatever their score: a few initial tokens (attention
    sinks) and a window of the most recent ones. Unlike ``attention-sinks`` (StreamingLLM keeps
    *only* those), the rest of the budget is the paper's selection; unlike ``observation-window``,
    the protected tail is not the scoring window.

    Invariant, on every compressed layer, batch row and KV head that keeps at least ``S + W``
    positions: positions ``0 … S − 1`` and ``L − W … L − 1`` are all kept. ``S`` and ``W`` are the
    press's own settings (the attribute names each paper's entry gives, searched in nested presses),
    else the paper's published values. A run whose budget is below ``S + W`` is not applicable, with
    the numbers. Tolerance: none.
    """

    id = "protected-positions"
    name = "protected positions"
    title = "the first S and the last W positions are always kept"
    order = 45
    papers = {
        "compactor": Claimant("the authors' code (vnchari/compactor-vllm compression/compactor.py, "
                              "non_causal_attn_scores: protected_first_tokens / protected_last_tokens set to inf; "
                              "compression_config.py: 16 and 64)",
                              {"first": ("sink_size_start",), "last": ("sink_size_end",), "sink_size_start": 16,
                               "sink_size_end": 64,
                               # kvpress's presses of one of the method's scorers: in the authors' code the
                               # method (CompactorCompression) asks for the protection; neither scorer function
                               # protects by itself (approximate_leverage_scores has no such parameter, and
                               # non_causal_attn_scores protects only the counts it is passed, None by default).
                               "scorer_parts": {"LeverageScorePress": "approximate_leverage_scores",
                                                "NonCausalAttnPress": "non_causal_attn_scores"}}),
        "lukv": Claimant("the budget curve keeps the first sink and the last window tokens (kvpress's LU-KV "
                         "port, lukv_press.py; the curve files' names: sink 4, window 1)",
                         {"first": ("sink",), "last": ("window",), "sink": 4, "window": 1}),
        "fastkvzip": Claimant("the authors' code (Janghyun1230/FastKVzip prefill: the first 4 sink tokens and a "
                              "recent window are kept with score 1)",
                              {"first": ("n_sink",), "last": ("window_size",), "n_sink": 4}),
    }
    facts = ("sink_size_start", "sink_size_end", "sink", "window", "n_sink", "window_size")

    VALID = [
        '''
"""Compactor (arXiv 2507.08143) style: sinks and a recent tail are protected, the rest by key norm."""
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class ProtectingNormPress(ScorerPress):
    """Keeps the first sink_size_start and last sink_size_end tokens, then the keys with the largest norm."""

    sink_size_start: int = 8
    sink_size_end: int = 4

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = keys.norm(dim=-1)
        scores[..., : self.sink_size_start] = scores.max() + 1
        scores[..., -self.sink_size_end:] = scores.max() + 1
        return scores
''',
    ]
    INVALID = [
        '''
"""Compactor (arXiv 2507.08143) in name only: the protected tail is scored like any token."""
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class TailDroppingPress(ScorerPress):
    """Protects the first sink_size_start tokens but drops the last ones."""

    sink_size_start: int = 8
    sink_size_end: int = 4

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = keys.norm(dim=-1)
        scores[..., : self.sink_size_start] = scores.max() + 1
        scores[..., -self.sink_size_end:] = scores.min() - 1
        return scores
''',
    ]

    @staticmethod
    def _count(run: RunObservation, params: dict[str, Any], names: Any) -> int | None:
        value = setting(run, params, *tuple(names or ()))
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        """A press of one scorer of the paper's method is not held to the positions the method protects."""
        parts = ctx.params.get("scorer_parts") or {}
        press_class = next((run.facts.get("press_class") for run in ctx.runs), None)
        if press_class in parts:
            return ClaimCheck(self.id, paper, NOT_APPLICABLE,
                              f"not applicable: {press_class} is one scorer of the paper's method (the authors' "
                              f"{parts[press_class]}), which protects no position by itself; the method protects "
                              "them around its scorers")
        return super().check(ctx, paper)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        first = self._count(run, ctx.params, ctx.params.get("first"))
        last = self._count(run, ctx.params, ctx.params.get("last"))
        if first is None and last is None:
            return not_applicable("the press states no protected positions")
        first, last = first or 0, last or 0
        judged, short = 0, []
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact:
                continue
            length = layer.original_length
            protected = set(range(min(first, length))) | set(range(max(0, length - last), length))
            for row, heads in enumerate(layer.kept):
                for head, kept in enumerate(heads):
                    if len(kept) < len(protected):
                        short.append((index, len(kept)))
                        continue
                    judged += 1
                    missing = protected - set(kept)
                    if missing:
                        head_kept = len(set(range(min(first, length))) & set(kept))
                        tail_kept = len(set(range(max(0, length - last), length)) & set(kept))
                        return violated(
                            f"layer {index}{row_name(row, run.batch)} head {head} dropped protected positions "
                            f"{spans(missing)}: it kept {head_kept} of the first {first} and {tail_kept} of the last "
                            f"{last} while keeping {len(kept)}", [first, last], [head_kept, tail_kept],
                            gap=len(missing) / max(1, len(protected)), **head_where(index, row, head, run.batch))
        if not judged:
            if short:
                layer, budget = short[0]
                return not_applicable(f"the budget is below the protected positions in every compressed layer "
                                      f"(layer {layer} keeps {budget} < {first} + {last})")
            return not_applicable("no layer was compressed")
        return holds(f"every compressed layer keeps the first {first} and the last {last} positions", [first, last],
                     [first, last])

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """Protected positions: every compressed layer, batch row and KV head that keeps at least S + W positions
    keeps the first S and the last W. S and W are the press's own settings (the names in PARAMS["first"] and
    PARAMS["last"]), else the paper's values."""
    press = new_press()
    part = PARAMS.get("scorer_parts", {}).get(type(press).__name__)
    if part is not None:
        return (None, "the method's protected positions",
                f"the press is one scorer of the method ({part}), which protects no position by itself: the rule "
                "does not apply")
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    names_first, names_last = PARAMS.get("first", ()), PARAMS.get("last", ())
    first = setting(press, *names_first, default=next((PARAMS[n] for n in names_first if n in PARAMS), 0))
    last = setting(press, *names_last, default=next((PARAMS[n] for n in names_last if n in PARAMS), 0))
    judged = 0
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        protected = set(range(first)) | set(range(length - last, length))
        for row, heads in enumerate(kept_positions(run, layer)):
            for head, kept in enumerate(heads):
                if len(kept) == length or len(kept) < len(protected):
                    continue  # not compressed, or a budget below the protected positions
                judged += 1
                missing = sorted(protected - set(kept))
                if missing:
                    return (False, f"the first {first} and the last {last} positions kept",
                            f"layer {layer} row {row} head {head} keeps {len(kept)} positions but drops {len(missing)} "
                            f"protected ones: {missing[:12]}")
    if not judged:
        return None, f"the first {first} and last {last} kept", "no layer kept enough positions: the rule does not apply"
    return True, f"the first {first} and the last {last} positions kept", f"kept on all {judged} compressed heads"
''')
