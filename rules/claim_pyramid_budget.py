"""Mechanism ``pyramid-budget``: lower layers keep more, higher layers less, the total unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import CheckContext, Claimant, Mechanism, ReproRule, RunResult, not_applicable, ratio_of, setting, violated
from ..model import HOLDS


def paper_pyramid(length: int, ratio: float, layers: int, beta: float) -> list[int]:
    """The paper's per-layer budgets: an arithmetic sequence from ``2k − k/β`` down to ``k/β``, ``k = L(1 − ratio)``.

    PyramidKV, Section 3: the top layer keeps ``k_total / (β·m)``, the bottom layer
    ``2·k_total / m − k_top``, the layers between are interpolated linearly; ``k_total = m·k``.
    """
    budget = length * (1 - ratio)
    low = budget / beta
    high = 2 * budget - low
    step = (high - low) / (layers - 1) if layers > 1 else 0.0
    return [round(high - layer * step) for layer in range(layers)]


def kvpress_pyramid(length: int, ratio: float, window: int, beta: float) -> tuple[float, float, bool]:
    """The bottom and top layer budgets of kvpress's ``PyramidKVPress.get_layer_budget``, and whether they fit.

    kvpress (``pyramidkv_press.py``) clamps the bottom layer to ``L − window_size`` and falls back
    to SnapKV's flat budget when ``not (L >= max_num >= min_num >= window_size)``; its docstring
    says it departs from the original code for short queries on purpose. Used only to explain a
    flat budget in the message: the verdict stays the paper's.
    """
    budget = length * (1 - ratio)
    low = budget / beta
    high = 2 * budget - low
    if high >= length - window:
        high = length - window
        low = 2 * budget - high
    return high, low, length >= high >= low >= window


def _fallback_note(length: int, ratio: float, window: object, beta: float) -> str:
    """Why a flat budget may be kvpress's documented fallback, when the run is in its range."""
    if not isinstance(window, (int, float)) or isinstance(window, bool):
        return ""
    high, low, fits = kvpress_pyramid(length, ratio, int(window), beta)
    if fits:
        return ""
    return (f"; a flat budget here is the documented fallback of kvpress's PyramidKVPress, which keeps SnapKV's "
            f"flat budget when its pyramid does not fit between window_size ({window:g}) and the context length "
            f"(here it would run from {high:.0f} down to {low:.0f} positions)")


if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class PyramidBudget(Mechanism):
    """
    PyramidKV spreads the cache budget over layers as a pyramid: lower layers, whose attention
    is spread wide, keep more; higher layers, whose attention has funnelled onto a few tokens,
    keep less. The top layer keeps ``k/β`` and the bottom ``2k − k/β`` (``k = L(1 − ratio)``),
    linear in between, so the total is that of a uniform budget.

    Invariant, per run (the budget of a layer is what it keeps; heads and rows agree):

    * budgets never increase with depth;
    * the first layer's budget exceeds the last's;
    * their sum is the global budget ``layers × L(1 − ratio)`` within rounding (one position per
      layer).

    ``expected`` is the paper's pyramid for the press's ``beta`` (else the paper's 20), so the
    report can draw both.

    A flat budget breaks the invariant whoever wrote the press. kvpress's ``PyramidKVPress`` keeps
    SnapKV's flat budget on purpose when the pyramid does not fit (its smallest layer would keep
    fewer than ``window_size`` positions: short contexts, high ratios); when a flat run lies in that
    range the message says so, and the deviation can be accepted in the configuration
    (``[[tool.kvaudit.accept]]``, docs/claims.md).
    """

    id = "pyramid-budget"
    name = "the pyramidal budget"
    title = "per-layer budgets decrease with depth and sum to the global budget"
    order = 60
    papers = {"pyramidkv": Claimant("Section 3 (pyramidal budget allocation, arithmetic from bottom to top)",
                                    {"beta": 20})}
    facts = ("beta", "window_size")
    diff_tolerance = 1  # one position per layer budget, the rule's rounding

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import SnapKVPress


