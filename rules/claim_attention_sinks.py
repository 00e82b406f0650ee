"""Mechanism ``attention-sinks``: exactly the first ``S`` positions plus the most recent ones."""

from __future__ import annotations

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
    setting,
    spans,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class AttentionSinks(Mechanism):
    """
    The cache keeps the first ``S`` tokens (attention sinks) and a window of the most recent
    tokens, and nothing in between. StreamingLLM keeps 4 sinks and fills the rest of the budget
    with the most recent tokens; SimLayerKV's lazy layers keep ``n_initial`` initial and
    ``n_recent`` recent tokens (its other layers keep everything).

    Invariant, on every compressed layer, batch row and KV head: the kept positions are exactly
    ``0 … S − 1`` and ``L − R … L − 1``, where ``S`` is the press's ``n_sink`` (StreamingLLM) or
    ``n_initial`` (SimLayerKV) and ``R`` is the press's ``n_recent`` when it states one, else
    everything the budget leaves after the sinks. SimLayerKV's authors trim a lazy layer at the first
    decoding step, when the new token is already in the cache and counts among the recent ones: at the
    prefill, ``R = n_recent − n_last`` of the prompt (``n_last``: the press's, 1 in the authors' code). Layers left whole are not judged (SimLayerKV's
    non-lazy layers). Tolerance: none, the counts are the press's own.
    """

    id = "attention-sinks"
    name = "attention sinks"
    title = "exactly the first S positions plus the most recent ones"
    order = 40
    papers = {
        "streamingllm": Claimant("Section 3.2 (rolling KV cache with 4 initial tokens as attention sinks)",
                                 {"n_sink": 4, "relies_on": "sinks"}),
        # The authors' code trims a lazy layer at the first decoding step, the new token already in the
        # cache: of the prompt, the last n_recent − n_last stay (n_last = 1 in their decoding).
        "simlayerkv": Claimant("lazy layers keep only the initial and the recent tokens; the authors' code trims "
                               "at the first decoding step, with the new token among the recent ones",
                               {"new_tokens": "n_last", "n_last": 1, "relies_on": "sinks"}),
    }
    facts = ("n_sink", "n_initial", "n_recent", "n_last")

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class SinkWindowPress(ScorerPress):
    """StreamingLLM (arXiv 2309.17453): the first n_sink tokens and the most recent ones."""

    n_sink: int = 4

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        length = keys.shape[2]
        scores = torch.arange(length, dtype=keys.dtype).expand(keys.shape[0], keys.shape[1], -1).clone()
        scores[..., : self.n_sink] = length
        return scores
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import ScorerPress



@dataclass
class SinklessWindowPress(ScorerPress):
    """StreamingLLM (arXiv 2309.17453) in name only: the sinks are evicted with the middle."""

    n_sink: int = 4

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return torch.arange(keys.shape[2], dtype=keys.dtype).expand(keys.shape[0], keys.shape[1], -1).clone()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        sinks = setting(run, ctx.params, "n_sink", "n_initial")
        if not isinstance(sinks, int) or isinstance(sinks, bool):
            return not_applicable("the press states no number of sink tokens (n_sink, n_initial)")
        recent = setting(run, ctx.params, "n_recent")
        if isinstance(recent, int) and ctx.params.get("new_tokens"):  # the recent window counts new tokens
            recent -= int(setting(run, ctx.params, ctx.params["new_tokens"], default=0))
        judged = 0
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact:
                continue
            length = layer.original_length
            for row, heads in enumerate(layer.kept):
                for head, kept in enumerate(heads):
                    judged += 1
                    window = recent if isinstance(recent, int) and not isinstance(recent, bool) else len(kept) - sinks
                    expected = set(range(min(sinks, length))) | set(range(max(sinks, length - window), length))
                    kept_set = set(kept)
                    if kept_set == expected:
                        continue
                    kept_sinks = len(kept_set & set(range(sinks)))
                    tail = _suffix(kept_set, length)
                    where = head_where(index, row, head, run.batch)
                    who = f"layer {index}{row_name(row, run.batch)} head {head}"
                    extra = kept_set - expected
                    detail = f"; it also keeps {len(extra)} positions in between ({spans(extra)})" if extra else ""
                    return violated(
                        f"{who} kept {kept_sinks} of the {sinks} sink positions and the last {tail} positions "
                        f"({len(kept)} in all); the paper's rule gives {sinks} sinks and the last {window} "
                        f"({len(expected)} in all){detail}", [sinks, window], [kept_sinks, tail],
                        gap=len(expected ^ kept_set), **where)
        if not judged:
            return not_applicable("no layer was compressed (no lazy layer)")
        count = f"the last {recent}" if isinstance(recent, int) else "the most recent positions"
        return holds(f"every compressed layer keeps exactly {sinks} sinks and {count}", sinks, sinks)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """Attention sinks: a compressed layer keeps exactly its first S positions (the press's n_sink or n_initial)
    and its last R, nothing in between; R is the press's n_recent when it has one (less the tokens the paper
    counts among the recent ones before they exist: PARAMS["new_tokens"]), else the rest of the budget."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    sinks = setting(press, "n_sink", "n_initial", default=PARAMS.get("n_sink"))
    if sinks is None:
        return None, "sinks and a recent window", "the press states no number of sinks: the rule does not apply"
    recent = setting(press, "n_recent")
    if recent is not None and PARAMS.get("new_tokens"):
        recent -= setting(press, PARAMS["new_tokens"], default=PARAMS.get(PARAMS["new_tokens"], 0))
    judged = 0
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        for row, heads in enumerate(kept_positions(run, layer)):
            for head, kept in enumerate(heads):
                if len(kept) == length:
                    continue  # not compressed (a layer the press leaves whole)
                judged += 1
                window = recent if recent is not None else len(kept) - sinks
                expected = sorted(set(range(sinks)) | set(range(max(sinks, length - window), length)))
                if kept != expected:
                    between = [p for p in kept if p not in expected]
                    return (False, f"positions 0-{sinks - 1} and the last {window}: {len(expected)} in all",
                            f"layer {layer} row {row} head {head} keeps {len(kept)}: {len(set(kept) & set(range(sinks)))}"
                            f" sinks, {len(between)} positions outside them ({between[:8]}), "
                            f"{len(set(expected) - set(kept))} of the expected missing")
    if not judged:
        return None, "sinks and a recent window", "no layer was compressed: the rule does not apply"
    return True, f"{sinks} sinks and the most recent positions", f"exactly those on all {judged} compressed heads"
''')


def _suffix(kept: set[int], length: int) -> int:
    """How many positions, counting back from the last, are kept without a gap."""
    count = 0
    while length - 1 - count in kept:
        count += 1
    return count
