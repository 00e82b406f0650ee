"""Mechanism ``decode-compression``: the cache is compressed while decoding, not only at prefill."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import CheckContext, Claimant, Mechanism, ReproRule, RunResult, holds, not_applicable, setting, violated

MIN_STEPS = 5  # a fixed-size claim must hold over at least this many decoding steps
FIXED, INTERVAL, EVICTS = "fixed-size", "interval", "evicts"

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class DecodeCompression(Mechanism):
    """
    Some methods compress while generating, not only once after the prompt: StreamingLLM keeps a
    rolling cache (sinks + window), H2O evicts one token per step to keep its budget, TOVA drops
    the least attended token at every step, CaM merges then evicts per step; DMS evicts tokens as
    they leave its sliding window. kvpress's decoding presses (``DecodingPress`` and its
    subclasses, ``PrefillDecodingPress``) compress every ``compression_interval`` steps.

    The tracer decodes ``N`` steps (8 by default) after each prefill, inside ``with press(model):``,
    and reads the cache of every layer after every step (masked entries are dropped ones).
    Invariant, by the claimant's ``mode``:

    * ``fixed-size``: the cache length stays the same over at least 5 consecutive steps, on every
      layer (expected: its length after the first compression; measured: its length after the
      last step);
    * ``interval``: every layer is compressed at least once when ``compression_interval`` ≤ ``N``,
      and then holds the target the press states: ``target_compression_ratio`` of all the tokens
      seen so far when it has one (``CompressionRatioDecodingPress``), else ``target_size``;
    * ``evicts``: some layer holds fewer entries after the last step than after the prefill plus
      the steps.

    Tolerance: none; fewer than 5 completed steps make the run not applicable.
    """

    id = "decode-compression"
    name = "compression while decoding"
    title = "the cache is compressed while decoding (a fixed-size claim holds over ≥ 5 steps)"
    order = 100
    papers = {
        "streamingllm": Claimant("Section 3.2 (rolling KV cache: the cache size stays fixed while generating)",
                                 {"mode": FIXED}),
        "h2o": Claimant("Section 3 (H2O evicts at every generation step to keep a fixed budget)", {"mode": FIXED}),
        "tova": Claimant("Section 4 (TOVA drops one token per decoding step once the cache is full)", {"mode": FIXED}),
        "cam": Claimant("Algorithm 1 (merge, then evict, at every decoding step)", {"mode": FIXED}),
        "dms": Claimant("Section 3 (tokens are evicted as they leave the sliding window, while decoding)",
                        {"mode": EVICTS}),
    }
    contracts = {
        "DecodingPress": Claimant("DecodingPress: compresses every compression_interval decoding steps",
                                  {"mode": INTERVAL}),
        "PrefillDecodingPress": Claimant("PrefillDecodingPress: its decoding press compresses while decoding",
                                         {"mode": INTERVAL}),
    }
    facts = ("compression_interval", "target_size", "target_compression_ratio")
    needs_decode = True

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import BasePress


@dataclass
class RollingWindowPress(BasePress):
    """TOVA (arXiv 2401.06104) style: the cache is cut back to its prefill size at every decoding step."""

    compression_ratio: float = 0.5

    def forward_hook(self, module, input, kwargs, output):
        cache = kwargs["past_key_values"].layers[module.layer_idx]
        length = cache.keys.shape[2]
        if kwargs["hidden_states"].shape[1] > 1:
            keep = max(1, int(length * (1 - self.compression_ratio)))
        else:
            keep = length - 1
        cache.keys, cache.values = cache.keys[:, :, -keep:].contiguous(), cache.values[:, :, -keep:].contiguous()
        return output
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import KnormPress



@dataclass
class PrefillOnlyTOVAPress(KnormPress):
    """TOVA (arXiv 2401.06104), compressed at prefill only: the cache grows while decoding."""
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        mode = ctx.params.get("mode", FIXED)
        if run.decode_error is not None and run.decode_steps < MIN_STEPS:
            return not_applicable(f"decoding raised after {run.decode_steps} steps: {run.decode_error}")
        if run.decode_steps < MIN_STEPS:
            return not_applicable(f"only {run.decode_steps} decoding steps ran (at least {MIN_STEPS} needed)")
        steps = run.decode_steps
        curves = [[layer.kept_count] + [step.length for step in layer.decode[:steps]] for layer in run.layers]
        if not curves:
            return not_applicable("no layer was observed")
        figure = {"title": f"cache length while decoding, layer 0 ({run.where})", "x_label": "decoding step",
                  "y_label": "cache entries", "kind": "line", "x": list(range(steps + 1)),
                  "series": {"measured": curves[0]}}
        if mode == FIXED:
            for index, curve in enumerate(curves):
                if _longest_flat(curve) < MIN_STEPS:
                    # The size to hold: the prefill's when it compressed, else the first step's.
                    start = curve[0] if run.layers[index].compressed or len(curve) < 2 else curve[1]
                    figure["series"][f"expected (fixed at {start})"] = [start] * (steps + 1)
                    return violated(
                        f"layer {index} grew from {curve[0]} entries after the prefill to {curve[-1]} after {steps} "
                        f"decoding steps; the paper's rule keeps a fixed size ({start}) over at least {MIN_STEPS} steps",
                        start, curve[-1], gap=(curve[-1] - start) / max(1, start), figure=figure, layer=index,
                        step=steps)
            return holds(f"every layer holds {curves[0][-1]} entries, unchanged over the last "
                         f"{_longest_flat(curves[0])} of {steps} decoding steps", curves[0][-1], curves[0][-1])
        if mode == INTERVAL:
            interval = setting(run, ctx.params, "compression_interval")
            target_size = setting(run, ctx.params, "target_size")
            kept_share = setting(run, ctx.params, "target_compression_ratio")
            if isinstance(interval, int) and interval > steps:
                return not_applicable(f"compression_interval {interval} exceeds the {steps} decoding steps")
            for index, curve in enumerate(curves):
                drops = [t for t in range(1, len(curve)) if curve[t] < curve[t - 1]]
                if not drops:
                    return violated(f"layer {index} was never compressed in {steps} decoding steps (it grew from "
                                    f"{curve[0]} to {curve[-1]} entries; compression_interval {interval})",
                                    "compressed", curve[-1], gap=1.0, figure=figure, layer=index)
                if isinstance(kept_share, float):  # a fraction of every token seen: prompt plus generated
                    seen = run.layers[index].original_length + drops[0]
                    target = max(1, int(seen * (1 - kept_share)))
                else:
                    target = target_size if isinstance(target_size, int) else None
                if target is not None and curve[drops[0]] != target:
                    return violated(f"layer {index} was compressed to {curve[drops[0]]} entries at step {drops[0]}; "
                                    f"target_size is {target}", target, curve[drops[0]],
                                    gap=abs(curve[drops[0]] - target) / max(1, target), figure=figure,
                                    layer=index, step=drops[0])
            return holds(f"every layer is compressed while decoding (layer 0 at steps "
                         f"{', '.join(str(t) for t in range(1, len(curves[0])) if curves[0][t] < curves[0][t - 1])})",
                         interval, interval)
        evicting = [index for index, curve in enumerate(curves) if curve[-1] < curve[0] + steps]
        if not evicting:
            return violated(f"no layer evicted an entry in {steps} decoding steps (layer 0 grew from {curves[0][0]} "
                            f"to {curves[0][-1]}); the paper's rule evicts while decoding", curves[0][0],
                            curves[0][-1], gap=1.0, figure=figure, layer=0)
        return holds(f"{len(evicting)} of {len(curves)} layers evicted entries while decoding (layer {evicting[0]}: "
                     f"{curves[evicting[0]][-1]} entries after {steps} steps, not {curves[evicting[0]][0] + steps})",
                     curves[evicting[0]][0] + steps, curves[evicting[0]][-1])

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """Compression while decoding, by the claimant's mode (PARAMS["mode"]), over DECODE_STEPS greedy steps:
    fixed-size: every layer's cache length stays the same over at least 5 consecutive steps;
    interval: every layer is compressed at least once, to the press's target_size (or target_compression_ratio);
    evicts: some layer holds fewer entries after the last step than after the prefill plus the steps."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED), decode_steps=DECODE_STEPS)
    curves = [list(curve) for curve in zip(*run.lengths)]  # per layer: after the prefill, then after each step
    steps = len(curves[0]) - 1
    mode = PARAMS.get("mode", "fixed-size")
    if mode == "fixed-size":
        for layer, curve in enumerate(curves):
            flat = longest = 0
            for before, after in zip(curve, curve[1:]):
                flat = flat + 1 if after == before else 0
                longest = max(longest, flat)
            if longest < 5:
                return (False, f"a fixed cache size over at least 5 of the {steps} decoding steps",
                        f"layer {layer}: {curve[0]} entries after the prefill, then {curve[1:]}")
        return True, "a fixed cache size over at least 5 steps", f"layer 0: {curves[0]}"
    if mode == "interval":
        target = setting(press, "target_size")
        share = setting(press, "target_compression_ratio")
        for layer, curve in enumerate(curves):
            drops = [t for t in range(1, len(curve)) if curve[t] < curve[t - 1]]
            if not drops:
                return False, "compressed while decoding", f"layer {layer} grew: {curve}"
            if share is not None:  # a share of every token seen: the prompt and those generated
                target = max(1, int((run.keys[layer].shape[2] + drops[0]) * (1 - share)))
            if target is not None and curve[drops[0]] != target:
                return False, f"{target} entries after a compression", f"layer {layer}: {curve}"
        return True, "every layer compressed while decoding", f"layer 0: {curves[0]}"
    evicting = [layer for layer, curve in enumerate(curves) if curve[-1] < curve[0] + steps]
    return bool(evicting), "some layer evicts while decoding", f"layer 0: {curves[0]}; evicting layers {evicting}"
''')


def _longest_flat(curve: list[int]) -> int:
    """The longest run of consecutive decoding steps over which the length did not change."""
    best = run = 0
    for t in range(1, len(curve)):
        run = run + 1 if curve[t] == curve[t - 1] else 0
        best = max(best, run)
    return best
