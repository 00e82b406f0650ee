"""From observations to facts, the dynamic verdict and the defects (pure Python, no torch).

Definitions (docs/trace.md repeats them):

* A layer is *compressed* when some row or head kept fewer positions than the prompt had. An
  uncompressed layer keeps everything, so it trivially "equals" every other uncompressed layer:
  that is never counted as reuse.
* ``reused_from[l]`` is the earliest earlier compressed layer of the same prefill whose kept
  indices (every row, every head) are exactly layer ``l``'s.
* The *leader* of a layer is the last earlier layer of the same prefill that called ``score()``.

Verdict ``layer-index-reuse``:

* ``observed``: in some prefill, a compressed layer makes no ``score()`` call and keeps exactly its
  leader's indices (Algorithm 2: ``I_l = I[floor(l/N)·N]``).
* ``partial``: indices are shared although ``score()`` runs on every compressed layer (a pair of
  layers is identical in *every* prefill: one coincidence on random weights is not sharing), or
  ``score()`` is skipped on a compressed layer whose indices are shared with no leader.
* ``not-observed``: neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..model import LAYER_INDEX_REUSE, NOT_OBSERVED, OBSERVED, PARTIAL, Defect
from .observations import KeptIndices, LayerObservation, RunObservation

BATCH_ROW_0 = "batch-row-0"
STALE_INDICES = "stale-indices"
CRASH = "crash"


def format_layers(layers: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 5]`` → ``"0–3, 5"``: short layer lists for one-line messages."""
    ordered = sorted(set(layers))
    parts: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        if end - start >= 2:
            parts.append(f"{ordered[start]}–{ordered[end]}")
        else:
            parts.extend(str(layer) for layer in ordered[start : end + 1])
        start = end + 1
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Per-prefill facts
# ---------------------------------------------------------------------------------------------


def reused_from(run: RunObservation) -> list[int | None]:
    """For each layer, the earliest earlier compressed layer with exactly the same kept indices."""
    result: list[int | None] = []
    first_seen: dict[KeptIndices, int] = {}
    for index, layer in enumerate(run.layers):
        if not layer.compressed or layer.unmatched:
            result.append(None)
            continue
        result.append(first_seen.get(layer.kept))
        first_seen.setdefault(layer.kept, index)
    return result


def leaders(run: RunObservation) -> list[int | None]:
    """For each layer, the last earlier layer that called ``score()`` (its group's scoring layer)."""
    result: list[int | None] = []
    last: int | None = None
    for index, layer in enumerate(run.layers):
        result.append(last)
        if layer.score_calls > 0:
            last = index
    return result


