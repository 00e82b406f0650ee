"""Evidence and verdict for the ``layer-index-reuse`` claim (ChunkKV's Algorithm 2).

Algorithm 2: layers form groups of ``N_reuse``; only a group's first layer scores and
selects, the others gather with its indices. In code that needs four things, one per
evidence kind: a reuse parameter in layer-group arithmetic, a branch on the layer's
position, an index cache that other layers read, and ``score()`` guarded so that
follower layers never reach it.

Research code names its groups in other ways too: a set of anchor layers (a constructor
field, a configuration value, a literal), equality with one layer (``layer_idx == 0``) or a
boundary (``layer_idx < self.first``). Such a test of the layer's position is a layer group
when its sides split the work: on one side layers score and select, on the other they read
the selection kept on the press (indices or a mask) without scoring. Data flow tells a fixed
set of layers from per-layer state: a container written while layers are compressed, keyed
by the layer's own index, is state; one only set up in the constructor is configuration.

Two things look like reuse and are not, and the evidence says so:
- state kept per layer: a container keyed by the layer's own index (a step counter, a
  running sum, a mask refreshed while decoding) is read back by the same layer only;
- another layer's scores blended into a layer's own (``0.8 * own + 0.2 * previous``):
  every layer still scores and selects for itself.
"""

from __future__ import annotations

import ast
import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libcst as cst
else:  # libcst is imported on first use (start-up cost)
    from ..lazy_libcst import cst

from .flow import (
    ANCHOR,
    GROUP,
    INDICES,
    KEY_GROUP,
    KEY_OTHER,
    KEY_OWN,
    KEY_SHARED,
    LAYER,
    MASK,
    OTHER,
    SCORE,
    SELECTION,
    Blend,
    Branch,
    Cond,
    FlowFacts,
    Read,
    ScoreSite,
    Site,
    Store,
    attrs_in,
    cross_in,
    own_in,
)
from .index import ClassInfo, ProjectIndex
from ..model import (
    CROSS_LAYER_READ,
    GUARDED_SCORE,
    IMPLEMENTED,
    INDEX_CACHE,
    LAYER_CHECK,
    MISSING,
    PARTIAL,
    PER_LAYER_STATE,
    REUSE_PARAMETER,
    Evidence,
)
from ..source import SourceFile, one_line

# Stores here happen once per press object, not once per sequence: they refresh nothing.
_CONSTRUCTION = ("__init__", "__post_init__")


def snippet(source: SourceFile, node: cst.CSTNode) -> str:
    """One line of source for ``node``, shortened for messages."""
    return one_line(source.code_for_node(node))


@dataclass(frozen=True)
class FieldDecl:
    """A constructor field: a dataclass field or an ``__init__`` parameter."""

    name: str
    node: cst.CSTNode
    source: SourceFile
    is_int: bool
    owner: ClassInfo  # the class that declares it



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
    # Why what looks like reuse is not: per-layer state, blended scores (for KVA101/KVA102 messages).
    notes: list[str] = field(default_factory=list)
    # field name -> how the value of an unused field is only looked at ("assert at line 30"); "" if never read
    unused_uses: dict[str, str] = field(default_factory=dict)


def constructor_fields(index: ProjectIndex, press: ClassInfo) -> list[FieldDecl]:
    """The fields of ``press``'s constructor, the nearest class's declaration winning."""
    fields: dict[str, FieldDecl] = {}
    for cls in reversed(index.mro(press)):
        fields.update((decl.name, decl) for decl in _declared_fields(cls))
    return list(fields.values())


# Per class, once per run: every press of a long chain lists its bases' fields again.
_DECLARED: weakref.WeakKeyDictionary[ClassInfo, tuple[FieldDecl, ...]] = weakref.WeakKeyDictionary()


