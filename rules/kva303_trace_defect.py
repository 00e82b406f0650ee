"""KVA303 trace-defect: the tracer saw the press crash, carry indices across prompts, or follow batch row 0."""

from __future__ import annotations

from ..model import Severity
from ..rule import Rule


class TraceDefect(Rule):
    """
    ``kvaudit check --trace`` (and ``kvaudit report``) ran the press on the tiny model and saw a
    dynamic defect, whatever its paper claims:

    * ``crash``: the press raised in a prefill or a decoding step (any exception, ``sys.exit()``
      and ``KeyboardInterrupt`` included), hung past ``--timeout``, died, went past
      ``--memory-limit`` or killed the tracer's worker;
    * ``stale-indices``: a later prompt kept the indices computed for an earlier one (a cache
      that is never refreshed for a new sequence), or failed on them while a fresh press passes;
    * ``batch-row-0``: the rows of a batch hold different prompts yet keep identical indices on
      every compressed layer: the selection follows row 0.

    The finding sits at the press's class line and says which prefill, ratio or decoding step
    showed it (docs/trace.md, "Defects"). A press that cannot run on the tiny model at all (it
    needs files of a named pretrained model, is abstract, or needs constructor arguments) has no
    defect: its claims are ``not-run``.

    What to do: fix the press (clear per-sequence state when a new prompt starts, select per batch
    row, handle batches and decoding), or trace it with ``--press`` as it is meant to be built.
    """

    id = "KVA303"
    name = "trace-defect"
    severity = Severity.ERROR
    message = "the press crashed, kept stale indices or followed batch row 0 on the tiny model"
    dynamic = True

    VALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class KeyNormPress(ScorerPress):
    """Keeps the keys with the largest norms, per batch row and head."""

    compression_ratio: float = 0.5

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class OnePromptAtATimePress(ScorerPress):
    """Crashes on a batch of two prompts (crash)."""

    compression_ratio: float = 0.5

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        if keys.shape[0] > 1:
            raise ValueError("one prompt at a time")
        return keys.norm(dim=-1)
''',
        '''
from dataclasses import dataclass
from kvpress import BasePress


@dataclass
class RowZeroPress(BasePress):
    """Chooses the kept positions from batch row 0 and applies them to every row (batch-row-0)."""

    compression_ratio: float = 0.5

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
        positions = keys[0].norm(dim=-1).mean(0).topk(n_kept).indices.sort().values
        index = positions[None, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
        '''
from dataclasses import dataclass, field
from kvpress import BasePress


@dataclass
class CachedIndicesPress(BasePress):
    """Keeps each layer's first selection forever: the next prompt reuses it (stale-indices)."""

    compression_ratio: float = 0.5
    _kept: dict = field(default_factory=dict, init=False, repr=False)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx not in self._kept:  # never cleared for a new prompt
            n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
            self._kept[module.layer_idx] = keys.norm(dim=-1).topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = self._kept[module.layer_idx][..., None].expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]
