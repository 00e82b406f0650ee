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
    not reuse.

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
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if ctx.reuse is None or ctx.reuse.verdict != MISSING:
            return
        claim = next(c for c in ctx.claims if c.id == LAYER_INDEX_REUSE)
        sites = ctx.reuse.unguarded_scores
        line = ctx.line_in_press_file(sites[0].source, sites[0].node) if sites else ctx.press.line
        where = f"`{sites[0].call}` runs on every layer" if sites else "no score() call is guarded by layer position"
        who = f"cites {claim.origin}, which claims" if claim.paper else f"is held ({claim.origin}) to"
        yield self.finding(ctx, line, f"{ctx.press.name} {who} layer-wise index reuse, but has none: {where}; "
                           "no layer-group check, reuse parameter or index cache")
