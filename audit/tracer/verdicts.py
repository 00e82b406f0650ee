"""From observations to facts and defects (pure Python, no torch).

Definitions (docs/trace.md repeats them):

* A layer is *compressed* when some row or head kept fewer positions than the prompt had. An
  uncompressed layer keeps everything, so it trivially "equals" every other uncompressed layer:
  that is never counted as reuse.
* ``reused_from[l]`` is the earliest earlier compressed layer of the same prefill whose kept
  indices (every row, every head) are exactly layer ``l``'s.

The claims (layer-index-reuse among them) are judged by the mechanisms, ``rules/claim_*.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..mechanism import format_layers, set_jaccard
from ..model import Defect
from .observations import KeptIndices, LayerObservation, RunObservation

BATCH_ROW_0 = "batch-row-0"
STALE_INDICES = "stale-indices"
CRASH = "crash"


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


def jaccard(a: LayerObservation, b: LayerObservation) -> float:
    """Jaccard similarity of two layers' kept indices, averaged over batch rows and KV heads."""
    pairs = [(ha, hb) for ra, rb in zip(a.kept, b.kept) for ha, hb in zip(ra, rb)]
    return sum(set_jaccard(x, y) for x, y in pairs) / len(pairs) if pairs else 0.0


def adjacent_jaccard(run: RunObservation) -> list[float | None]:
    """Jaccard of layer ``l`` against layer ``l-1``; ``None`` for layer 0 (the paper's Table 2 measure)."""
    return [None] + [jaccard(run.layers[i], run.layers[i - 1]) for i in range(1, len(run.layers))]


def jaccard_matrix(run: RunObservation) -> list[list[float]]:
    """Layer × layer Jaccard of the kept indices (the paper's Figure 2 heatmap)."""
    layers = run.layers
    return [[round(jaccard(a, b), 4) for b in layers] for a in layers]


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


def analyse(runs: Sequence[RunObservation]) -> list[Defect]:
    """The defects that need no re-run (``batch-row-0``), from the prefills of one press instance."""
    return [d for d in [batch_row_0(runs)] if d is not None]