def _declared_fields(cls: ClassInfo) -> tuple[FieldDecl, ...]:
    """The fields ``cls`` itself declares: annotated class attributes and ``__init__`` parameters."""
    if cls in _DECLARED:
        return _DECLARED[cls]
    found: list[FieldDecl] = []
    for statement in cls.node.body.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                    annotation = cls.source.code_for_node(small.annotation.annotation)
                    if "ClassVar" in annotation:
                        continue
                    is_int = annotation == "int" or isinstance(small.value, cst.Integer)
                    found.append(FieldDecl(small.target.value, small, cls.source, is_int, cls))
        elif isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__":
            for param in statement.params.params[1:]:
                annotation = param.annotation and cls.source.code_for_node(param.annotation.annotation)
                is_int = annotation == "int" or isinstance(param.default, cst.Integer)
                found.append(FieldDecl(param.name.value, param, cls.source, is_int, cls))
    _DECLARED[cls] = tuple(found)
    return _DECLARED[cls]


def _place(press: ClassInfo, source: SourceFile, node: cst.CSTNode) -> str:
    """``line 14`` in the press's own file, ``base.py:14`` in another (an inherited method)."""
    line = source.line_of(node)
    return f"line {line}" if source is press.source else f"{source.display}:{line}"


class _EvidenceBuilder:
    def __init__(self, press: ClassInfo) -> None:
        self.press = press
        self.items: list[Evidence] = []
        self._seen: set[Evidence] = set()

    def add(self, kind: str, source: SourceFile, node: cst.CSTNode, detail: str) -> None:
        path = None if source is self.press.source else source.display
        item = Evidence(kind=kind, line=source.line_of(node), detail=detail, path=path)
        if item not in self._seen:  # one site reached on several paths is one piece of evidence
            self._seen.add(item)
            self.items.append(item)


# An unused field has no behaviour to analyse: only its name and documentation can say
# that it was meant to set layer groups.
_LAYER_KNOB_WORDS = re.compile(r"reuse|share|shar(ed|ing)|layer|group", re.IGNORECASE)


def _described_as_layer_knob(press: ClassInfo, name: str) -> bool:
    if _LAYER_KNOB_WORDS.search(name):
        return True
    docstring = ast.get_docstring(press.tree) or ""
    entry = re.search(rf"^\s*{re.escape(name)}\s*:.*\n((?:\s{{2,}}.*\n?)*)", docstring, re.MULTILINE)
    return bool(entry and _LAYER_KNOB_WORDS.search(entry.group(0)))


def _guard_of(site: ScoreSite, groups: frozenset[int] = frozenset()) -> Cond | None:
    """The innermost layer-group condition a score() call lies under, if any: layer-group arithmetic,
    or one of ``groups`` (ids of the anchor-layer tests whose sides split selecting from reusing)."""
    return next((c for c in reversed(site.context) if c.is_group_test or id(c.node) in groups), None)


def _under(site_context: tuple[Cond, ...], guard: Cond) -> bool:
    return any(c.node is guard.node and c.taken == guard.taken for c in site_context)


def _sides(context: tuple[Cond, ...]) -> set[tuple[int, bool]]:
    return {(id(c.node), c.taken) for c in context}


def _is_lazy(store: Store, attr: str) -> bool:
    # A store reached only when the cache itself is empty/missing fills it once.
    return any(attr in attrs_in(c.labels) for c in store.context)


def _crosses(store: Store, read: Read) -> bool:
    """Whether ``read`` can see what ``store`` wrote on another layer."""
    if read.key in (KEY_GROUP, KEY_OTHER) or store.key == KEY_GROUP:
        return True  # a key built by group arithmetic, or another layer's index
    return store.key == KEY_SHARED and read.key == KEY_SHARED  # one slot for every layer


def _shown(attr: str) -> str:
    # Held objects' state is named `Class.attr` (see flow._Object).
    return f"`{attr}` (state of an object the press holds)" if "." in attr else f"`self.{attr}`"


def _held_data(stores: list[Store]) -> str:
    labels = frozenset().union(*(s.labels for s in stores)) if stores else frozenset()
    if INDICES in labels:
        return "selected indices"
    return "a selection mask" if MASK in labels else "scores" if SCORE in labels else "values"


def _key_text(site: Store | Read) -> str:
    return f" (key `{snippet(site.source, site.key_node)}`)" if site.key_node is not None else ""


