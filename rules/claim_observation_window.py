"""Mechanism ``observation-window``: the last ``w`` positions (the queries that score) are always kept."""

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


class ObservationWindow(Mechanism):
    """
    The last ``w`` tokens of the prompt (the observation window, whose queries score the rest)
    are kept in the compressed cache, on every layer and KV head: SnapKV keeps the window and
    selects among the other tokens; PyramidKV and ChunkKV inherit the window from SnapKV's
    scoring; FINCH keeps the question.

    Invariant, on every compressed layer, batch row and KV head that keeps at least ``w``
    positions: positions ``L − w … L − 1`` are all kept. When the budget is below ``w`` the window
    cannot be kept whole: that run is reported as not applicable, with the numbers, never hidden.
    ``w`` is the press's ``window_size`` (searched in nested presses too; FINCH sets it from the
    delimiter at run time): the papers' windows differ by model and task, so the press's setting
    is what its run can be held to. Tolerance: none.
    """

    id = "observation-window"
    name = "the observation window"
    title = "the last w positions (the scoring queries) are always kept"
    order = 30
    papers = {
        "snapkv": Claimant("the observation window at the end of the prompt votes, and is kept"),
        "pyramidkv": Claimant("the last instruction tokens score the rest and are kept in every layer"),
        "chunkkv": Claimant("Algorithm 1: the observe window is kept beside the selected chunks"),
        "finch": Claimant("the question (after the delimiter) scores the context and is kept"),
    }
    facts = ("window_size",)

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import ScorerPress


@dataclass
class WindowKeepingPress(ScorerPress):
    """SnapKV (arXiv 2404.14469) style: the window of the last `window_size` tokens scores highest."""

    window_size: int = 16

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = keys.norm(dim=-1)
        scores[..., -self.window_size:] = scores.max() + 1
        return scores
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress



@dataclass
class WindowDroppingPress(ScorerPress):
    """SnapKV (arXiv 2404.14469) in name only: the window is scored like any token, and loses."""

    window_size: int = 16

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = keys.norm(dim=-1)
        scores[..., -self.window_size:] = scores.min() - 1
        return scores
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        w = setting(run, ctx.params, "window_size")
        if not isinstance(w, int) or isinstance(w, bool) or w <= 0:
            return not_applicable("the press exposes no window size (window_size)")
        judged, short = 0, []
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact:
                continue
            length = layer.original_length
            window = set(range(max(0, length - w), length))
            for row, heads in enumerate(layer.kept):
                for head, kept in enumerate(heads):
                    if len(kept) < min(w, length):
                        short.append((index, len(kept)))
                        continue
                    judged += 1
                    missing = window - set(kept)
                    if missing:
                        return violated(
                            f"layer {index}{row_name(row, run.batch)} head {head} kept {len(window) - len(missing)} of "
                            f"the last {w} positions (dropped {spans(missing)}) while keeping {len(kept)}; the paper's "
                            f"rule keeps all {w}", w, len(window) - len(missing), gap=len(missing) / w,
                            figure=_figure(kept, length, w, index, head), **head_where(index, row, head, run.batch))
        if not judged:
            if short:
                layer, budget = short[0]
                return not_applicable(f"the budget is below the window in every compressed layer (layer {layer} keeps "
                                      f"{budget} < w = {w} positions): the window cannot be kept whole")
            return not_applicable("no layer was compressed")
        note = f"; budget below w on {len({i for i, _ in short})} layers" if short else ""
        return holds(f"every compressed layer keeps the last {w} positions{note}", w, w)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """The observation window: the last w positions (whose queries score the rest) are kept on every layer,
    batch row and KV head that keeps at least w positions; w is the press's window_size."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    w = setting(press, "window_size")
    if w is None:
        return None, "the last window_size positions kept", "the press has no window_size: the rule does not apply"
    judged = 0
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        for row, heads in enumerate(kept_positions(run, layer)):
            for head, kept in enumerate(heads):
                if len(kept) == length or len(kept) < w:
                    continue  # not compressed, or a budget below the window (it cannot be kept whole)
                judged += 1
                missing = sorted(set(range(length - w, length)) - set(kept))
                if missing:
                    return (False, f"the last {w} positions ({length - w}-{length - 1}) kept",
                            f"layer {layer} row {row} head {head} keeps {len(kept)} positions, {w - len(missing)} "
                            f"of the last {w} (dropped {missing})")
    if not judged:
        return None, f"the last {w} positions kept", "no layer kept at least w positions: the rule does not apply"
    return True, f"the last {w} positions kept", f"kept on all {judged} compressed heads"
''')


def _figure(kept: tuple[int, ...], length: int, w: int, layer: int, head: int) -> dict:
    """Kept positions of the tail of the prompt against the protected window."""
    start = max(0, length - 3 * w)
    xs = list(range(start, length))
    kept_set = set(kept)
    return {
        "title": f"kept positions near the end of the prompt, layer {layer} head {head}",
        "x_label": "position", "y_label": "kept (1) / dropped (0)", "kind": "step",
        "x": xs,
        "series": {"measured": [1 if x in kept_set else 0 for x in xs],
                   f"expected (window w = {w})": [1 if x >= length - w else None for x in xs]},
    }
