"""KVA101 reuse-missing: the paper claims layer-wise index reuse, the code has none."""

from __future__ import annotations

from collections.abc import Iterator

from ..model import LAYER_INDEX_REUSE, MISSING, Finding, Severity
from ..rule import PressContext, Rule


class ReuseMissing(Rule):
    """
    A press whose paper claims layer-wise index reuse (ChunkKV, arXiv 2502.00299,
    Algorithm 2) shows none of it: no layer-group arithmetic, no index cache kept across
    layers, and ``score()`` runs on every layer.

    Algorithm 2 groups layers by ``N_reuse``: only the first layer of a group
    (``layer_idx % N_reuse == 0``) scores and selects; the others gather with its indices.
    Reading ``layer_idx`` only to log it, or to leave the first layers uncompressed, is
    not reuse. Nor is state kept per layer (a dict keyed by the layer's own index: step
    counters, running sums, masks refreshed while decoding), nor blending another layer's
    scores into a layer's own while every layer still scores: the message says which.

    What to do: implement Algorithm 2 (see ``kvaudit.reference.ChunkKVReusePress``), or stop
    citing the mechanism and say in the docstring that the press does not reuse indices.
    """

    id = "KVA101"
    name = "reuse-missing"
    severity = Severity.ERROR
    claim = LAYER_INDEX_REUSE
    message = "the cited paper claims layer-wise index reuse, but the press has none"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVReuse(BasePress):
    """ChunkKV (arXiv 2502.00299) with layer-wise index reuse."""

    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.indices = scores.topk(8, dim=-1).indices
        indices = self.indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
from dataclasses import dataclass
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class SnapLike(ScorerPress):
    """SnapKV (arXiv 2404.14469) claims no reuse: nothing to report."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return keys.norm(dim=-1)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVNoReuse(BasePress):
    """ChunkKV: https://arxiv.org/abs/2502.00299"""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
import logging
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress

logger = logging.getLogger(__name__)


@dataclass
class ChunkKVLogsLayer(BasePress):
    """Decoy: reads layer_idx only to log it. Paper: ChunkKV."""

    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        logger.debug("compressing layer %d", module.layer_idx)
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
from collections import defaultdict
from dataclasses import dataclass, field
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVPerLayerSteps(BasePress):
    """Decoy for ChunkKV (arXiv 2502.00299): per-layer step counters, every layer scores itself."""

    press: ScorerPress = None
    interval: int = 8
    steps: dict = field(default_factory=lambda: defaultdict(int))
    kept: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer_idx = module.layer_idx
        self.steps[layer_idx] += 1
        if self.steps[layer_idx] >= self.interval or layer_idx not in self.kept:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.kept[layer_idx] = scores.topk(8, dim=-1).indices
            self.steps[layer_idx] = 0
        indices = self.kept[layer_idx]
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
from dataclasses import dataclass, field
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVBlendsPrevious(BasePress):
    """Decoy for ChunkKV (arXiv 2502.00299): mixes 0.2x the previous layer's scores into its own."""

    press: ScorerPress = None
    previous: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        layer_idx = module.layer_idx
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        earlier = self.previous.get(layer_idx - 1)
        if earlier is not None:
            scores = 0.8 * scores + 0.2 * earlier
        self.previous[layer_idx] = scores
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if ctx.reuse is None or ctx.reuse.verdict != MISSING:
            return
        claim = next(c for c in ctx.claims if c.id == LAYER_INDEX_REUSE)
        sites = ctx.reuse.unguarded_scores
        line = ctx.line_in_press_file(sites[0].source, sites[0].node) if sites else ctx.press.line
        where = f"`{sites[0].call}` runs on every layer" if sites else "no score() call is guarded by layer position"
        why = "".join(f"; {note}" for note in ctx.reuse.notes)
        yield self.finding(ctx, line, f"{claim.holds(ctx.press.name)} layer-wise index reuse, but has none: {where}; "
                           f"no layer-group check, reuse parameter or index cache{why}",
                           node=sites[0].node if sites else None, source=sites[0].source if sites else None)
