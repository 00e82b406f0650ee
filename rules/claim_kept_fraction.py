"""Mechanism ``kept-fraction``: a press keeps ``1 − compression_ratio`` of the cache, as it reports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..mechanism import (
    CheckContext,
    Claimant,
    Mechanism,
    ReproRule,
    RunResult,
    holds,
    layers_missing_rows,
    not_applicable,
    row_name,
    setting,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class KeptFraction(Mechanism):
    """
    kvpress's ``BasePress`` contract: ``compression_ratio`` is the "fraction of key-value pairs to
    remove". Every paper states its budget the same way, so the cache a press leaves must match
    the ratio it was given and the one it reports (presses that compute their ratio, such as
    SimLayerKV or DMS, report it after the prefill).

    Invariant, per run, with ``ρ`` the ratio the press reports after the prefill (else the one the
    run set) and ``L`` each layer's length before compression:

    * positions: the mean number of positions attention can still see (masked entries are
      dropped ones), over layers, rows and heads, is ``L(1 − ρ)``;
    * memory: the cache's keys and values hold ``1 − ρ`` of the elements they held before the press
      ran (a masked entry, a zeroed channel still take memory).

    Tolerance: one position for the rounding of ``int(L(1 − ρ))``. A press that keeps whole chunks of
    ``c = chunk_length`` tokens keeps a whole number of chunks: with ``B = L(1 − ρ)``, ``K`` chunks
    for ``K`` = ``⌊B/c⌋`` (Algorithm 1 of ChunkKV) or ``⌈B/c⌉``, the prompt's last chunk holding
    ``r = L mod c`` tokens. So every layer, row and head keeps ``K·c`` positions, or ``(K − 1)·c + r``
    when the short last chunk is among them; a press that also keeps its observe window of ``w``
    positions (Algorithm 1 keeps it beside the chunks) may keep up to ``w`` more. A press that instead
    scores each chunk of ``c`` positions on its own (``⌈L/c⌉`` ``score()`` calls on the layer, as FINCH's
    ChunkPress does) applies the ratio to each chunk: it keeps ``Σᵢ cᵢ(1 − ρ)`` rounded chunk by chunk,
    any count from ``Σᵢ ⌊cᵢ(1 − ρ)⌋`` to ``Σᵢ ⌈cᵢ(1 − ρ)⌉``. Any other count is not explained by the
    chunking and is a violation.
    """

    id = "kept-fraction"
    name = "the kept fraction"
    title = "the cache keeps 1 − compression_ratio, in positions and in memory, as the press reports"
    order = 90
    contracts = {"BasePress": Claimant("BasePress: compression_ratio is the fraction of key-value pairs to remove")}
    facts = ("compression_ratio", "chunk_length")
    diff_tolerance = 0.002  # expected/measured are fractions: one position of a 512-token prompt

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class PlainNormPress(ScorerPress):
    """Keeps int(L × (1 − compression_ratio)) positions, as kvpress's ScorerPress does."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress



