"""KVA102 reuse-partial: some of Algorithm 2's machinery is there, not all of it."""

from __future__ import annotations

from collections.abc import Iterator

from ..model import LAYER_INDEX_REUSE, PARTIAL, Finding, Severity
from ..rule import PressContext, Rule


class ReusePartial(Rule):
    """
    A press claims layer-wise index reuse and holds part of it, but follower layers do
    not both skip ``score()`` and gather with their group leader's cached indices.

    Typical causes: a reuse parameter declared and never used; indices cached but
    ``score()`` still called on every layer (no saving); a cache with no layer-position
    guard (filled once, then reused by every later layer and sequence).

    What to do: guard every ``score()`` call with the group-leader test
    (``layer_idx % n_reuse == 0``) and have the other layers read the leader's indices.
    """

    id = "KVA102"
    name = "reuse-partial"
    severity = Severity.WARNING
    claim = LAYER_INDEX_REUSE
    message = "layer-wise index reuse is only partly implemented"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVReuse(BasePress):
    """ChunkKV (arXiv 2502.00299)."""

    press: ScorerPress = None
    share_every: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.share_every != 0:
            return keys.gather(2, self.kept), values.gather(2, self.kept)
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        self.kept = scores.topk(8, dim=-1).indices
        return keys.gather(2, self.kept), values.gather(2, self.kept)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVCachesButScores(BasePress):
    """Decoy for ChunkKV (arXiv 2502.00299): caches indices yet scores every layer."""

    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        if module.layer_idx % self.n_reuse == 0:
            self.indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVDeclaresOnly(BasePress):
    """Decoy for ChunkKV: declares n_reuse and never uses it."""

    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if ctx.reuse is None or ctx.reuse.verdict != PARTIAL:
            return
        sites = ctx.reuse.unguarded_scores
        line = ctx.line_in_press_file(sites[0].source, sites[0].node) if sites else ctx.press.line
        yield self.finding(ctx, line, f"{ctx.press.name}: layer-wise index reuse is only partly implemented: "
                           + "; ".join(ctx.reuse.gaps + ctx.reuse.notes),
                           node=sites[0].node if sites else None, source=sites[0].source if sites else None)
