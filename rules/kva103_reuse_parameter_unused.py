"""KVA103 reuse-parameter-unused: an integer field is declared and never read."""

from __future__ import annotations

from collections.abc import Iterator

from ..model import LAYER_INDEX_REUSE, Finding, Severity
from ..rule import PressContext, Rule


class ReuseParameterUnused(Rule):
    """
    A press that claims layer-wise index reuse declares an integer constructor field that
    no method acts on, and whose name or docstring entry speaks of layers, groups,
    sharing or reuse. A reuse parameter such as ``n_reuse`` that is only declared gives
    users a knob that does nothing: setting it changes no layer's behaviour. Uses that
    only look at the value count as no use: ``assert self.n_reuse >= 1``, ``if ...: raise``,
    a log line, ``__repr__``, or a copy into another field that nothing reads.

    An unused field has no behaviour to analyse, so here (and only here) kvaudit reads
    the name and the numpy-style docstring entry; a field that is used is judged by what
    the code does with it, whatever its name.

    A field the press inherits from a base in another file is reported at the press's class
    line (where it can be suppressed), naming the base and the line that declares it.

    What to do: use the field in the layer-group arithmetic (``layer_idx % n``), or remove it.
    """

    id = "KVA103"
    name = "reuse-parameter-unused"
    severity = Severity.WARNING
    claim = LAYER_INDEX_REUSE
    message = "an integer field of a reuse-claiming press is declared but never used"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVReuse(BasePress):
    """ChunkKV (arXiv 2502.00299)."""

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
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVDeclaresOnly(BasePress):
    """ChunkKV (arXiv 2502.00299), with a reuse knob that does nothing."""

    press: ScorerPress = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, indices), values.gather(2, indices)
''',
        '''
import logging
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress

logger = logging.getLogger(__name__)


@dataclass
class ChunkKVValidatesOnly(BasePress):
    """ChunkKV (arXiv 2502.00299): n_reuse is checked, logged and shown, never acted on."""

    press: ScorerPress = None
    n_reuse: int = 2

    def __post_init__(self):
        assert self.n_reuse >= 1, f"n_reuse must be positive, got {self.n_reuse}"
        if self.n_reuse > 64:
            raise ValueError(f"n_reuse={self.n_reuse} is larger than any model")

    def __repr__(self):
        return f"ChunkKVValidatesOnly(n_reuse={self.n_reuse})"

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        logger.debug("reuse groups of %d layers", self.n_reuse)
        indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if ctx.reuse is None:
            return
        for decl in ctx.reuse.unused_int_fields:
            uses = ctx.reuse.unused_uses.get(decl.name)
            how = f"only validated or shown ({uses}), never used" if uses else "declared but never used"
            # A field inherited from another file is reported at the press, where it can be
            # suppressed, naming where the base declares it.
            inherited = ("" if decl.source is ctx.press.source else
                         f" (inherited from {decl.owner.name}, {decl.source.display}:{decl.source.line_of(decl.node)})")
            yield self.finding(ctx, ctx.line_in_press_file(decl.source, decl.node),
                               f"{ctx.press.name}.{decl.name}{inherited} is {how}: it cannot set reuse groups",
                               node=decl.node, source=decl.source)
