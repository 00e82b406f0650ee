"""Mechanism ``layer-index-reuse``: ChunkKV's Algorithm 2, checked in the source and on the tiny model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..mechanism import CheckContext, Claimant, Mechanism, ReproRule, StaticResult, format_layers
from ..model import (
    HOLDS,
    IMPLEMENTED,
    LAYER_INDEX_REUSE,
    MISSING,
    NOT_APPLICABLE,
    NOT_OBSERVED,
    NOT_RUN,
    OBSERVED,
    PARTIAL,
    VIOLATED,
    ClaimCheck,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation
    from ..rule import PressContext

STATIC_TO_OBSERVED = {IMPLEMENTED: OBSERVED, PARTIAL: PARTIAL, MISSING: NOT_OBSERVED}
# The names a press may give its reuse parameter (read on the press and its nested presses).
REUSE_PARAMETERS = ("n_reuse", "N_reuse", "reuse_n", "num_reuse")


class LayerIndexReuse(Mechanism):
    """
    Layers form consecutive groups of ``N_reuse``; only a group's first layer
    (``l % N_reuse == 0``) calls ``score()`` and selects; the other layers gather with that
    leader's indices (``I_l = I[floor(l/N_reuse)·N_reuse]``). ChunkKV, Algorithm 2; the paper's
    experiments use ``N_reuse = 2``.

    Invariant, per ratio: some compressed layer makes no ``score()`` call and keeps exactly the
    indices of the last earlier layer that called it, and in every prefill exactly
    ``ceil(layers / N_reuse)`` layers call ``score()`` (the tracer's ``observed``). ``N_reuse`` is
    the press's own reuse parameter when it has one (``n_reuse``, ``N_reuse``, ``reuse_n`` or
    ``num_reuse``), else the paper's 2. What the tracer sees otherwise is ``partial`` (indices
    shared while ``score()`` runs on every layer in every prefill; ``score()`` skipped without
    sharing; or reuse seen on other layers than the groups of ``N_reuse`` give) or
    ``not-observed``. A layer left uncompressed never counts as reuse, nor do layers that keep the
    same positions whatever the prompt (a sink + window selection). Tolerance: none, on the count
    of scoring layers as on the sharing; random weights make one coincidence possible, so sharing
    must hold in every prefill of a ratio.

    Expected and measured: the number of layers that call ``score()`` (``ceil(layers / N_reuse)``)
    against the number that did, in the prefill that departs from it (else the first one).

    Static evidence: a reuse parameter in layer-group arithmetic, a branch on the layer's
    position, an index cache kept across calls, and a guarded ``score()`` (``kvaudit check``).
    """

    id = LAYER_INDEX_REUSE
    name = "layer-wise index reuse"
    title = "groups of N_reuse layers keep their leader's indices without calling score()"
    order = 10
    papers = {
        "chunkkv": Claimant(
            "Algorithm 2 (layer-wise index reuse): layers in groups of N_reuse share the first layer's indices",
            {"n_reuse": 2},
        ),
    }
    facts = REUSE_PARAMETERS

    VALID = [
        '''
from dataclasses import dataclass, field
from kvpress import BasePress, ScorerPress


@dataclass
class ReusingChunkKVPress(BasePress):
    """ChunkKV (arXiv 2502.00299): the first layer of each pair scores, the second reuses its indices."""

    press: ScorerPress = None
    n_reuse: int = 2
    _indices: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        group = module.layer_idx // self.n_reuse
        if module.layer_idx % self.n_reuse == 0:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).sum(1)
            n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
            self._indices[group] = scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = self._indices[group][:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import BasePress, ScorerPress


@dataclass
class ScoringEveryLayerChunkKVPress(BasePress):
    """ChunkKV (arXiv 2502.00299) without Algorithm 2: every layer scores and selects."""

    press: ScorerPress = None

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).sum(1)
        n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
        kept = scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = kept[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        if not ctx.runs:
            reason = ctx.failures[0] if ctx.failures else "no run completed"
            return ClaimCheck(self.id, paper, NOT_RUN, f"not run: {reason}")
        results = []
        for sequence in ctx.sequences():
            if not any(layer.compressed for run in sequence for layer in run.layers):
                continue
            n_reuse, origin = reuse_group(sequence[0], ctx.params)
            observation, reason = reuse_observation(sequence, n_reuse, origin)
            results.append((sequence, observation, reason))
        if not results:
            return ClaimCheck(self.id, paper, NOT_APPLICABLE, "no layer was compressed: nothing to reuse",
                              runs={NOT_APPLICABLE: len(ctx.runs)})
        counts = {HOLDS: sum(1 for _, o, _ in results if o == OBSERVED)}
        counts[VIOLATED] = len(results) - counts[HOLDS]
        counts = {k: v for k, v in counts.items() if v}
        bad = [item for item in results if item[1] != OBSERVED]
        sequence, observation, reason = bad[0] if bad else results[-1]
        n_reuse, _ = reuse_group(sequence[0], ctx.params)
        done = [run for run in sequence if run.ok and run.layers] or sequence
        # The numbers of the prefill that departs from ceil(layers / N_reuse), else of the first one.
        first = next((run for run in done if scoring_layers(run) != expected_scoring(run, n_reuse)), done[0])
        layers = len(first.layers)
        scoring = scoring_layers(first)
        expected = expected_scoring(first, n_reuse)
        where = {"ratio": first.ratio, "length": first.tokens, "batch": first.batch}
        verdict = VIOLATED if bad else HOLDS
        scope = f"ratio {first.ratio:g}" if first.ratio is not None else "the prefills"
        suffix = f"; {len(bad)} of {len(results)} ratios" if bad and len(results) > 1 else ""
        check = ClaimCheck(self.id, paper, verdict, f"{observation}: {reason} ({scope}){suffix}", expected=expected,
                           measured=scoring, where={k: v for k, v in where.items() if v is not None}, runs=counts)
        check.figures = [
            {"title": f"score() calls per layer ({first.where})", "x_label": "layer", "y_label": "score() calls",
             "kind": "bar", "x": list(range(layers)),
             "series": {"measured": [layer.score_calls for layer in first.layers],
                        f"expected (N_reuse = {n_reuse})": [1 if i % n_reuse == 0 else 0 for i in range(layers)]}},
            # The paper's Figure 2: how much adjacent layers' kept indices overlap (what makes reuse pay).
            # On random weights attention is nearly uniform: the overlap says nothing of a real model's.
            {"title": f"Jaccard similarity of the indices kept by each pair of layers ({first.where}"
                      + ("" if first.facts.get("trained_weights") else "; random weights: noise, not learned "
                         "similarity") + ")",
             "x_label": "layer", "y_label": "layer", "kind": "heatmap", "matrix": _jaccard_matrix(first),
             "value_label": "Jaccard similarity (0: disjoint, 1: same indices)"},
        ]
        return check

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """ChunkKV, Algorithm 2: layers form groups of N_reuse; only a group's first layer calls score() and selects,
    the others keep its indices. So ceil(layers / N_reuse) layers call score(), and a compressed layer that
    skips score() keeps exactly the indices of the last layer that called it."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    n_reuse = setting(press, "n_reuse", "N_reuse", "reuse_n", "num_reuse", default=PARAMS["n_reuse"])
    layers = len(run.keys)
    scoring = [layer for layer in range(layers) if run.score_calls[layer]]
    followers, leader = [], None
    for layer in range(layers):
        kept = kept_positions(run, layer)
        if run.score_calls[layer]:
            leader = kept
        elif leader is not None and kept == leader and len(kept[0][0]) < run.keys[layer].shape[2]:
            followers.append(layer)
    expected = (f"score() on ceil({layers}/{n_reuse}) = {math.ceil(layers / n_reuse)} layers; the others keep "
                "their leader's indices")
    observed = f"score() on {len(scoring)} layers ({scoring}); layers {followers} keep their leader's indices"
    return len(scoring) == math.ceil(layers / n_reuse) and bool(followers), expected, observed