@dataclass
class OverKeepingPress(ScorerPress):
    """Reports compression_ratio but keeps twice the budget it states."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.score(module, hidden_states, keys, values, attentions, kwargs)
        n_kept = min(keys.shape[2], 2 * max(1, int(keys.shape[2] * (1 - self.compression_ratio))))
        index = scores.topk(n_kept, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        reported = run.facts.get("compression_ratio")
        ratio = reported if isinstance(reported, (int, float)) and not isinstance(reported, bool) else run.ratio
        if ratio is None:
            return not_applicable("the press reports no compression_ratio")
        layers = [layer for layer in run.layers if layer.original_length]
        if not layers:
            return not_applicable("no layer was observed")
        lost = layers_missing_rows(run)
        if lost:  # a cache with fewer batch rows than the prompt: whole rows were dropped
            rows = len(run.layers[lost[0]].lengths)
            return violated(f"layer {lost[0]} holds {rows} of the {run.batch} batch rows after the prefill: whole rows "
                            "of the batch were dropped", run.batch, rows, gap=1.0, layer=lost[0])
        chunk = setting(run, {}, "chunk_length")
        chunked = isinstance(chunk, int) and not isinstance(chunk, bool) and 0 < chunk < layers[0].original_length
        if chunked:
            window = setting(run, {}, "window_size")
            window = window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else 0
            return self._whole_chunks(run, layers, ratio, chunk, window,
                                      "reports" if reported is not None else "was given")
        tolerance = 1
        seen = [n for layer in layers for row in layer.lengths for n in row]
        measured = sum(seen) / len(seen)
        length = sum(layer.original_length for layer in layers) / len(layers)
        expected = length * (1 - ratio)
        source = "reports" if reported is not None else "was given"
        if abs(measured - expected) > tolerance:
            return violated(
                f"the layers keep {measured:.1f} of {length:.0f} positions on average ({measured / length:.1%}); "
                f"the press {source} compression_ratio {ratio:g}, which gives {expected:.1f} ({1 - ratio:.1%})",
                round(1 - ratio, 4), round(measured / length, 4), gap=abs(measured - expected) / length)
        before = sum(layer.memory[0] for layer in layers)
        after = sum(layer.memory[1] for layer in layers)
        if before:
            kept = after / before
            if abs(kept - (1 - ratio)) * length > tolerance:
                return violated(
                    f"the cache still holds {kept:.1%} of its keys' and values' memory after the prefill, while "
                    f"the press {source} compression_ratio {ratio:g} ({1 - ratio:.1%} kept); attention sees "
                    f"{measured / length:.1%} of the positions", round(1 - ratio, 4), round(kept, 4),
                    gap=abs(kept - (1 - ratio)))
        return holds(f"the layers keep {measured:.1f} of {length:.0f} positions ({measured / length:.1%}) and as much "
                     f"memory, as compression_ratio {ratio:g} gives", round(1 - ratio, 4), round(measured / length, 4))

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """kvpress's BasePress contract: compression_ratio is the fraction of key-value pairs removed. With r the ratio
    the press reports after the prefill, every batch row stays, attention sees L(1 - r) positions on average
    (masked entries are dropped ones), and the cache holds 1 - r of its keys' and values' memory; one position
    of tolerance. A press that keeps whole chunks of c keeps K*c positions (or (K-1)*c + the short last chunk),
    K = floor or ceil of L(1 - r)/c, plus at most its observe window; one that scores each chunk on its own
    (ceil(L/c) score() calls on a layer) keeps 1 - r of each chunk, rounded chunk by chunk."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    ratio = getattr(press, "compression_ratio", None)
    if ratio is None:
        return None, "1 - compression_ratio kept", "the press reports no compression_ratio: the rule does not apply"
    layers = range(len(run.keys))
    for layer in layers:
        rows = run.cache.layers[layer].keys.shape[0]
        if rows != BATCH:
            return False, f"{BATCH} batch rows in every layer", f"layer {layer} holds {rows}: whole rows were dropped"
    length = TOKENS
    seen = [visible(run, layer, run.masked[layer], row, head) for layer in layers for row in range(BATCH)
            for head in range(run.keys[layer].shape[1])]
    chunk, window = setting(press, "chunk_length"), setting(press, "window_size", default=0)
    if chunk is not None and 0 < chunk < length:  # whole chunks: each count must be explained by the chunking
        budget, tail = length * (1 - ratio), length % chunk or chunk
        if run.score_calls[0] == math.ceil(length / chunk) > 1:  # each chunk scored, so compressed, on its own
            sizes = [min(chunk, length - start) for start in range(0, length, chunk)]
            low = sum(math.floor(n * (1 - ratio)) for n in sizes)
            allowed = set(range(low, sum(math.ceil(n * (1 - ratio)) for n in sizes) + 1))
            how = f"each chunk of {chunk} keeps its own {1 - ratio:.0%}"
        else:
            allowed = {n for k in {math.floor(budget / chunk), math.ceil(budget / chunk)} if k > 0
                       for n in (k * chunk, (k - 1) * chunk + tail)}
            how = f"whole chunks of {chunk} of {budget:.1f}"
        odd = [n for n in seen if n not in allowed and not min(allowed) <= n <= max(allowed) + window and n < length]
        expected = f"{sorted(allowed)} positions ({how}), plus up to {window}"
        return not odd, expected, f"counts per layer, row and head: {sorted(set(seen))}"
    mean = sum(seen) / len(seen)
    expected = f"{length * (1 - ratio):.1f} of {length} positions ({1 - ratio:.1%}), compression_ratio {ratio:g}"
    if abs(mean - length * (1 - ratio)) > 1:
        return False, expected, f"{mean:.1f} of {length} positions on average ({mean / length:.1%})"
    before = sum(run.keys[i].numel() + run.values[i].numel() for i in layers)
    after = sum(run.cache.layers[i].keys.numel() + run.cache.layers[i].values.numel() for i in layers)
    observed = f"{mean:.1f} positions on average, and {after / before:.1%} of the keys' and values' memory"
    return abs(after / before - (1 - ratio)) * length <= 1, f"{expected}, in memory too", observed
