"""PNG figures for the Markdown report (the optional ``kvaudit[plots]`` extra: matplotlib).

Two figures per traced press that claims a mechanism, drawn from the findings model only:
- ``score()`` calls per layer, beside the reference reuse press;
- the layer-by-layer Jaccard similarity of the kept indices, like Figure 2 of the ChunkKV paper.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..model import AuditResult, PressReport

MISSING_MATPLOTLIB = "left out: matplotlib is not installed (pip install 'kvaudit[plots]'); the tables above hold the same data"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


# Byte-stable PNGs: no matplotlib version in the file's metadata.
_METADATA = {"Software": None}


def _score_calls_figure(plt, press: PressReport, path: Path) -> None:
    run = press.trace.runs[0]
    layers = list(range(len(run.score_calls)))
    figure, axes = plt.subplots(figsize=(6, 3))
    reference = press.trace.reference.runs[0] if press.trace.reference and press.trace.reference.runs else None
    width = 0.4 if reference else 0.8
    axes.bar([x - (width / 2 if reference else 0) for x in layers], run.score_calls, width, label=press.name)
    if reference:
        axes.bar([x + width / 2 for x in layers], reference.score_calls[: len(layers)], width,
                 label="reference (ChunkKVReusePress)")
    axes.set_xlabel("layer")
    axes.set_ylabel("score() calls")
    axes.set_xticks(layers)
    top = max([*run.score_calls, *(reference.score_calls if reference else []), 1])
    axes.set_yticks(range(top + 1))
    axes.set_ylim(0, top * 1.5)  # room for the legend above the bars
    axes.set_title(f"{press.name}: score() calls per layer, first prefill ({run.tokens} tokens)", fontsize="medium")
    axes.legend(loc="upper center", ncol=2, fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(figure)


def _jaccard_figure(plt, press: PressReport, path: Path) -> None:
    run = press.trace.runs[0]
    matrix = run.jaccard_matrix
    layers = list(range(len(matrix)))
    size = max(4.5, 2.0 + 0.3 * len(layers))  # every layer keeps a readable tick label
    figure, axes = plt.subplots(figsize=(size + 0.8, size))
    image = axes.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_xticks(layers)
    axes.set_yticks(layers)
    axes.tick_params(labelsize="small")
    axes.set_xlabel("layer")
    axes.set_ylabel("layer")
    axes.set_title(f"{press.name}: Jaccard similarity of kept indices\n"
                   f"first prefill ({run.tokens} tokens × {run.batch} row{'s' if run.batch > 1 else ''})",
                   fontsize="medium")
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label("Jaccard similarity (0: disjoint, 1: same indices)")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(figure)


def write_figures(result: AuditResult, out_dir: Path, stem: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """Draw the figures next to the report; returns (press name -> [(caption, file)], note).

    The note says why figures were left out (no matplotlib), or is None.
    """
    # The figures are about layer-wise reuse: drawn for presses that claim a mechanism.
    traced = [p for p in result.presses
              if p.claims and p.trace is not None and p.trace.status == "ok" and p.trace.runs]
    if not traced:
        return {}, None
    try:
        plt = _pyplot()
    except ImportError:
        return {}, MISSING_MATPLOTLIB
    figures: dict[str, list[tuple[str, str]]] = {}
    for press in traced:
        slug = _slug(press.name)
        calls = f"{stem}-{slug}-score-calls.png"
        _score_calls_figure(plt, press, out_dir / calls)
        entries = [(f"score() calls per layer: {press.name} against the reference", calls)]
        if press.trace.runs[0].jaccard_matrix:
            heatmap = f"{stem}-{slug}-jaccard.png"
            _jaccard_figure(plt, press, out_dir / heatmap)
            entries.append((f"Jaccard similarity of the indices kept by each pair of layers: {press.name}", heatmap))
        figures[press.name] = entries
    return figures, None
