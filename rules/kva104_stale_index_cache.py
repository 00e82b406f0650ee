"""KVA104 stale-index-cache: cached indices that nothing refreshes for a new sequence."""

from __future__ import annotations

from collections.abc import Iterator

from ..model import LAYER_INDEX_REUSE, Finding, Severity
from ..rule import PressContext, Rule


class StaleIndexCache(Rule):
    """
    Follower layers read indices cached on the press, but every write to that cache
    happens only when the cache is empty (``if self.indices is None``, ``if group not in
    self.cache``) and nothing clears it. The first sequence fills it; every later
    sequence, of any length or batch size, reuses the first one's indices.

    What to do: write the cache unconditionally on group-leader layers, or clear it when
    a new prefill starts (for example on layer 0).
    """

    id = "KVA104"
    name = "stale-index-cache"
    severity = Severity.WARNING
    claim = LAYER_INDEX_REUSE
    message = "an index cache read on follower layers is never refreshed for a new sequence"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVReuse(BasePress):
    """ChunkKV (arXiv 2502.00299): the leader overwrites the cache every prefill."""

    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass, field
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVGroupDict(BasePress):
    """ChunkKV (arXiv 2502.00299) with a per-group dict that is never cleared."""

    press: ScorerPress = None
    n_reuse: int = 2
    cache: dict = field(default_factory=dict)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        group = module.layer_idx // self.n_reuse
        if group not in self.cache:
            self.cache[group] = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        indices = self.cache[group]
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVOnce(BasePress):
    """ChunkKV (arXiv 2502.00299): scores once, then reuses forever."""

    press: ScorerPress = None
    indices: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.indices is None:
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if ctx.reuse is None:
            return
        for attr, read in ctx.reuse.stale_caches:
            yield self.finding(ctx, ctx.line_in_press_file(read.source, read.node),
                               f"{ctx.press.name}: `self.{attr}` is read on follower layers but only filled when "
                               f"empty and never cleared, so a new sequence reuses the previous one's indices",
                               node=read.node, source=read.source)