''')

    @staticmethod
    def _whole_chunks(run: RunObservation, layers: list, ratio: float, chunk: int, window: int,
                      source: str) -> RunResult:
        """Each layer, row and head keeps a whole number of chunks of the budget (see the class docstring)."""
        measured_all: list[int] = []
        partitioned = False
        for index, layer in enumerate(run.layers):
            if not layer.original_length:
                continue
            length = layer.original_length
            budget = length * (1 - ratio)
            tail = length % chunk or chunk
            if layer.score_calls == math.ceil(length / chunk) > 1:  # each chunk scored, so compressed, on its own
                partitioned = True
                low, high = per_chunk_range(length, chunk, ratio)
                allowed = set(range(low, high + 1))
                gives = f"compresses each chunk of {chunk} on its own, which gives {low}" + (
                    f"–{high}" if high > low else "")
            else:
                allowed = {count for k in {math.floor(budget / chunk), math.ceil(budget / chunk)} if k > 0
                           for count in (k * chunk, (k - 1) * chunk + tail)}
                gives = f"keeps whole chunks of {chunk}, which gives {' or '.join(str(n) for n in sorted(allowed))}"
            for row, heads in enumerate(layer.lengths):
                for head, kept in enumerate(heads):
                    measured_all.append(kept)
                    with_window = window and min(allowed) <= kept <= max(allowed) + window
                    if kept not in allowed and not with_window and kept < length:
                        beside = f", plus up to {window} of its observe window" if window else ""
                        return violated(
                            f"layer {index}{row_name(row, run.batch)} head {head} keeps {kept} of {length} positions; "
                            f"the press {source} compression_ratio {ratio:g} (budget {budget:.1f}) and {gives}{beside}: "
                            "the count is not explained by the chunking", sorted(allowed), kept,
                            gap=min(abs(kept - n) for n in allowed) / length, layer=index, head=head)
        if not measured_all:
            return not_applicable("no layer was observed")
        length = layers[0].original_length
        mean = sum(measured_all) / len(measured_all)
        beside = f" and its observe window of {window}" if window else ""
        how = (f"keeps 1 − compression_ratio {ratio:g} of each chunk of {chunk}, which it compresses on its own"
               if partitioned else f"keeps whole chunks of {chunk} of the budget of compression_ratio {ratio:g}{beside}")
        return holds(f"every layer {how} ({mean:.1f} of {length} positions on average, {mean / length:.1%}: "
                     "explained by the chunking)", round(1 - ratio, 4), round(mean / length, 4))


def per_chunk_range(length: int, chunk: int, ratio: float) -> tuple[int, int]:
    """The positions kept when each chunk of ``chunk`` (the last one shorter) keeps its own ``1 − ratio``, rounded
    down in every chunk and up in every chunk: the least and the most a chunk-by-chunk rounding can give."""
    sizes = [min(chunk, length - start) for start in range(0, length, chunk)]
    return sum(math.floor(n * (1 - ratio)) for n in sizes), sum(math.ceil(n * (1 - ratio)) for n in sizes)
