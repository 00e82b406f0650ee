"""KVA202 paper-default-mismatch: a constructor default differs from the cited paper's."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libcst as cst
else:  # libcst is imported on first use (start-up cost)
    from ..lazy_libcst import cst

from ..analysis.reuse import FieldDecl, constructor_fields
from ..claims import find_paper

try:  # a press that cites nothing inherits its base's paper (and defaults)
    from ..claims import find_paper_in_hierarchy
except ImportError:  # pragma: no cover
    find_paper_in_hierarchy = None
from ..model import Finding, Severity
from ..rule import PressContext, Rule

_MISSING = object()


def field_default(decl: FieldDecl) -> object:
    """The literal default of a dataclass field or ``__init__`` parameter; ``_MISSING`` if none or not literal."""
    node = decl.node
    value = node.value if isinstance(node, cst.AnnAssign) else node.default if isinstance(node, cst.Param) else None
    if value is None:
        return _MISSING
    # dataclasses.field(default=...)
    if isinstance(value, cst.Call) and isinstance(value.func, (cst.Name, cst.Attribute)):
        name = value.func.value if isinstance(value.func, cst.Name) else value.func.attr.value
        if name == "field":
            default = next((a.value for a in value.args if a.keyword and a.keyword.value == "default"), None)
            if default is None:
                return _MISSING
            value = default
    try:
        return ast.literal_eval(decl.source.code_for_node(value).strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


def same_value(ours: object, paper: object) -> bool:
    """Equal as configuration values: 10 == 10.0, but True is not 1."""
    if isinstance(ours, bool) or isinstance(paper, bool):
        return isinstance(ours, bool) and isinstance(paper, bool) and ours is paper
    if isinstance(ours, (int, float)) and isinstance(paper, (int, float)):
        return ours == paper
    return type(ours) is type(paper) and ours == paper


class PaperDefaultMismatch(Rule):
    """
    A constructor default of the press differs from the value the paper it cites uses.
    Anyone who builds the press with its defaults and compares with the paper's numbers
    runs a different configuration. kvpress's ChunkKVPress (0.5.5) defaults
    ``chunk_length`` to 20; the ChunkKV paper (arXiv 2502.00299) uses chunks of 10 tokens.

    The paper's defaults live next to its claims in the registry (``rules/papers.toml``,
    ``[<paper>.defaults]``), so a new paper needs only data. Fields are matched by name; a
    default that is not a literal, or a paper default the press has no field for, is not
    compared (a missing reuse parameter is KVA101's business).

    Severity: warning. A different default is a choice, not a bug, but it must be a visible
    one: say it in the docstring, or take the paper's value.
    """

    id = "KVA202"
    name = "paper-default-mismatch"
    severity = Severity.WARNING
    message = "a constructor default differs from the value the cited paper uses"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PaperChunks(BasePress):
    """ChunkKV (arXiv 2502.00299) with the paper's chunk length."""

    press: ScorerPress = None
    chunk_length: int = 10
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
        '''
from dataclasses import dataclass
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class UncitedChunks(ScorerPress):
    """Cites no paper: its defaults are its own."""

    chunk_length: int = 20

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
class WideChunks(BasePress):
    """ChunkKV (arXiv 2502.00299), but with chunks twice as long as the paper's."""

    press: ScorerPress = None
    chunk_length: int = 20
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
        '''
from kvpress.presses.base_press import BasePress


class InitChunks(BasePress):
    """ChunkKV: https://arxiv.org/abs/2502.00299 (defaults in __init__)."""

    def __init__(self, press=None, chunk_length: int = 10, n_reuse: int = 4):
        self.press, self.chunk_length, self.n_reuse = press, chunk_length, n_reuse

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, self.indices), values.gather(2, self.indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        # find_paper, not the claims: a paper may claim no mechanism and still publish defaults.
        cited = (find_paper_in_hierarchy(ctx.press, ctx.index) if find_paper_in_hierarchy is not None
                 else find_paper(ctx.press))
        if cited is None or not cited[0].defaults:
            return
        paper = cited[0]
        for decl in constructor_fields(ctx.index, ctx.press):
            if decl.name not in paper.defaults:
                continue
            owner = decl.owner
            if owner is not ctx.press and owner.is_target and ctx.index.is_press(owner):
                continue  # that press of the run is reported for its own field
            ours, theirs = field_default(decl), paper.defaults[decl.name]
            if ours is _MISSING or same_value(ours, theirs):
                continue
            where = ""
            if decl.source is not ctx.source:
                where = f" (inherited from {owner.name}, {decl.source.display}:{decl.source.line_of(decl.node)})"
            yield self.finding(
                ctx, ctx.line_in_press_file(decl.source, decl.node),
                f"{ctx.press.name}.{decl.name} defaults to {ours!r}{where}, but {paper.label} uses "
                f"{theirs!r}: the press run with its defaults is not the paper's configuration",
                node=decl.node, source=decl.source,
            )