class _Judge:
    """Builds the evidence and the verdict from the flow facts of one press."""

    def __init__(self, index: ProjectIndex, press: ClassInfo, facts: FlowFacts) -> None:
        self.press = press
        self.facts = facts
        self.evidence = _EvidenceBuilder(press)
        self.fields = constructor_fields(index, press)
        self.reads_of: dict[str, list[Read]] = {}
        for read in facts.reads:
            self.reads_of.setdefault(read.attr, []).append(read)
        # What happens while layers are compressed: configuration set up before, and global passes
        # run after the forward (a budget table computed from every layer), share nothing between layers.
        self.data_stores = [s for s in facts.stores if not s.is_reset and s.on_path
                            and s.method.rsplit(".", 1)[-1] not in _CONSTRUCTION]
        self.value_reads = [r for r in facts.reads if not r.state_only and r.on_path]
        self.stores_of: dict[str, list[Store]] = {}
        for store in self.data_stores:
            self.stores_of.setdefault(store.attr, []).append(store)
        self.counters = {s.attr for s in self.data_stores if s.is_increment and s.key == KEY_OWN}
        # State written while layers are compressed; the rest (set up in the constructor, or never
        # written) is configuration: a list of layers tested there is a fixed set, not per-layer state.
        self.state_attrs = {s.attr for s in facts.stores if s.on_path
                            and s.method.rsplit(".", 1)[-1] not in _CONSTRUCTION}
        self.notes: list[str] = []

    # -- reuse parameters --------------------------------------------------------------------
    def reuse_fields(self) -> list[str]:
        names = {f.name for f in self.fields}
        found: list[str] = []
        for arithmetic in self.facts.arithmetic:
            used = sorted(arithmetic.attrs & names)
            for name in used:
                self.evidence.add(REUSE_PARAMETER, arithmetic.source, arithmetic.node,
                                  f"field `{name}` sets the layer group: `{snippet(arithmetic.source, arithmetic.node)}`")
            found.extend(n for n in used if n not in found)
        return found

    def _is_used(self, attr: str, seen: frozenset[str] = frozenset()) -> bool:
        for read in self.reads_of.get(attr, ()):
            if read.sink is None:
                return True
            if read.sink.startswith("store:") and read.sink[6:] not in seen | {attr} and self._is_used(read.sink[6:], seen | {attr}):
                return True
        return False

    def unused_fields(self, reuse_fields: list[str]) -> tuple[list[FieldDecl], dict[str, str]]:
        """Integer fields described as a layer knob that nothing acts on: never read, or only
        validated (assert, raise), shown (repr, logging) or stored where nothing reads it."""
        unused, uses = [], {}
        for decl in self.fields:
            if (not decl.is_int or decl.name in reuse_fields
                    or self._is_used(decl.name) or not _described_as_layer_knob(self.press, decl.name)):
                continue
            looks = self.reads_of.get(decl.name, [])
            shown = sorted({f"{(r.sink or '').split(':')[0]} at {_place(self.press, r.source, r.node)}" for r in looks})
            uses[decl.name] = ", ".join(shown)
            if shown:
                detail = f"integer field `{decl.name}` is declared but only validated or shown ({uses[decl.name]}), never used"
            else:
                detail = f"integer field `{decl.name}` is declared but never used"
            self.evidence.add(REUSE_PARAMETER, decl.source, decl.node, detail)
            unused.append(decl)
        return unused, uses

    # -- state across layers -----------------------------------------------------------------
    def blended(self) -> dict[str, Blend]:
        """Slots other layers write whose values are mixed into this layer's own by arithmetic."""
        found: dict[str, list[Blend]] = {}
        for blend in self.facts.blends:
            stores = self.stores_of.get(blend.attr, [])
            if not blend.on_path or not stores or SELECTION & frozenset().union(*(s.labels for s in stores)):
                continue  # index arithmetic on shared indices (offsets) is not blending
            reads = [r for r in self.value_reads if r.attr == blend.attr]
            # Another layer's entry read by its index (`d[layer_idx - 1]`) and mixed into anything; or
            # scores other layers share, mixed into this layer's own score() result.
            if any(r.key == KEY_OTHER and _crosses(s, r) for s in stores for r in reads) or (blend.with_score and any(
                    SCORE in s.labels and _crosses(s, r) for s in stores for r in reads)):
                found.setdefault(blend.attr, []).append(blend)
        # Show the whole mix (`0.8 * own + 0.2 * previous`), not its inner `0.2 * previous`.
        return {attr: max(blends, key=lambda b: (b.with_score, len(snippet(b.source, b.node))))
                for attr, blends in found.items()}

    def caches(self, blended: dict[str, Blend]) -> list[str]:
        selection = [s for s in self.data_stores if s.labels & ({SCORE} | SELECTION)]
        found = sorted({s.attr for s in selection for r in self.value_reads
                        if r.attr == s.attr and _crosses(s, r) and self.fetches(s.attr, r)} - set(blended))
        for attr in found:
            store = next(s for s in selection if s.attr == attr)
            what = _held_data([s for s in selection if s.attr == attr])
            if store.key == KEY_SHARED:
                detail = f"{_shown(attr)} keeps {what} across calls"
            else:
                reader = next(r for r in self.value_reads if r.attr == attr and _crosses(store, r)
                              and self.fetches(attr, r))
                whose = "its layer group's" if KEY_GROUP in (store.key, reader.key) else "another layer's"
                detail = f"{_shown(attr)} keeps {what} that later layers read as {whose} entry{_key_text(reader)}"
            self.evidence.add(INDEX_CACHE, store.source, store.node, detail)
        return found

    def fetches(self, attr: str, read: Read) -> bool:
        """Whether ``read`` takes data out of ``attr``: for a slot published through calls on an object
        whose code the run lacks, only a fetch does (`self.stats is not None`, `self.stats.config`
        look at the object)."""
        return read.exchange or not all(s.exchange for s in self.stores_of.get(attr, ()))

    def cross_layer_reads(self, blended: dict[str, Blend], caches: list[str]) -> None:
        """Say what a read of another layer's entry shares: indices, or scores blended in."""
        for read in self.value_reads:
            stores = self.stores_of.get(read.attr, [])
            if not stores or not any(_crosses(s, read) for s in stores):
                continue
            blend = blended.get(read.attr)
            if blend is not None:
                what = _held_data(stores)
                whose = "another layer's" if read.key in (KEY_OTHER, KEY_GROUP) else "the previous layer's"
                self.evidence.add(
                    CROSS_LAYER_READ, read.source, read.node,
                    f"`{snippet(read.source, read.node)}` reads {whose} {what}{_key_text(read)} and blends them into "
                    f"this layer's own (`{snippet(blend.source, blend.node)}`, line {blend.source.line_of(blend.node)}): "
                    "every layer still scores and selects for itself, so this is score blending, not index reuse")
            elif read.attr in caches and read.key in (KEY_OTHER, KEY_GROUP):
                whose = "its layer group's" if read.key == KEY_GROUP else "another layer's"
                self.evidence.add(CROSS_LAYER_READ, read.source, read.node,
                                  f"`{snippet(read.source, read.node)}` reads {whose} {_held_data(stores)}"
                                  f"{_key_text(read)}: shared across layers")
        for attr, blend in sorted(blended.items()):
            self.notes.append(f"{_shown(attr)} carries another layer's {_held_data(self.stores_of[attr])} only to "
                              f"blend them into each layer's own (line {blend.source.line_of(blend.node)}), which is "
                              "not index reuse")

    def per_layer_state(self, caches: list[str], blended: dict[str, Blend]) -> None:
        own_reads = {r.attr for r in self.facts.reads if r.key == KEY_OWN}
        branch_attrs = set() if self.facts.per_layer_object else {
            a for b in self.facts.branches for a in own_in(b.state) & self.state_attrs}
        per_layer = sorted({s.attr for s in self.data_stores if s.key == KEY_OWN} - set(caches) - set(blended))
        shown = []
        for attr in per_layer:
            stores = [s for s in self.stores_of[attr] if s.key == KEY_OWN]
            holds_selection = any(s.labels & ({SCORE} | SELECTION) for s in stores)
            if attr not in self.counters and not holds_selection and attr not in branch_attrs:
                continue
            if attr not in own_reads and not holds_selection and attr not in self.counters:
                continue
            store = stores[0]
            where = ("lives on an object the framework builds for each layer" if self.facts.per_layer_object
                     else f"is keyed by the layer's own index{_key_text(store)}")
            if attr in self.counters:
                detail = f"{_shown(attr)} {where}: a per-layer step counter, not a layer group"
            else:
                detail = (f"{_shown(attr)} {where}: per-layer state ({_held_data(stores)}) that each layer reads "
                          "back for itself, not shared with other layers")
            self.evidence.add(PER_LAYER_STATE, store.source, store.node, detail)
            shown.append(attr)
        if shown and not caches:
            names = ", ".join(_shown(a) for a in shown)
            self.notes.append(f"its layer state ({names}) is per-layer: each layer reads back its own entry, "
                              "nothing is shared across layers")

    # -- branches and score() --------------------------------------------------------------------
    def branches(self, sides: dict[int, str]) -> list[Branch]:
        """Evidence for each branch on the layer's position or on layer state; the layer-group tests.
        ``sides`` says, for each anchor-layer test that splits the work, what its sides do."""
        group = []
        for branch in self.facts.branches:
            labels = branch.labels
            own = own_in(branch.state) & self.state_attrs  # a list set up in the constructor is no state
            cross = cross_in(branch.state) & self.state_attrs
            if GROUP in labels:
                kind = "layer-group test"
                group.append(branch)
            elif id(branch.node) in sides:
                group.append(branch)
                self.evidence.add(LAYER_CHECK, branch.source, branch.node,
                                  f"`{snippet(branch.source, branch.node)}` (layer-group test): {sides[id(branch.node)]}")
                continue
            elif own and self.facts.per_layer_object:
                continue  # on an object built for each layer all state is per-layer: not worth a line each
            elif own:
                names = sorted(own)
                counters = [n for n in names if n in self.counters]
                if counters:
                    kind = f"per-layer step counter {', '.join(_shown(n) for n in counters)}, not a layer group"
                else:
                    kind = f"tests per-layer state {', '.join(_shown(n) for n in names)}, not a layer group"
            elif labels & {LAYER, OTHER}:
                kind = "plain layer-position test, not a reuse group"
            elif cross:
                names = sorted(cross)
                kind = f"tests another layer's entry of {', '.join(_shown(n) for n in names)}, not a layer group"
            else:
                continue  # reads a fixed list of layers without the layer's position: nothing to say
            self.evidence.add(LAYER_CHECK, branch.source, branch.node, f"`{snippet(branch.source, branch.node)}` ({kind})")
        return group

    # -- anchor layers ---------------------------------------------------------------------------
    def anchor_groups(self, caches: list[str]) -> dict[int, str]:
        """Tests of the layer's position against fixed layers (``layer_idx == 0``, ``in self.anchors``,
        ``< self.first``) whose sides split the work: layers on one side select (reach a scoring call, or
        write the selection into a cache other layers read), those on the other read that selection
        without selecting. The fixed layers may come from a literal, a constructor field or a
        configuration value; a container written while layers are compressed is state, not a fixed set.

        Returns, for each such test (by the id of its node), what its sides do, for the evidence.
        """
        scores: list[Site] = [site for site in self.facts.score_sites if site.on_path]
        writes: list[Site] = [s for s in self.data_stores if s.attr in caches and s.labels & ({SCORE} | SELECTION)]
        reads = [r for r in self.value_reads if r.attr in caches
                 and any(_crosses(s, r) and self.fetches(r.attr, r) for s in self.stores_of.get(r.attr, ()))]
        selectors = scores + writes
        if not selectors or not reads:
            return {}
        candidates: dict[int, Cond] = {}
        for site in [*selectors, *reads]:
            for cond in site.context:
                if (ANCHOR in cond.labels and GROUP not in cond.labels
                        and not (own_in(cond.labels) | cross_in(cond.labels)) & self.state_attrs):
                    candidates.setdefault(id(cond.node), cond)
        found: dict[int, str] = {}
        for key, cond in candidates.items():
            for taken in (True, False):
                side = (key, taken)
                selects = [s for s in selectors if side in _sides(s.context)]
                followers = [r for r in reads if side not in _sides(r.context)]
                if selects and followers:  # this side selects; layers not on it read the kept selection
                    found[key] = self._describe(taken, selects, followers)
                    break
                followers = [r for r in reads if side in _sides(r.context)]
                elsewhere = [s for s in selectors if side not in _sides(s.context)]
                if followers and not selects and elsewhere:  # this side only reads what the others select
                    found[key] = self._describe(not taken, elsewhere, followers)
                    break
        return found

    def _describe(self, taken: bool, selects: list[Site], followers: list[Read]) -> str:
        """What the sides of an anchor-layer test do, e.g. "layers for which it is true select
        (`torch.topk(...)`, line 84); the others reuse `self._topk_to_reuse` (line 57) without selecting"."""
        site = next((s for s in selects if isinstance(s, ScoreSite)), selects[0])
        what = f"`{site.call}`" if isinstance(site, ScoreSite) else f"they write {_shown(site.attr)}"
        read = followers[0]
        return (f"layers for which it is {'true' if taken else 'false'} select ({what}, "
                f"{_place(self.press, site.source, site.node)}); the others reuse {_shown(read.attr)} "
                f"({_place(self.press, read.source, read.node)}) without selecting")

    def anchor_fields(self, sides: dict[int, str]) -> list[str]:
        """Constructor fields an anchor-layer group test reads: the reuse parameters of that code."""
        names = {f.name for f in self.fields}
        found: list[str] = []
        for branch in self.facts.branches:
            if id(branch.node) not in sides:
                continue
            for name in sorted((attrs_in(branch.labels) & names) - self.state_attrs):
                self.evidence.add(REUSE_PARAMETER, branch.source, branch.node,
                                  f"field `{name}` (configuration, not per-layer state) decides which layers select "
                                  f"and which reuse: `{snippet(branch.source, branch.node)}`")
                if name not in found:
                    found.append(name)
        return found


