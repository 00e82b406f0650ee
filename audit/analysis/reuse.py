"""Evidence and verdict for the ``layer-index-reuse`` claim (ChunkKV's Algorithm 2).

Algorithm 2: layers form groups of ``N_reuse``; only a group's first layer scores and
selects, the others gather with its indices. In code that needs four things, one per
evidence kind: a reuse parameter in layer-group arithmetic, a branch on the layer's
position, an index cache kept on the press across calls, and ``score()`` guarded so that
follower layers never reach it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import libcst as cst

from .flow import SCORE, Branch, Cond, FlowFacts, Read, ScoreSite, Store, attrs_in
from .index import ClassInfo, ProjectIndex
from ..model import (
    GUARDED_SCORE,
    IMPLEMENTED,
    INDEX_CACHE,
    LAYER_CHECK,
    MISSING,
    PARTIAL,
    REUSE_PARAMETER,
    Evidence,
)
from ..source import SourceFile, one_line

# Stores here happen once per press object, not once per sequence: they refresh nothing.
_CONSTRUCTION = ("__init__", "__post_init__")


def snippet(source: SourceFile, node: cst.CSTNode) -> str:
    """One line of source for ``node``, shortened for messages."""
    return one_line(source.module.code_for_node(node))


@dataclass(frozen=True)
class FieldDecl:
    """A constructor field: a dataclass field or an ``__init__`` parameter."""

    name: str
    node: cst.CSTNode
    source: SourceFile
    is_int: bool


@dataclass
class ReuseAnalysis:
    """What the flow pass says about layer-wise index reuse, for one press."""

    verdict: str
    evidence: list[Evidence]
    reuse_fields: list[str]
    unused_int_fields: list[FieldDecl]
    caches: list[str]
    guarded_scores: list[ScoreSite]
    unguarded_scores: list[ScoreSite]
    stale_caches: list[tuple[str, Read]]
    gaps: list[str] = field(default_factory=list)  # what a partial implementation lacks


def constructor_fields(index: ProjectIndex, press: ClassInfo) -> list[FieldDecl]:
    fields: dict[str, FieldDecl] = {}
    for cls in reversed(index.mro(press)):
        for statement in cls.node.body.body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                        annotation = cls.source.module.code_for_node(small.annotation.annotation)
                        if "ClassVar" in annotation:
                            continue
                        is_int = annotation == "int" or isinstance(small.value, cst.Integer)
                        fields[small.target.value] = FieldDecl(small.target.value, small, cls.source, is_int)
            elif isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__":
                for param in statement.params.params[1:]:
                    annotation = param.annotation and cls.source.module.code_for_node(param.annotation.annotation)
                    is_int = annotation == "int" or isinstance(param.default, cst.Integer)
                    fields[param.name.value] = FieldDecl(param.name.value, param, cls.source, is_int)
    return list(fields.values())


class _EvidenceBuilder:
    def __init__(self, press: ClassInfo) -> None:
        self.press = press
        self.items: list[Evidence] = []

    def add(self, kind: str, source: SourceFile, node: cst.CSTNode, detail: str) -> None:
        path = None if source is self.press.source else source.display
        self.items.append(Evidence(kind=kind, line=source.line_of(node), detail=detail, path=path))


# An unused field has no behaviour to analyse: only its name and documentation can say
# that it was meant to set layer groups.
_LAYER_KNOB_WORDS = re.compile(r"reuse|share|shar(ed|ing)|layer|group", re.IGNORECASE)


def _described_as_layer_knob(press: ClassInfo, name: str) -> bool:
    if _LAYER_KNOB_WORDS.search(name):
        return True
    docstring = ast.get_docstring(press.tree) or ""
    entry = re.search(rf"^\s*{re.escape(name)}\s*:.*\n((?:\s{{2,}}.*\n?)*)", docstring, re.MULTILINE)
    return bool(entry and _LAYER_KNOB_WORDS.search(entry.group(0)))


def _guard_of(site: ScoreSite) -> Cond | None:
    """The innermost layer-group condition a score() call lies under, if any."""
    return next((c for c in reversed(site.context) if c.is_group_test), None)


def _under(site_context: tuple[Cond, ...], guard: Cond) -> bool:
    return any(c.node is guard.node and c.taken == guard.taken for c in site_context)


def _is_lazy(store: Store, attr: str) -> bool:
    # A store reached only when the cache itself is empty/missing fills it once.
    return any(attr in attrs_in(c.labels) for c in store.context)


def analyse_reuse(index: ProjectIndex, press: ClassInfo, facts: FlowFacts) -> ReuseAnalysis:
    """Turn the flow facts of ``press`` into evidence and a verdict."""
    evidence = _EvidenceBuilder(press)
    fields = constructor_fields(index, press)
    field_names = {f.name for f in fields}

    reuse_fields: list[str] = []
    for arithmetic in facts.arithmetic:
        used = sorted(arithmetic.attrs & field_names)
        for name in used:
            evidence.add(REUSE_PARAMETER, arithmetic.source, arithmetic.node,
                         f"field `{name}` sets the layer group: `{snippet(arithmetic.source, arithmetic.node)}`")
        reuse_fields.extend(n for n in used if n not in reuse_fields)

    read_attrs = {r.attr for r in facts.reads}
    unused = [f for f in fields if f.is_int and f.name not in read_attrs and f.source is press.source
              and _described_as_layer_knob(press, f.name)]
    for decl in unused:
        evidence.add(REUSE_PARAMETER, decl.source, decl.node,
                     f"integer field `{decl.name}` is declared but never used")

    group_branches = [b for b in facts.branches if b.labels & {"group"}]
    for branch in facts.branches:
        kind = "layer-group test" if branch in group_branches else "plain layer-position test, not a reuse group"
        evidence.add(LAYER_CHECK, branch.source, branch.node, f"`{snippet(branch.source, branch.node)}` ({kind})")

    score_stores = [s for s in facts.stores if SCORE in s.labels and not s.is_reset]
    value_reads = [r for r in facts.reads if not r.state_only]
    caches = sorted({s.attr for s in score_stores} & {r.attr for r in value_reads})
    for attr in caches:
        store = next(s for s in score_stores if s.attr == attr)
        evidence.add(INDEX_CACHE, store.source, store.node,
                     f"`self.{attr}` keeps selected indices or scores across calls")

    guarded = [s for s in facts.score_sites if _guard_of(s) is not None]
    unguarded = [s for s in facts.score_sites if _guard_of(s) is None]
    for site in guarded:
        guard = _guard_of(site)
        side = "true" if guard.taken else "false"
        evidence.add(GUARDED_SCORE, site.source, site.node,
                     f"`{site.call}` runs only when `{snippet(guard.source, guard.node)}` is {side}")

    # Followers read the cache: a value read that the score() guard's leader side does not enclose.
    follower_reads = [
        read for read in value_reads if read.attr in caches
        and any(not _under(read.context, _guard_of(site)) for site in guarded)
    ]
    all_guarded = bool(facts.score_sites) and not unguarded
    implemented = all_guarded and bool(follower_reads)

    stale: list[tuple[str, Read]] = []
    for attr in caches:
        stores = [s for s in score_stores if s.attr == attr]
        refreshed = any(not _is_lazy(s, attr) for s in stores)
        reset = any(s.is_reset and s.attr == attr and s.method.rsplit(".", 1)[-1] not in _CONSTRUCTION for s in facts.stores)
        if stores and not refreshed and not reset:
            stale.append((attr, next(r for r in value_reads if r.attr == attr)))

    gaps = []
    if not reuse_fields:
        gaps.append("no constructor field sets the layer group (`layer_idx % n` or `// n`)")
    if not facts.score_sites:
        gaps.append("no score() call was found on the compression path")
    elif unguarded:
        lines = ", ".join(str(s.source.line_of(s.node)) for s in unguarded)
        gaps.append(f"score() at line {lines} is not behind a layer-group test, so follower layers still score")
    if not caches:
        gaps.append("no selected indices are kept on the press for later layers")
    elif guarded and not follower_reads:
        gaps.append("follower layers never read the cached indices")

    has_machinery = bool(reuse_fields or unused or caches or group_branches)
    verdict = IMPLEMENTED if implemented else PARTIAL if has_machinery else MISSING
    return ReuseAnalysis(
        verdict=verdict,
        evidence=evidence.items,
        reuse_fields=reuse_fields,
        unused_int_fields=unused,
        caches=caches,
        guarded_scores=guarded,
        unguarded_scores=unguarded,
        stale_caches=stale,
        gaps=gaps if verdict != IMPLEMENTED else [],
    )


__all__ = ["ReuseAnalysis", "analyse_reuse", "Branch", "constructor_fields", "snippet"]