''', rules=("KVA101", "KVA102", "KVA103", "KVA104"))

    def static_evidence(self, ctx: PressContext) -> StaticResult:
        from ..analysis.reuse import analyse_reuse

        analysis = analyse_reuse(ctx.index, ctx.press, ctx.flow)
        return StaticResult(analysis.verdict, list(analysis.evidence), analysis)

    def expected_observation(self, static: str) -> str | None:
        """implemented → observed, partial → partial, missing → not-observed."""
        return STATIC_TO_OBSERVED.get(static)

    def observation(self, check: ClaimCheck) -> str:
        """``observed``, ``partial`` or ``not-observed`` (the check's message starts with it), else the verdict."""
        word = check.message.split(":", 1)[0]
        return word if word in (OBSERVED, PARTIAL, NOT_OBSERVED) else check.verdict


# ---------------------------------------------------------------------------------------------
# What the tracer saw, on the runs of one press instance
# ---------------------------------------------------------------------------------------------


def _jaccard_matrix(run: RunObservation) -> list[list[float]]:
    from ..tracer.verdicts import jaccard_matrix

    return jaccard_matrix(run)


def reuse_group(run: RunObservation, params: dict) -> tuple[int, str]:
    """``N_reuse``: the press's own reuse parameter when it has one (an int ≥ 1), else the paper's; and where from."""
    for name in REUSE_PARAMETERS:
        value = run.facts.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value, f"the press's {name}"
    return int(params.get("n_reuse", 2)), "the paper's"


def scoring_layers(run: RunObservation) -> int:
    """How many layers of ``run`` called ``score()``."""
    return sum(1 for layer in run.layers if layer.score_calls)


def expected_scoring(run: RunObservation, n_reuse: int) -> int:
    """``ceil(layers / N_reuse)``: the group leaders of Algorithm 2."""
    return -(-len(run.layers) // n_reuse)


def leaders(run: RunObservation) -> list[int | None]:
    """For each layer, the last earlier layer that called ``score()`` (its group's scoring layer)."""
    result: list[int | None] = []
    last: int | None = None
    for index, layer in enumerate(run.layers):
        result.append(last)
        if layer.score_calls > 0:
            last = index
    return result


def _identical_pairs(run: RunObservation) -> set[tuple[int, int]]:
    """(later, earlier) pairs of compressed layers that keep exactly the same indices."""
    pairs = set()
    layers = run.layers
    for late in range(len(layers)):
        if not layers[late].compressed or layers[late].unmatched:
            continue
        for early in range(late):
            if layers[early].compressed and layers[early].kept == layers[late].kept:
                pairs.add((late, early))
    return pairs


def prompt_independent_layers(runs: Sequence[RunObservation]) -> set[int]:
    """Compressed layers that keep the same positions for different prompts of the same length.

    Such a selection reads positions only (StreamingLLM's sink + window): two layers that both
    keep "the last n tokens" are identical by construction, which is not index sharing. Needs a
    batch prefill and a single-row prefill of the same length (the plan has both).
    """
    independent: set[int] = set()
    for batch_run in runs:
        if not batch_run.ok or batch_run.batch < 2:
            continue
        for single in runs:
            if single.ok and single.batch == 1 and single.tokens == batch_run.tokens:
                for index, (a, b) in enumerate(zip(single.layers, batch_run.layers)):
                    if a.compressed and all(row == a.kept[0] for row in b.kept):
                        independent.add(index)
                return independent
    return independent


def reuse_observation(runs: Sequence[RunObservation], n_reuse: int | None = None,
                      origin: str = "the paper's") -> tuple[str, str]:
    """``observed``, ``partial`` or ``not-observed``, and a one-line reason, from one instance's prefills.

    With ``n_reuse``, ``observed`` also needs ``ceil(layers / n_reuse)`` scoring layers in every
    prefill (``origin`` says whose value it is); reuse on other layers than those is ``partial``.
    """
    done = [run for run in runs if run.ok and run.layers]
    if not done:
        return NOT_OBSERVED, "no prefill completed"

    # observed: a compressed layer skips score() and keeps exactly its leader's indices, and the
    # scoring layers are as many as Algorithm 2's group leaders.
    off = [run for run in done if n_reuse is not None and scoring_layers(run) != expected_scoring(run, n_reuse)]
    for run in done:
        followers = [
            (index, leader)
            for index, (layer, leader) in enumerate(zip(run.layers, leaders(run)))
            if layer.compressed
            and layer.score_calls == 0
            and leader is not None
            and not layer.unmatched
            and layer.kept == run.layers[leader].kept
        ]
        if followers:
            scoring = sorted({leader for _, leader in followers} | {i for i, l in enumerate(run.layers) if l.score_calls})
            which = "layer" if len(followers) == 1 else "layers"
            seen = (f"{which} {format_layers(i for i, _ in followers)} skipped score() and kept their leader's "
                    f"indices (prefill {run.label})")
            if off:
                wrong = off[0]
                return PARTIAL, (
                    f"{seen}, but score() ran on {scoring_layers(wrong)} of {len(wrong.layers)} layers in prefill "
                    f"{wrong.label}, where groups of N_reuse = {n_reuse} ({origin}) score on "
                    f"ceil({len(wrong.layers)}/{n_reuse}) = {expected_scoring(wrong, n_reuse)}"
                )
            return OBSERVED, f"score() ran on layers {format_layers(scoring)} only; {seen}"

    # partial (a): a pair of compressed layers identical in every completed prefill, on a layer
    # whose selection depends on the prompt.
    independent = prompt_independent_layers(done)
    shared = {pair for pair in set.intersection(*(_identical_pairs(run) for run in done)) if pair[0] not in independent}
    # partial (b): a compressed layer skips score() while other layers call it.
    skipped: list[int] = []
    for run in done:
        if any(layer.score_calls for layer in run.layers):
            skipped = [i for i, layer in enumerate(run.layers) if layer.compressed and layer.score_calls == 0]
            if skipped:
                break
    if shared:
        late = sorted({late for late, _ in shared})
        early = sorted({early for _, early in shared})
        how = "although score() also runs on them" if not skipped else "while score() is skipped elsewhere"
        return PARTIAL, (
            f"layers {format_layers(late)} keep exactly the indices of layers {format_layers(early)} in every "
            f"prefill, {how}"
        )
    if skipped:
        return PARTIAL, f"layers {format_layers(skipped)} skip score() but keep indices of their own (no sharing)"

    calls = [i for i, layer in enumerate(done[0].layers) if layer.score_calls]
    uncompressed = [i for i, layer in enumerate(done[0].layers) if not layer.compressed]
    parts = []
    if len(calls) == len(done[0].layers):
        parts.append(f"score() ran on all {len(calls)} layers")
    elif calls:
        parts.append(f"score() ran on layers {format_layers(calls)}")
    else:
        parts.append("no score() call was seen")
    if uncompressed:
        were = "layer {} was" if len(uncompressed) == 1 else "layers {} were"
        parts.append(f"{were.format(format_layers(uncompressed))} left uncompressed (not reuse)")
    if independent:
        keep = "layer {} keeps" if len(independent) == 1 else "layers {} keep"
        parts.append(f"{keep.format(format_layers(independent))} the same positions whatever the prompt (not reuse)")
    others = "no other compressed layer" if independent else "no compressed layer"
    parts.append(f"{others} keeps an earlier layer's indices in every prefill")
    return NOT_OBSERVED, "; ".join(parts)