def _jaccard_sets(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    union = len(set(a) | set(b))
    return len(set(a) & set(b)) / union if union else 1.0


def jaccard(a: LayerObservation, b: LayerObservation) -> float:
    """Jaccard similarity of two layers' kept indices, averaged over batch rows and KV heads."""
    pairs = [(ha, hb) for ra, rb in zip(a.kept, b.kept) for ha, hb in zip(ra, rb)]
    return sum(_jaccard_sets(x, y) for x, y in pairs) / len(pairs) if pairs else 0.0


def adjacent_jaccard(run: RunObservation) -> list[float | None]:
    """Jaccard of layer ``l`` against layer ``l-1``; ``None`` for layer 0 (the paper's Table 2 measure)."""
    return [None] + [jaccard(run.layers[i], run.layers[i - 1]) for i in range(1, len(run.layers))]


def jaccard_matrix(run: RunObservation) -> list[list[float]]:
    """Layer × layer Jaccard of the kept indices (the paper's Figure 2 heatmap)."""
    layers = run.layers
    return [[round(jaccard(a, b), 4) for b in layers] for a in layers]


# ---------------------------------------------------------------------------------------------
# Verdict: layer-index-reuse
# ---------------------------------------------------------------------------------------------


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


def reuse_verdict(runs: Sequence[RunObservation]) -> tuple[str, str]:
    """The dynamic ``layer-index-reuse`` verdict and a one-line reason, from completed prefills."""
    done = [run for run in runs if run.ok and run.layers]
    if not done:
        return NOT_OBSERVED, "no prefill completed"

    # observed: a compressed layer skips score() and keeps exactly its leader's indices.
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
            return OBSERVED, (
                f"score() ran on layers {format_layers(scoring)} only; layers "
                f"{format_layers(i for i, _ in followers)} skipped it and kept their leader's indices "
                f"(prefill {run.label})"
            )

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
        parts.append(f"layers {format_layers(uncompressed)} were left uncompressed (not reuse)")
    if independent:
        parts.append(f"layers {format_layers(independent)} keep the same positions whatever the prompt (not reuse)")
    others = "no other compressed layer" if independent else "no compressed layer"
    parts.append(f"{others} keeps an earlier layer's indices in every prefill")
    return NOT_OBSERVED, "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Defects
# ---------------------------------------------------------------------------------------------


def batch_row_0(runs: Sequence[RunObservation]) -> Defect | None:
    """``batch-row-0``: rows with different prompts keep identical indices on every compressed layer.

    A selection that ignores the input altogether (StreamingLLM's sink + window) also keeps
    identical rows; it is told apart by the single-row prefill of the same length with yet another
    prompt: if that one kept the same indices too, the rows are not read at all and no defect is
    reported.
    """
    for run in runs:
        if not run.ok or run.batch < 2 or not run.layers:
            continue
        compressed = [i for i, layer in enumerate(run.layers) if layer.compressed and not layer.unmatched]
        if not compressed:
            continue
        if not all(all(row == run.layers[i].kept[0] for row in run.layers[i].kept[1:]) for i in compressed):
            continue
        single = next((r for r in runs if r.ok and r.batch == 1 and r.tokens == run.tokens and r.layers), None)
        if single is not None and all(single.layers[i].kept[0] == run.layers[i].kept[0] for i in compressed):
            continue  # input-independent selection: nothing reads row 0 more than row 1
        return Defect(
            BATCH_ROW_0,
            f"the {run.batch} rows of prefill {run.label} hold different prompts yet keep identical indices "
            f"on all {len(compressed)} compressed layers: the selection follows row 0",
        )
    return None


def layers_matching_earlier(run: RunObservation, earlier: Sequence[RunObservation]) -> dict[int, str]:
    """Compressed layers of ``run`` whose row-0 indices equal a compressed layer's of an earlier prefill.

    Returns layer → ``number (label)`` of the earlier prefill. Prefills of different lengths essentially never
    keep the same positions when they select afresh, so this is the trigger for a stale check.
    """
    seen: dict[tuple[tuple[int, ...], ...], str] = {}
    for number, previous in enumerate(earlier, start=1):
        if previous.ok:
            for layer in previous.layers:
                if layer.compressed and layer.kept:
                    seen.setdefault(layer.kept[0], f"{number} ({previous.label})")
    return {
        index: seen[layer.kept[0]]
        for index, layer in enumerate(run.layers)
        if layer.compressed and layer.kept and layer.kept[0] in seen
    }


def stale_defect(
    run_number: int,
    run: RunObservation,
    matches: dict[int, str],
    fresh: RunObservation,
) -> Defect | None:
    """``stale-indices`` when a fresh press keeps other indices on the layers that matched an earlier prefill."""
    if not fresh.ok:
        return None
    stale = [i for i in matches if i < len(fresh.layers) and fresh.layers[i].kept != run.layers[i].kept]
    if not stale:
        return None
    sources = ", ".join(sorted({matches[i] for i in stale}))
    return Defect(
        STALE_INDICES,
        f"prefill {run_number} ({run.label}) kept the indices computed for prefill {sources} on layers "
        f"{format_layers(stale)}; a fresh press keeps others",
    )


def stale_failure_defect(run_number: int, run: RunObservation, fresh: RunObservation) -> Defect | None:
    """``stale-indices`` when a prefill fails after earlier ones but passes on a fresh press."""
    if run.ok or not fresh.ok:
        return None
    return Defect(
        STALE_INDICES,
        f"prefill {run_number} ({run.label}) fails after earlier prefills ({run.error}), while a fresh press passes it",
    )


def analyse(runs: Sequence[RunObservation]) -> tuple[dict[str, str], dict[str, str], list[Defect]]:
    """Verdicts, reasons and the defects that need no re-run (``batch-row-0``)."""
    verdict, reason = reuse_verdict(runs)
    defects = [d for d in [batch_row_0(runs)] if d is not None]
    return {LAYER_INDEX_REUSE: verdict}, {LAYER_INDEX_REUSE: reason}, defects