@dataclass
class LinearPyramidPress(SnapKVPress):
    """PyramidKV (arXiv 2406.02069): layer budgets fall linearly with depth, the total unchanged."""

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        length, layers = keys.shape[2], module.config.num_hidden_layers
        budget = length * (1 - self.compression_ratio)
        low, high = budget / 2, budget * 1.5
        n_kept = round(high - module.layer_idx * (high - low) / (layers - 1))
        scores = self.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(n_kept, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import SnapKVPress



@dataclass
class FlatPyramidPress(SnapKVPress):
    """PyramidKV (arXiv 2406.02069) in name only: every layer keeps the same budget."""
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        ratio = ratio_of(run)
        layers = run.layers
        if ratio is None or len(layers) < 2:
            return not_applicable("no compression ratio, or a single layer: no pyramid to check")
        if not any(layer.compressed for layer in layers):
            return not_applicable("no layer was compressed")
        length = layers[0].original_length
        budgets = [layer.kept_count for layer in layers]
        beta = float(setting(run, ctx.params, "beta", default=20))
        expected = paper_pyramid(length, ratio, len(layers), beta)
        total = len(layers) * length * (1 - ratio)
        figure = {"title": f"budget per layer ({run.where})", "x_label": "layer", "y_label": "kept positions",
                  "kind": "line", "x": list(range(len(layers))),
                  "series": {"measured": budgets, f"expected (PyramidKV, beta {beta:g})": expected}}
        rises = [i for i in range(1, len(budgets)) if budgets[i] > budgets[i - 1]]
        if rises:
            i = rises[0]
            return violated(f"layer {i} keeps {budgets[i]} positions, more than layer {i - 1} ({budgets[i - 1]}); "
                            f"the paper's pyramid gives {expected[i]} after {expected[i - 1]}", expected, budgets,
                            gap=1.0 + (budgets[i] - budgets[i - 1]) / max(1, length), figure=figure, layer=i)
        if budgets[0] <= budgets[-1]:
            return violated(f"all {len(layers)} layers keep {budgets[0]} positions: the budget is flat; the paper's "
                            f"pyramid gives {expected[0]} for layer 0 down to {expected[-1]} for layer {len(layers) - 1}"
                            + _fallback_note(length, ratio, setting(run, ctx.params, "window_size"), beta),
                            expected, budgets, gap=(expected[0] - expected[-1]) / max(1, length), figure=figure)
        if abs(sum(budgets) - total) > len(layers):
            return violated(f"the layers keep {sum(budgets)} positions in all; the global budget is {total:.0f} "
                            f"({len(layers)} × {length} × {1 - ratio:g})", round(total), sum(budgets),
                            gap=abs(sum(budgets) - total) / max(1.0, total), figure=figure)
        return RunResult(HOLDS, f"budgets fall from {budgets[0]} (layer 0) to {budgets[-1]} (layer "
                         f"{len(layers) - 1}) and sum to {sum(budgets)} of {total:.0f}", expected, budgets,
                         figure=figure)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """PyramidKV: lower layers keep more, higher layers less. Per layer budgets (entries attention sees in batch
    row 0, averaged over KV heads) never increase with depth, the first exceeds the last, and they sum to
    layers * L(1 - ratio) within one position per layer. The paper's pyramid runs linearly from 2k - k/beta
    down to k/beta, k = L(1 - ratio)."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    ratio = getattr(press, "compression_ratio", RATIO)
    layers, length = len(run.keys), TOKENS
    heads = run.keys[0].shape[1]
    budgets = [round(sum(visible(run, layer, run.masked[layer], 0, head) for head in range(heads)) / heads)
               for layer in range(layers)]
    k, beta = length * (1 - ratio), setting(press, "beta", default=PARAMS["beta"])
    pyramid = [round(2 * k - k / beta - layer * (2 * k - 2 * k / beta) / (layers - 1)) for layer in range(layers)]
    expected = f"budgets falling with depth, summing to {layers * k:.0f} (the paper's pyramid: {pyramid})"
    observed = f"budgets {budgets}, summing to {sum(budgets)}"
    falling = all(later <= earlier for earlier, later in zip(budgets, budgets[1:])) and budgets[0] > budgets[-1]
    return falling and abs(sum(budgets) - layers * k) <= layers, expected, observed
''')