def analyse_reuse(index: ProjectIndex, press: ClassInfo, facts: FlowFacts) -> ReuseAnalysis:
    """Turn the flow facts of ``press`` into evidence and a verdict."""
    judge = _Judge(index, press, facts)
    evidence = judge.evidence
    reuse_fields = judge.reuse_fields()
    blended = judge.blended()
    caches = judge.caches(blended)
    sides = judge.anchor_groups(caches)
    groups = frozenset(sides)
    reuse_fields += [name for name in judge.anchor_fields(sides) if name not in reuse_fields]
    unused, unused_uses = judge.unused_fields(reuse_fields)
    group_branches = judge.branches(sides)
    judge.cross_layer_reads(blended, caches)
    judge.per_layer_state(caches, blended)

    guarded = [s for s in facts.score_sites if _guard_of(s, groups) is not None]
    unguarded = [s for s in facts.score_sites if _guard_of(s, groups) is None]
    for site in guarded:
        guard = _guard_of(site, groups)
        side = "true" if guard.taken else "false"
        evidence.add(GUARDED_SCORE, site.source, site.node,
                     f"`{site.call}` runs only when `{snippet(guard.source, guard.node)}` is {side}")

    # Followers read the cache: a value read that the score() guard's leader side does not enclose.
    follower_reads = [
        read for read in judge.value_reads if read.attr in caches
        and any(_crosses(s, read) and judge.fetches(read.attr, read) for s in judge.stores_of[read.attr])
        and any(not _under(read.context, _guard_of(site, groups)) for site in guarded)
    ]
    all_guarded = bool(facts.score_sites) and not unguarded
    implemented = all_guarded and bool(follower_reads)

    stale: list[tuple[str, Read]] = []
    score_stores = [s for s in judge.data_stores if s.labels & ({SCORE} | SELECTION)]
    for attr in caches:
        stores = [s for s in score_stores if s.attr == attr]
        refreshed = any(not _is_lazy(s, attr) for s in stores)
        reset = any(s.is_reset and s.attr == attr and s.method.rsplit(".", 1)[-1] not in _CONSTRUCTION for s in facts.stores)
        if stores and not refreshed and not reset:
            stale.append((attr, next(r for r in judge.value_reads if r.attr == attr)))

    gaps = []
    if not reuse_fields and not groups:
        gaps.append("no constructor field sets the layer group (`layer_idx % n` or `// n`)")
    if not facts.score_sites:
        gaps.append("no score() call was found on the compression path")
    elif unguarded:
        places = ", ".join(_place(press, s.source, s.node) for s in unguarded)
        gaps.append(f"score() at {places} is not behind a layer-group test, so follower layers still score")
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
        notes=judge.notes if verdict != IMPLEMENTED else [],
        unused_uses=unused_uses,
    )


__all__ = ["ReuseAnalysis", "analyse_reuse", "Branch", "constructor_fields", "snippet"]
