"""PNG figures for the Markdown report (the optional ``kvaudit[plots]`` extra: matplotlib).

One figure per plot a violated claim's check drew (:attr:`kvaudit.model.ClaimCheck.figures`):
budget per layer against the pyramid, kept positions against the protected window, cache length
per decoding step, ``score()`` calls per layer against the reuse rule, the Jaccard heatmap of
kept indices (the ChunkKV paper's Figure 2). The drawing is generic: the check says what to draw.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from ..model import VIOLATED, AuditResult

MISSING_MATPLOTLIB = "left out: matplotlib is not installed (pip install 'kvaudit[plots]'); the tables above hold the same data"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def figure_key(press: str, claim: str) -> str:
    """How the report finds the figures of one claim of one press."""
    return f"{press}:{claim}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


# Byte-stable PNGs: no matplotlib version in the file's metadata.
_METADATA = {"Software": None}
# How many characters of a "small" title fit in one inch of figure width (DejaVu Sans, 100 dpi),
# with a margin: a longer title is wrapped onto several lines instead of running off both edges.
_TITLE_CHARS_PER_INCH = 11


def wrap_title(title: str, figure_width_in: float) -> str:
    """``title`` broken into lines that fit the figure's width (never a word cut)."""
    width = max(20, int(figure_width_in * _TITLE_CHARS_PER_INCH))
    return "\n".join(textwrap.wrap(title, width=width, break_long_words=False)) or title


def _draw(plt, spec: dict[str, Any], path: Path) -> None:
    kind = spec.get("kind", "line")
    if kind == "heatmap":
        matrix = spec.get("matrix", [[0.0]])
        layers = list(range(len(matrix)))
        size = max(4.5, 2.0 + 0.3 * len(layers))  # every layer keeps a readable tick label
        figure, axes = plt.subplots(figsize=(size + 0.8, size))
        image = axes.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        axes.set_xticks(layers)
        axes.set_yticks(layers)
        axes.tick_params(labelsize="small")
        colorbar = figure.colorbar(image, ax=axes)
        colorbar.set_label(str(spec.get("value_label", "")))
    else:
        figure, axes = plt.subplots(figsize=(6, 3))
        xs = list(spec.get("x", []))
        series = dict(spec.get("series", {}))
        width = 0.8 / max(1, len(series))
        for number, (label, values) in enumerate(series.items()):
            points = [(x, v) for x, v in zip(xs, values) if v is not None]
            if not points:
                continue
            px, py = zip(*points)
            if kind == "bar":
                offset = (number - (len(series) - 1) / 2) * width
                axes.bar([x + offset for x in px], py, width, label=label)
            elif kind == "step":
                axes.step(px, py, where="mid", label=label)
            else:
                axes.plot(px, py, marker="o", markersize=3, label=label)
        if series:
            axes.legend(loc="best", fontsize="small")
    axes.set_xlabel(str(spec.get("x_label", "")))
    axes.set_ylabel(str(spec.get("y_label", "")))
    axes.set_title(wrap_title(str(spec.get("title", "")), figure.get_figwidth()), fontsize="small")
    figure.tight_layout()
    # "tight": the saved image grows to hold every label and the whole title, whatever their length.
    figure.savefig(path, dpi=100, metadata=_METADATA, bbox_inches="tight", pad_inches=0.1)
    plt.close(figure)


def write_figures(result: AuditResult, out_dir: Path, stem: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """Draw the figures of every violated claim next to the report.

    Returns (``figure_key(press, claim)`` -> [(caption, file)], note); the note says why figures
    were left out (no matplotlib), or is None.
    """
    wanted = [(press.name, check) for press in result.presses if press.trace is not None
              for check in press.trace.claims if check.verdict == VIOLATED and check.figures]
    if not wanted:
        return {}, None
    try:
        plt = _pyplot()
    except ImportError:
        return {}, MISSING_MATPLOTLIB
    drawn: dict[str, list[tuple[str, str]]] = {}
    for press, check in wanted:
        for number, spec in enumerate(check.figures or (), start=1):
            name = f"{stem}-{slug(press)}-{check.id}-{number}.png"
            _draw(plt, {**spec, "title": f"{press}: {spec.get('title', '')}"}, out_dir / name)
            drawn.setdefault(figure_key(press, check.id), []).append((f"{press}, {check.id}: {spec.get('title', '')}", name))
    return drawn, None
