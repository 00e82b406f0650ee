"""Mechanism ``head-streaming``: some heads keep everything, the others only their sinks and recent tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import CheckContext, Claimant, Mechanism, RunResult, holds, not_applicable, row_name, setting, \
    spans, violated

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class HeadStreaming(Mechanism):
    """
    DuoAttention splits the heads: retrieval heads keep the whole cache, streaming heads keep only
    ``sink`` initial and ``recent`` recent tokens. Which heads stream is learned (gate values per layer
    and KV head); how many stream is the press's ``head_compression_ratio`` of all heads: the
    ``round(σ · heads)`` heads with the lowest gates.

    Invariant, per prefill longer than ``sink + recent``, over every layer, batch row and KV head:

    * a head keeps either every position (retrieval) or exactly ``0 … sink − 1`` and
      ``L − recent … L − 1`` (streaming);
    * ``round(σ × layers × KV heads)`` heads stream, the same on every row.

    The gate values themselves are learned (a stand-in replaces them offline): which heads stream is
    not judged. Tolerance: none.
    """

    id = "head-streaming"
    name = "retrieval and streaming heads"
    title = "each head keeps all, or only its sinks and recent tokens; the stated share of heads streams"
    order = 72
    papers = {
        "duoattention": Claimant("Section 3 and the authors' code (mit-han-lab/duo-attention duo_attn/utils.py: the "
                                 "round(sparsity x heads) lowest gates stream; streaming heads keep sink and recent "
                                 "tokens, 128 and 256 in the released patterns)",
                                 {"sink_size": 128, "recent_size": 256}),
    }
    facts = ("sink_size", "recent_size", "head_compression_ratio")

    VALID = [
        '''
"""DuoAttention (arXiv 2410.10819) style: half the heads stream, by a fixed pattern."""
from dataclasses import dataclass
import torch
from kvpress import BasePress


@dataclass
class HalfStreamingPress(BasePress):
    """Head 0 of every layer keeps its first 4 and last 16 tokens (masked), head 1 keeps everything."""

    head_compression_ratio: float = 0.5
    sink_size: int = 4
    recent_size: int = 16

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        masked = torch.zeros_like(keys[..., 0], dtype=torch.bool)
        masked[:, 0, self.sink_size : -self.recent_size] = True
        module.masked_key_indices = torch.nonzero(masked, as_tuple=True)
        return keys, values
''',
    ]
    INVALID = [
        '''
"""DuoAttention (arXiv 2410.10819) in name only: the streaming heads lose their sinks."""
from dataclasses import dataclass
import torch
from kvpress import BasePress


@dataclass
class SinklessStreamingHeadPress(BasePress):
    """Head 0 of every layer keeps only its last 16 tokens (masked): no sink."""

    head_compression_ratio: float = 0.5
    sink_size: int = 4
    recent_size: int = 16

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        masked = torch.zeros_like(keys[..., 0], dtype=torch.bool)
        masked[:, 0, : -self.recent_size] = True
        module.masked_key_indices = torch.nonzero(masked, as_tuple=True)
        return keys, values
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        sink = setting(run, ctx.params, "sink_size")
        recent = setting(run, ctx.params, "recent_size")
        share = setting(run, ctx.params, "head_compression_ratio")
        if not all(isinstance(v, int) for v in (sink, recent)) or not isinstance(share, (int, float)):
            return not_applicable("the press states no sink, recent size or share of streaming heads")
        layers = [layer for layer in run.layers if layer.original_length > sink + recent and layer.exact]
        if not layers:
            return not_applicable(f"the prompt is not longer than sink + recent ({sink} + {recent})")
        streaming_rows: list[int] = []
        for row in range(run.batch):
            count = 0
            for index, layer in enumerate(run.layers):
                if layer not in layers or row >= len(layer.kept):
                    continue
                length = layer.original_length
                streaming = tuple(range(sink)) + tuple(range(length - recent, length))
                for head, kept in enumerate(layer.kept[row]):
                    if len(kept) == length:
                        continue
                    if kept != streaming:
                        extra = sorted(set(kept) ^ set(streaming))
                        return violated(f"layer {index}{row_name(row, run.batch)} head {head} keeps {len(kept)} of "
                                        f"{length} positions: neither all (a retrieval head) nor exactly the first "
                                        f"{sink} and the last {recent} (a streaming head); off by {spans(extra)}",
                                        len(streaming), len(kept), gap=len(extra) / length, layer=index, head=head)
                    count += 1
            streaming_rows.append(count)
        heads = sum(len(layer.kept[0]) for layer in layers)
        expected = round(share * heads)
        if any(count != expected for count in streaming_rows):
            return violated(f"{streaming_rows[0]} of {heads} heads stream; head_compression_ratio {share:g} makes "
                            f"{expected} stream", expected, streaming_rows[0], gap=abs(streaming_rows[0] - expected) / heads)
        return holds(f"{expected} of {heads} heads stream (exactly the first {sink} and the last {recent} positions), "
                     "the others keep everything", expected, expected)
