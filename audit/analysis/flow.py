"""A small label-propagation pass over a press's methods.

It answers, for one press class, where ``score()`` is reached, under which branch
conditions, which values depend on the layer's position, and what is stored on and
read back from the press instance, and under which key. It follows ``self.method()``
calls, ``super()`` calls and inherited methods (kvpress's own ``BasePress.forward_hook``
included, read from its installed source), module-level functions of the run (the press
passed as an argument is ``self`` there), and the methods of objects the press holds
(a coordinator passed to its constructor), carrying the branch conditions of each call
site into the callee. It reasons about data flow, never about names: a field called
``share_every`` counts exactly as ``n_reuse`` does.

Labels carried by values:
    ``layer``        the layer's own index (``module.layer_idx``, ``getattr(m, "layer_idx")``)
    ``group``        derived by layer-group arithmetic: ``layer % n``, ``layer // n``,
                     ``layer - layer % n`` (a leader), or read from a slot keyed by one
    ``other-layer``  another layer's index: ``layer - 1``, ``layer + k``
    ``score``        derived from a ``score()`` result (scores, top-k indices, gathered positions)
    ``indices``      a selection of positions (``.indices``, ``argsort``)
    ``mask``         a selection written as a mask (``zeros_like(x).scatter_(-1, indices, 1)``)
    ``anchor``       the layer's position compared with other values (``==``, ``<``, ``in``; not ``is``)
    ``attr:X``       read from ``self.X``
    ``own:X``        read from the layer's own entry of ``self.X`` (per-layer state)
    ``shared:X``     read from an entry of ``self.X`` that other layers can see
    ``cross:X``      read from another layer's entry of ``self.X`` (``d[layer - 1]``)

Where state lives decides what it means. A container keyed by the layer's own index
(``d[layer_idx]``) holds per-layer state: reading it back is not reuse, and a test on it
is not a layer-group test. A key built by group arithmetic or from another layer's index
reads across layers. A test of the layer's position against fixed layers (``layer_idx == 0``,
``layer_idx in self.anchor_layers``, ``layer_idx < self.first``) keeps its ``layer`` label:
whether it is a layer group is decided from what its sides do (see ``analysis.reuse``).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libcst as cst
else:  # libcst is imported on first use (start-up cost)
    from ..lazy_libcst import cst

from .index import KVPRESS_MODEL, ClassInfo, PressBase, ProjectIndex, dotted
from ..source import SourceFile

LAYER, GROUP, OTHER, SCORE, INDICES, MASK = "layer", "group", "other-layer", "score", "indices", "mask"
ANCHOR = "anchor"  # the layer's position compared with other values: `layer_idx == 0`, `in self.anchors`, `< n`
POSITION_LABELS = frozenset({LAYER, GROUP, OTHER})
SELECTION = frozenset({INDICES, MASK})  # what a selection is kept as: positions, or a mask over them
SCORE_METHOD = "score"
NESTED_COMPRESS = "compress"
# Key kinds of a slot of press state.
KEY_OWN, KEY_GROUP, KEY_OTHER, KEY_SHARED = "own", "group", "other", "shared"
MAX_DEPTH = 12  # calls followed from the entry method; deeper ones are reported (KVA003)
_MUTATORS = frozenset({"append", "add", "update", "setdefault", "insert", "extend", "__setitem__"})
_RESETTERS = frozenset({"clear", "pop", "popitem"})
_KEEP_POSITION_CALLS = frozenset({"int", "abs", "min", "max", "divmod", "range"})
_INDEX_CALLS = frozenset({"argsort", "argmax", "argmin", "argwhere", "nonzero"})
# Writing selected positions into a tensor makes a mask of the selection: `zeros_like(x).scatter_(-1, idx, 1)`.
_MASK_CALLS = frozenset({"scatter", "scatter_", "index_fill", "index_fill_", "index_put", "index_put_"})
# libcst's operator classes, by name: a module-level cst.X would import libcst at start-up.
_ARITHMETIC = frozenset({"Add", "Subtract", "Multiply", "Divide", "MatrixMultiply", "Power"})
# Reads that only look at a value, never act on it (validation, messages): see Read.sink.
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
_REPR_METHODS = frozenset({"__repr__", "__str__", "__format__", "__rich_repr__"})
_CONSTRUCTORS = frozenset({"__init__", "__post_init__"})
Labels = frozenset[str]
EMPTY: Labels = frozenset()


def attr_label(name: str) -> str:
    return f"attr:{name}"


def _names(labels: Labels, prefix: str) -> set[str]:
    return {label[len(prefix):] for label in labels if label.startswith(prefix)}


def attrs_in(labels: Labels) -> set[str]:
    return _names(labels, "attr:")


def own_in(labels: Labels) -> set[str]:
    return _names(labels, "own:")


def shared_in(labels: Labels) -> set[str]:
    return _names(labels, "shared:")


def cross_in(labels: Labels) -> set[str]:
    return _names(labels, "cross:")


def key_kind(labels: Labels) -> str:
    """What a key says about whose slot it is: the group's, another layer's, this layer's, anyone's."""
    if GROUP in labels:
        return KEY_GROUP
    if OTHER in labels:
        return KEY_OTHER
    if LAYER in labels:
        return KEY_OWN
    return KEY_SHARED


@dataclass(frozen=True)
class Cond:
    """A branch condition on the path to a statement, with the side taken."""

    node: cst.BaseExpression
    labels: Labels
    taken: bool
    source: SourceFile

    @property
    def is_group_test(self) -> bool:
        return GROUP in self.labels


Context = tuple[Cond, ...]


@dataclass(frozen=True)
class Site:
    """A place in the code: a node of one file, reached under some conditions."""

    node: cst.CSTNode
    source: SourceFile
    context: Context
    method: str
    on_path: bool = True  # reached from an entry method (the per-layer compression path)


@dataclass(frozen=True)
class ScoreSite(Site):
    call: str = ""  # e.g. "self.press.score(...)"


@dataclass(frozen=True)
class Store(Site):
    attr: str = ""
    labels: Labels = EMPTY  # of the value stored
    is_reset: bool = False
    key: str = KEY_SHARED  # whose slot: KEY_OWN / KEY_GROUP / KEY_OTHER / KEY_SHARED
    key_node: cst.CSTNode | None = None
    is_increment: bool = False  # `self.x[k] += 1`: a counter
    exchange: bool = False  # published through a call on a held object whose code the run lacks


@dataclass(frozen=True)
class Read(Site):
    attr: str = ""
    state_only: bool = False  # `self.x is None`, `key in self.x`: a check, not a use of the value
    key: str = KEY_SHARED
    key_node: cst.CSTNode | None = None
    # Set when the value is only looked at: "assert", "raise", "log", "repr", "store:<attr>".
    sink: str | None = None
    exchange: bool = False  # fetched through a call on a held object whose code the run lacks


@dataclass(frozen=True)
class Arithmetic(Site):
    attrs: frozenset[str] = frozenset()  # fields combined with the layer position


@dataclass(frozen=True)
class Branch(Site):
    labels: Labels = EMPTY
    # "own:X" / "cross:X" for press state the test itself reads (not values that merely flowed from it)
    state: Labels = EMPTY


@dataclass(frozen=True)
class Blend(Site):
    attr: str = ""  # a value read from a slot other layers write, combined arithmetically with other data
    with_score: bool = False  # the other operand carries this layer's own score() result


@dataclass
class FlowFacts:
    """Everything the pass saw for one press class."""

    score_sites: list[ScoreSite] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    arithmetic: list[Arithmetic] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    blends: list[Blend] = field(default_factory=list)
    methods_seen: set[str] = field(default_factory=set)
    per_layer_object: bool = False  # the framework builds one press object per layer
    # Calls not followed because the call chain was already MAX_DEPTH deep ("Class.method"):
    # what lies past them is unseen, and rule KVA003 says so.
    cut_calls: list[str] = field(default_factory=list)


@dataclass
class _Walk:
    """What one top-level walk of a method added, and the method resolutions it relied on."""

    resolutions: list[tuple]
    facts: dict[str, list]
    methods_seen: set[str]
    returns: Labels


_FACT_LISTS = ("score_sites", "stores", "reads", "arithmetic", "branches", "blends", "cut_calls")


@dataclass(frozen=True)
class _Object:
    """What ``self`` is in a frame: the press, or an object it holds (a coordinator)."""

    cls: ClassInfo
    prefix: str  # "" for the press; "Coordinator." for a held object, so its state keeps its own names
    shared: bool  # its state is seen by every layer


@dataclass
class _Frame:
    source: SourceFile
    function: cst.FunctionDef
    name: str  # "Class.method" or "module:function"
    owner: ClassInfo | None  # the class defining the method (None for a module-level function)
    obj: _Object
    selves: frozenset[str]  # local names that hold `obj`
    env: dict[str, Labels]
    held: dict[str, _Object] = field(default_factory=dict)  # local names that hold another object
    returns: set[str] = field(default_factory=set)
    sink: str | None = None
    dropped: cst.BaseExpression | None = None  # the call of the statement being walked whose result is dropped

    def is_self(self, expr: cst.BaseExpression) -> bool:
        return isinstance(expr, cst.Name) and expr.value in self.selves


def _terminates(block: cst.BaseSuite) -> bool:
    body = block.body if isinstance(block, cst.IndentedBlock) else [block]
    if not body:
        return False
    last = body[-1]
    if isinstance(last, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
        return any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
    if isinstance(last, cst.If):
        return _terminates(last.body) and last.orelse is not None and _orelse_terminates(last.orelse)
    return False


def _orelse_terminates(orelse: cst.If | cst.Else) -> bool:
    if isinstance(orelse, cst.Else):
        return _terminates(orelse.body)
    return _terminates(orelse.body) and orelse.orelse is not None and _orelse_terminates(orelse.orelse)


def _only_raises(block: cst.BaseSuite) -> bool:
    """``if bad: raise ...``: the test only validates."""
    body = block.body if isinstance(block, cst.IndentedBlock) else [block]
    smalls = [s for line in body if isinstance(line, (cst.SimpleStatementLine, cst.SimpleStatementSuite))
              for s in line.body]
    return bool(body) and len(smalls) == len(body) and all(isinstance(s, cst.Raise) for s in smalls)


def _is_super_call(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "super"


def _is_empty_value(expr: cst.BaseExpression | None) -> bool:
    if expr is None:
        return True
    if isinstance(expr, cst.Name) and expr.value == "None":
        return True
    if isinstance(expr, (cst.Dict, cst.List, cst.Set, cst.Tuple)) and not expr.elements:
        return True
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and not expr.args:
        return expr.func.value in {"dict", "list", "set", "tuple", "OrderedDict", "defaultdict"}
    return False


def _is_literal(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.UnaryOperation):
        return _is_literal(expr.expression)
    return isinstance(expr, (cst.Integer, cst.Float, cst.Imaginary))


def _string_value(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.SimpleString):
        return expr.evaluated_value if isinstance(expr.evaluated_value, str) else None
    return None


def _decorated(function: cst.FunctionDef, name: str) -> bool:
    return any(isinstance(d.decorator, cst.Name) and d.decorator.value == name for d in function.decorators)


def _positional(function: cst.FunctionDef) -> list[str]:
    return [p.name.value for p in (*function.params.posonly_params, *function.params.params)]


def _annotation_names(annotation: cst.BaseExpression) -> list[str]:
    """Class names an annotation may hold: ``C``, ``m.C``, ``C | None``, ``Optional[C]``, ``"C"``."""
    if isinstance(annotation, cst.BinaryOperation):
        return _annotation_names(annotation.left) + _annotation_names(annotation.right)
    if isinstance(annotation, cst.Subscript):
        return [n for element in annotation.slice if isinstance(element.slice, cst.Index)
                for n in _annotation_names(element.slice.value)]
    if isinstance(annotation, cst.SimpleString):
        text = _string_value(annotation) or ""
        return [text] if text.replace(".", "").isidentifier() else []
    name = dotted(annotation)
    return [name] if name and name != "None" else []


def _has_loop(node: cst.CSTNode) -> bool:
    """Whether a ``for`` or ``while`` statement, or a comprehension (whose ``:=`` can carry a value to
    an earlier use), lies anywhere below ``node`` (nested functions included)."""
    pending = list(node.children)
    while pending:
        child = pending.pop()
        if isinstance(child, (cst.For, cst.While, cst.CompFor)):
            return True
        pending.extend(child.children)
    return False


class FlowAnalyzer:
    """Runs the label-propagation pass for one press class."""

    def __init__(self, index: ProjectIndex, press: ClassInfo, model: PressBase | None = None) -> None:
        self.index = index
        self.press = press
        self.model = model or index.press_model(press)
        self.mro = index.mro(press)
        self.this = _Object(press, "", shared=not self.model.per_layer_state)
        self.facts = FlowFacts(per_layer_object=self.model.per_layer_state)
        self._stack: list[int] = []
        self._record_scores = True  # off while sweeping methods the hook never reaches
        self._field_labels: dict[str, Labels] = {}  # position labels stored into each slot (second pass)
        self._memo: dict[tuple, Labels] = {}  # walks of this pass (see _run_frame)
        # name -> the MRO positions that define it (ascending) and the (class, method) at each,
        # the first definition in a class body winning.
        self._position = {id(cls): i for i, cls in enumerate(self.mro)}
        self._methods: dict[str, tuple[list[int], list[tuple[ClassInfo, cst.FunctionDef]]]] = {}
        for i, cls in enumerate(self.mro):
            for name, statement, _ in self._defined(cls):
                positions, found = self._methods.setdefault(name, ([], []))
                if not positions or positions[-1] != i:
                    positions.append(i)
                    found.append((cls, statement))
        self._resolutions: list | None = None  # logged while a top-level walk runs
        self._seen_log: set[str] | None = None
        self._held = self._held_objects()
        self._walk_state: tuple = ()  # set by each pass (see _pass)

    def _defined(self, cls: ClassInfo) -> list[tuple[str, cst.FunctionDef, str]]:
        """(name, method, "Class.name") of each method of ``cls``; listed once per class for the whole run."""
        methods = self.index.flow_methods.get(id(cls))
        if methods is None:
            methods = [(s.name.value, s, f"{cls.name}.{s.name.value}") for s in cls.node.body.body
                       if isinstance(s, cst.FunctionDef)]
            self.index.flow_methods[id(cls)] = methods
        return methods

    def _loops(self, function: cst.FunctionDef) -> bool:
        """Whether the function's body loops; worked out once per function for the whole run."""
        loops = self.index.flow_loops.get(id(function))
        if loops is None:
            loops = self.index.flow_loops[id(function)] = _has_loop(function.body)
        return loops

    # -- objects the press holds ---------------------------------------------------------------
    def _held_objects(self) -> dict[str, _Object]:
        """``self.X`` (and constructor parameters) holding an object whose class the run has: a
        coordinator, say. Nested presses are not held objects: they score (see score sites)."""
        held: dict[str, _Object] = {}
        for cls in reversed(self.mro):
            for name, candidates in self._annotated_classes(cls):
                target = next((c for c in candidates if c is not self.press), None)
                if target is not None:
                    held[name] = _Object(target, f"{target.name}.", shared=True)
        return held

    def _annotated_classes(self, cls: ClassInfo) -> list[tuple[str, list[ClassInfo]]]:
        """(name, non-press classes its annotation names) for each annotated field or constructor
        parameter of ``cls``; worked out once per class for the whole run (a chain's presses share them)."""
        found = self.index.flow_annotations.get(id(cls))
        if found is None:
            found = []
            for statement in cls.node.body.body:
                for name, annotation in self._annotated(statement):
                    targets = [self.index.resolve_class(cls.source, n) for n in _annotation_names(annotation)]
                    found.append((name, [t for t in targets if t is not None and not self.index.is_press(t)]))
            self.index.flow_annotations[id(cls)] = found
        return found

    def _annotated(self, statement: cst.BaseStatement) -> list[tuple[str, cst.BaseExpression]]:
        found: list[tuple[str, cst.BaseExpression]] = []
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                    found.append((small.target.value, small.annotation.annotation))
        elif isinstance(statement, cst.FunctionDef) and statement.name.value in _CONSTRUCTORS:
            params = {p.name.value: p.annotation.annotation for p in statement.params.params if p.annotation}
            found.extend(params.items())  # the parameter itself, inside the constructor
            for small in self._simple_statements(statement.body):
                if (isinstance(small, cst.Assign) and isinstance(small.value, cst.Name) and small.value.value in params
                        and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Attribute)):
                    found.append((small.targets[0].target.attr.value, params[small.value.value]))
        return found

    @staticmethod
    def _simple_statements(block: cst.BaseSuite) -> list[cst.BaseSmallStatement]:
        body = block.body if isinstance(block, cst.IndentedBlock) else [block]
        return [s for line in body if isinstance(line, (cst.SimpleStatementLine, cst.SimpleStatementSuite))
                for s in line.body]

    # -- method resolution ---------------------------------------------------------------
    def method(self, name: str, after: ClassInfo | None = None,
               obj: _Object | None = None) -> tuple[ClassInfo, cst.FunctionDef] | None:
        """Resolve ``self.name`` (or ``super().name`` when ``after`` is the defining class)."""
        own = obj is None or obj.cls is self.press
        found = self._own_method(name, after) if own else self._held_method(name, after, obj)
        if self._resolutions is not None:
            self._resolutions.append((name, after, None if own else obj, found))
        return found

    def _own_method(self, name: str, after: ClassInfo | None) -> tuple[ClassInfo, cst.FunctionDef] | None:
        positions, defined = self._methods.get(name, ((), ()))
        if after is None:
            return defined[0] if defined else None
        if id(after) not in self._position:
            return None
        at = bisect_right(positions, self._position[id(after)])
        return defined[at] if at < len(defined) else None

    def _held_method(self, name: str, after: ClassInfo | None, obj: _Object) -> tuple[ClassInfo, cst.FunctionDef] | None:
        classes = self.index.mro(obj.cls)
        if after is not None:
            position = next((i for i, c in enumerate(classes) if c is after), None)
            classes = classes[position + 1 :] if position is not None else []
        for cls in classes:
            for statement in cls.node.body.body:
                if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
                    return cls, statement
        return None

    # -- entry -----------------------------------------------------------------------------
    def run(self) -> FlowFacts:
        self._pass()
        # Values stored on the press carry their layer position to later reads (a leader flag
        # computed in the constructor, a group number kept for the next call): one more pass.
        labels: dict[str, Labels] = {}
        for store in self.facts.stores:
            if not store.is_reset and store.labels & POSITION_LABELS:
                labels[store.attr] = labels.get(store.attr, EMPTY) | (store.labels & (POSITION_LABELS | {ANCHOR}))
        if labels:
            self._field_labels = labels
            self.facts = FlowFacts(per_layer_object=self.model.per_layer_state)
            self._pass()
        self._deduplicate()
        return self.facts

    def _pass(self) -> None:
        self._memo = {}
        # What a walk depends on besides the method and its arguments, the same for the whole pass.
        self._walk_state = (self.model, frozenset(self._field_labels.items()), frozenset(self._held.items()),
                            self.this.shared)
        entry = next((found for name in self.model.entry_methods if (found := self.method(name)) is not None), None)
        if entry is not None:
            # `update_and_fetch(self, keys, values, layer_idx)`: a parameter named as a layer-index attribute.
            params = {name: frozenset({LAYER}) for name in _positional(entry[1]) if name in self.model.layer_index}
            self._top_call(entry[0], entry[1], params, record_scores=True)
        # Methods never reached from the hook still hold stores and reads (resets, caches).
        for cls in self.mro:
            for _, statement, seen in self._defined(cls):
                if seen not in self.facts.methods_seen:
                    self._top_call(cls, statement, {}, record_scores=False)

    def _top_call(self, owner: ClassInfo, function: cst.FunctionDef, params: dict[str, Labels],
                  record_scores: bool) -> Labels:
        """Walk a method from the top, or replay the walk another press of the run made.

        Every press of a chain sweeps the methods of all its bases. A walk depends on the
        press only through the methods it resolves and the press's model, held objects and
        field labels: a walk whose resolutions come out the same for this press, with the
        same rest, is replayed, not redone (a chain of n presses then costs about n walks,
        not n squared).
        """
        key = (id(function), id(owner), record_scores, frozenset(params.items()), self._walk_state)
        for walk in self.index.flow_walks.get(key, ()):
            saved, self._resolutions = self._resolutions, None
            same = all(self.method(name, after, obj) == found for name, after, obj, found in walk.resolutions)
            self._resolutions = saved
            if same:
                for name in _FACT_LISTS:
                    getattr(self.facts, name).extend(walk.facts[name])
                self.facts.methods_seen |= walk.methods_seen
                return walk.returns
        marks = {name: len(getattr(self.facts, name)) for name in _FACT_LISTS}
        self._resolutions, self._seen_log = [], set()
        try:
            returns = self._call_method(owner, function, self.this, params, (), record_scores=record_scores)
            resolutions, seen = self._resolutions, self._seen_log
        finally:
            self._resolutions, self._seen_log = None, None
        walk = _Walk(resolutions, {name: getattr(self.facts, name)[marks[name]:] for name in _FACT_LISTS}, seen, returns)
        self.index.flow_walks.setdefault(key, []).append(walk)
        return returns

    def _deduplicate(self) -> None:
        # Loop bodies are walked twice to reach a fixpoint; keep one copy of each fact.
        self.facts.cut_calls = list(dict.fromkeys(self.facts.cut_calls))
        for name in ("score_sites", "stores", "reads", "arithmetic", "branches", "blends"):
            seen: set = set()
            unique = []
            for site in getattr(self.facts, name):
                key = (id(site.node), tuple((id(c.node), c.taken) for c in site.context), getattr(site, "attr", ""),
                       getattr(site, "sink", None))
                if key not in seen:
                    seen.add(key)
                    unique.append(site)
            setattr(self.facts, name, unique)

    def _call_method(self, owner: ClassInfo, function: cst.FunctionDef, obj: _Object, params: dict[str, Labels],
                     context: Context, record_scores: bool, held: dict[str, _Object] | None = None) -> Labels:
        static = _decorated(function, "staticmethod")
        positional = _positional(function)
        selves = frozenset() if static or _decorated(function, "classmethod") or not positional else frozenset(positional[:1])
        params = dict(params)
        if function.name.value in _CONSTRUCTORS and obj is self.this:
            # `self._layer_id = layer_id`: the parameter is the layer's own index.
            for small in self._simple_statements(function.body):
                if (isinstance(small, cst.Assign) and isinstance(small.value, cst.Name) and len(small.targets) == 1
                        and isinstance(small.targets[0].target, cst.Attribute)
                        and small.targets[0].target.attr.value in self.model.layer_index):
                    params[small.value.value] = params.get(small.value.value, EMPTY) | {LAYER}
        frame = _Frame(owner.source, function, f"{owner.name}.{function.name.value}", owner, obj, selves, params,
                       held=dict(held or {}))
        if function.name.value in _CONSTRUCTORS and obj is self.this:
            frame.held.update({name: target for name, target in self._held.items()})
        if function.name.value in _REPR_METHODS:
            frame.sink = "repr"
        return self._run_frame(frame, context, record_scores)

    def _run_frame(self, frame: _Frame, context: Context, record_scores: bool) -> Labels:
        key = id(frame.function)
        if key in self._stack:  # recursion: the first walk already covers it
            return EMPTY
        if len(self._stack) >= MAX_DEPTH:
            if record_scores:  # on the path from the entry method (a sweep reaches the rest on its own)
                self.facts.cut_calls.append(frame.name)
            return EMPTY
        # Each body is walked twice (below), so a chain of calls would be walked 2**depth times;
        # a frame already walked with the same state, conditions and call stack recorded the
        # same facts and returns the same labels.
        memo_key = (key, frame.name, frame.obj, frame.owner is None, frozenset(frame.env.items()), frame.selves,
                    frozenset(frame.held.items()), frame.sink, context, record_scores, tuple(self._stack))
        if memo_key in self._memo:
            return self._memo[memo_key]
        self._stack.append(key)
        self.facts.methods_seen.add(frame.name)
        if self._seen_log is not None:
            self._seen_log.add(frame.name)
        saved, self._record_scores = self._record_scores, record_scores
        try:
            # Twice when the body loops, so that values assigned late in a loop reach uses earlier in it.
            for _ in range(2 if self._loops(frame.function) else 1):
                self._block(frame, frame.function.body, context)
        finally:
            self._record_scores = saved
            self._stack.pop()
        self._memo[memo_key] = frozenset(frame.returns)
        return self._memo[memo_key]

    # -- statements ----------------------------------------------------------------------
    def _block(self, frame: _Frame, block: cst.BaseSuite, context: Context) -> bool:
        """Walk a block; returns True when it always leaves the function."""
        statements = block.body if isinstance(block, cst.IndentedBlock) else [block]
        for statement in statements:
            if isinstance(statement, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
                for small in statement.body:
                    self._small(frame, small, context)
                if any(isinstance(s, (cst.Return, cst.Raise)) for s in statement.body):
                    return True
            elif isinstance(statement, cst.If):
                context, leaves = self._if(frame, statement, context)
                if leaves:
                    return True
            elif isinstance(statement, (cst.For, cst.While)):
                self._loop(frame, statement, context)
            elif isinstance(statement, cst.With):
                for item in statement.items:
                    labels = self._expr(frame, item.item, context)
                    if item.asname is not None:
                        self._bind(frame, item.asname.name, labels, context, statement)
                self._block(frame, statement.body, context)
            elif isinstance(statement, cst.Try):
                self._block(frame, statement.body, context)
                for handler in statement.handlers:
                    self._block(frame, handler.body, context)
                for extra in (statement.orelse, statement.finalbody):
                    if extra is not None:
                        self._block(frame, extra.body, context)
        return False

    def _sinked(self, frame: _Frame, sink: str, node: cst.BaseExpression | None, context: Context) -> Labels:
        saved, frame.sink = frame.sink, frame.sink or sink
        try:
            return self._expr(frame, node, context)
        finally:
            frame.sink = saved

    def _if(self, frame: _Frame, node: cst.If, context: Context) -> tuple[Context, bool]:
        # `if bad: raise`: the test only validates.
        labels, state = self._test(frame, node.test, context, "raise" if _only_raises(node.body) and node.orelse is None else None)
        self._branch(frame, node.test, labels, context, state)
        body_leaves = self._block(frame, node.body, (*context, Cond(node.test, labels, True, frame.source)))
        else_context = (*context, Cond(node.test, labels, False, frame.source))
        else_leaves = False
        if isinstance(node.orelse, cst.If):
            _, else_leaves = self._if(frame, node.orelse, else_context)
        elif isinstance(node.orelse, cst.Else):
            else_leaves = self._block(frame, node.orelse.body, else_context)
        if body_leaves and else_leaves:
            return context, True
        if body_leaves:  # `if cond: return ...` guards everything after it with `not cond`
            return else_context, False
        if else_leaves:
            return (*context, Cond(node.test, labels, True, frame.source)), False
        return context, False

    def _loop(self, frame: _Frame, node: cst.For | cst.While, context: Context) -> None:
        if isinstance(node, cst.For):
            labels = self._expr(frame, node.iter, context)
            self._bind(frame, node.target, labels, context, node)
            inner = context
        else:
            labels, state = self._test(frame, node.test, context)
            self._branch(frame, node.test, labels, context, state)
            inner = (*context, Cond(node.test, labels, True, frame.source))
        self._block(frame, node.body, inner)
        if node.orelse is not None:
            self._block(frame, node.orelse.body, context)

    def _store_sink(self, frame: _Frame, target: cst.BaseExpression) -> str | None:
        """A value assigned into press state is only stored there: its use is that slot's use."""
        base = target.value if isinstance(target, cst.Subscript) else target
        attr = self._self_attr(frame, base)
        return f"store:{frame.obj.prefix}{attr}" if attr is not None else None

    def _small(self, frame: _Frame, node: cst.BaseSmallStatement, context: Context) -> None:
        if isinstance(node, cst.Assign):
            sinks = {self._store_sink(frame, t.target) for t in node.targets}
            sink = sinks.pop() if len(sinks) == 1 else None
            labels = self._sinked(frame, sink, node.value, context) if sink else self._expr(frame, node.value, context)
            for target in node.targets:
                self._bind(frame, target.target, labels, context, node, value=node.value)
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            sink = self._store_sink(frame, node.target) if isinstance(node, cst.AnnAssign) else None
            if node.value is None:
                labels = EMPTY
            else:
                labels = self._sinked(frame, sink, node.value, context) if sink else self._expr(frame, node.value, context)
            if isinstance(node, cst.AugAssign):
                target_labels = self._expr(frame, node.target, context)
                if isinstance(node.operator, (cst.AddAssign, cst.SubtractAssign, cst.MultiplyAssign, cst.DivideAssign)):
                    self._blend(frame, node, target_labels, labels, node.value)
                labels |= target_labels
            if node.value is not None:
                increment = (isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign)
                             and isinstance(node.value, cst.Integer))
                self._bind(frame, node.target, labels, context, node, value=node.value, increment=increment)
        elif isinstance(node, cst.Return) and node.value is not None:
            frame.returns |= self._expr(frame, node.value, context)
        elif isinstance(node, cst.Expr):
            if self._is_log_statement(frame, node.value):  # `logger.debug("...", self.n)`: only shown
                self._log_args(frame, [a.value for a in node.value.args], context)
            else:
                saved, frame.dropped = frame.dropped, node.value
                try:
                    self._expr(frame, node.value, context)
                finally:
                    frame.dropped = saved
        elif isinstance(node, cst.Assert):
            self._sinked(frame, "assert", node.test, context)
            self._sinked(frame, "assert", node.msg, context)
        elif isinstance(node, cst.Raise):
            self._sinked(frame, "raise", node.exc, context)
        elif isinstance(node, cst.Del):
            self._delete(frame, node.target, context)

    def _delete(self, frame: _Frame, target: cst.BaseExpression, context: Context) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._delete(frame, element.value, context)
            return
        attr = self._self_attr(frame, target if not isinstance(target, cst.Subscript) else target.value)
        if attr is not None:
            self._store(frame, target, attr, EMPTY, context, is_reset=True)

    def _bind(
        self,
        frame: _Frame,
        target: cst.BaseExpression,
        labels: Labels,
        context: Context,
        statement: cst.CSTNode,
        value: cst.BaseExpression | None = None,
        increment: bool = False,
    ) -> None:
        if isinstance(target, cst.Name):
            frame.env[target.value] = frame.env.get(target.value, EMPTY) | labels
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(frame, element.value, labels, context, statement)
        elif isinstance(target, cst.StarredElement):
            self._bind(frame, target.value, labels, context, statement)
        elif (attr := self._self_attr(frame, target)) is not None:
            self._store(frame, statement, attr, labels, context, is_reset=_is_empty_value(value))
        elif isinstance(target, cst.Subscript) and (attr := self._self_attr(frame, target.value)) is not None:
            keys = self._slice_labels(frame, target, context)
            self._store(frame, statement, attr, labels, context,
                        is_reset=False, key_labels=keys, key_node=target.slice[0].slice if target.slice else None,
                        increment=increment)
        elif isinstance(target, cst.Subscript) and isinstance(target.value, cst.Subscript):
            # `self.x[layer][..., :n] = v` writes into the layer's entry.
            inner = target.value
            if (attr := self._self_attr(frame, inner.value)) is not None:
                keys = self._slice_labels(frame, inner, context)
                self._slice_labels(frame, target, context)
                self._store(frame, statement, attr, labels, context, is_reset=False,
                            key_labels=keys, key_node=inner.slice[0].slice if inner.slice else None)

    # -- facts ---------------------------------------------------------------------------
    def _site_args(self, frame: _Frame, node: cst.CSTNode, context: Context) -> dict:
        return {"node": node, "source": frame.source, "context": context, "method": frame.name,
                "on_path": self._record_scores}

    def _slot(self, frame: _Frame, attr: str, key_labels: Labels | None, shared: bool = False) -> tuple[str, str]:
        """The qualified name of ``self.attr`` in this frame, and whose slot ``key_labels`` selects;
        ``shared``: the slot lies in an object every layer sees, whatever holds it."""
        name = frame.obj.prefix + attr
        if not frame.obj.shared and not shared:
            return name, KEY_OWN  # one object per layer: everything on it is this layer's
        return name, key_kind(key_labels) if key_labels is not None else KEY_SHARED

    def _store(self, frame: _Frame, node: cst.CSTNode, attr: str, labels: Labels, context: Context, is_reset: bool,
               key_labels: Labels | None = None, key_node: cst.CSTNode | None = None, increment: bool = False,
               shared: bool = False, exchange: bool = False) -> None:
        name, kind = self._slot(frame, attr, key_labels, shared)
        self.facts.stores.append(Store(**self._site_args(frame, node, context), attr=name, labels=labels,
                                       is_reset=is_reset, key=kind, key_node=key_node, is_increment=increment,
                                       exchange=exchange))

    def _test(self, frame: _Frame, test: cst.BaseExpression, context: Context, sink: str | None = None) -> tuple[Labels, Labels]:
        """Labels of a branch test, and the per-layer or cross-layer state it reads itself."""
        first = len(self.facts.reads)
        labels = self._sinked(frame, sink, test, context) if sink else self._expr(frame, test, context)
        state = frozenset(f"own:{r.attr}" if r.key == KEY_OWN else f"cross:{r.attr}"
                          for r in self.facts.reads[first:] if r.key in (KEY_OWN, KEY_OTHER))
        return labels, state

    def _branch(self, frame: _Frame, test: cst.BaseExpression, labels: Labels, context: Context,
                state: Labels = EMPTY) -> None:
        if labels & POSITION_LABELS or state:
            self.facts.branches.append(Branch(**self._site_args(frame, test, context), labels=labels, state=state))

    def _blend(self, frame: _Frame, node: cst.CSTNode, left: Labels, right: Labels,
               right_node: cst.BaseExpression | None = None, left_node: cst.BaseExpression | None = None) -> None:
        """Data read from a slot other layers write, combined arithmetically with anything else."""
        for one, other, other_node in ((left, right, right_node), (right, left, left_node)):
            if other_node is not None and _is_literal(other_node):
                continue
            for attr in shared_in(one) - shared_in(other):
                self.facts.blends.append(Blend(**self._site_args(frame, node, EMPTY), attr=attr,
                                               with_score=SCORE in other))

    def _self_attr(self, frame: _Frame, expr: cst.BaseExpression) -> str | None:
        if isinstance(expr, cst.Attribute) and frame.is_self(expr.value):
            return expr.attr.value
        return None

    # -- expressions ---------------------------------------------------------------------
    def _exprs(self, frame: _Frame, nodes, context: Context) -> Labels:
        labels: Labels = EMPTY
        for node in nodes:
            labels |= self._expr(frame, node, context)
        return labels

    def _slice_labels(self, frame: _Frame, node: cst.Subscript, context: Context) -> Labels:
        labels: Labels = EMPTY
        saved, frame.sink = frame.sink, None  # a key picks the slot: that is a use
        try:
            for element in node.slice:
                if isinstance(element.slice, cst.Index):
                    labels |= self._expr(frame, element.slice.value, context)
                else:
                    labels |= self._exprs(frame, [p for p in (element.slice.lower, element.slice.upper,
                                                              element.slice.step) if p], context)
        finally:
            frame.sink = saved
        return labels

    def _read(self, frame: _Frame, node: cst.CSTNode, attr: str, context: Context, state_only: bool = False,
              key_labels: Labels | None = None, key_node: cst.CSTNode | None = None, shared: bool = False,
              exchange: bool = False) -> Labels:
        name, kind = self._slot(frame, attr, key_labels, shared)
        self.facts.reads.append(Read(**self._site_args(frame, node, context), attr=name, state_only=state_only,
                                     key=kind, key_node=key_node, sink=frame.sink, exchange=exchange))
        labels = {attr_label(name)}
        if kind == KEY_OWN:
            labels.add(f"own:{name}")
        else:
            labels.add(f"shared:{name}")
            if kind == KEY_GROUP:
                labels.add(GROUP)
            elif kind == KEY_OTHER:
                labels.add(f"cross:{name}")
        return frozenset(labels) | self._field_labels.get(name, EMPTY)

    def _is_layer_attribute(self, name: str) -> bool:
        return name in self.model.layer_index or name in KVPRESS_MODEL.layer_index

    def _expr(self, frame: _Frame, node: cst.BaseExpression | None, context: Context) -> Labels:
        if node is None:
            return EMPTY
        if isinstance(node, cst.Name):
            return frame.env.get(node.value, EMPTY)
        if isinstance(node, cst.Attribute):
            if self._is_layer_attribute(node.attr.value):
                return frozenset({LAYER})
            if frame.is_self(node.value):
                return self._read(frame, node, node.attr.value, context)
            labels = self._expr(frame, node.value, context)
            return labels | {INDICES} if node.attr.value == "indices" else labels
        if isinstance(node, cst.Call):
            return self._call_expr(frame, node, context)
        if isinstance(node, cst.Subscript):
            return self._subscript(frame, node, context)
        if isinstance(node, cst.BinaryOperation):
            return self._binary(frame, node, context)
        if isinstance(node, cst.Comparison):
            return self._comparison(frame, node, context)
        if isinstance(node, cst.BooleanOperation):
            return self._exprs(frame, [node.left, node.right], context)
        if isinstance(node, cst.UnaryOperation):
            return self._expr(frame, node.expression, context)
        if isinstance(node, cst.IfExp):
            labels, state = self._test(frame, node.test, context)
            self._branch(frame, node.test, labels, context, state)
            body = self._expr(frame, node.body, (*context, Cond(node.test, labels, True, frame.source)))
            orelse = self._expr(frame, node.orelse, (*context, Cond(node.test, labels, False, frame.source)))
            return body | orelse
        if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
            return self._exprs(frame, [e.value for e in node.elements], context)
        if isinstance(node, cst.Dict):
            parts = []
            for element in node.elements:
                parts.extend([element.key, element.value] if isinstance(element, cst.DictElement) else [element.value])
            return self._exprs(frame, parts, context)
        if isinstance(node, cst.FormattedString):
            return self._exprs(frame, [p.expression for p in node.parts if isinstance(p, cst.FormattedStringExpression)], context)
        if isinstance(node, (cst.ListComp, cst.SetComp, cst.GeneratorExp)):
            return self._comprehension(frame, node.for_in, context) | self._expr(frame, node.elt, context)
        if isinstance(node, cst.DictComp):
            return self._comprehension(frame, node.for_in, context) | self._exprs(frame, [node.key, node.value], context)
        if isinstance(node, (cst.StarredElement, cst.Await)):
            return self._expr(frame, node.value if isinstance(node, cst.StarredElement) else node.expression, context)
        if isinstance(node, cst.NamedExpr):
            labels = self._expr(frame, node.value, context)
            self._bind(frame, node.target, labels, context, node)
            return labels
        return EMPTY

    def _comprehension(self, frame: _Frame, for_in: cst.CompFor, context: Context) -> Labels:
        labels = self._expr(frame, for_in.iter, context)
        self._bind(frame, for_in.target, labels, context, for_in)
        for condition in for_in.ifs:
            self._expr(frame, condition.test, context)
        if for_in.inner_for_in is not None:
            labels |= self._comprehension(frame, for_in.inner_for_in, context)
        return labels

    def _subscript(self, frame: _Frame, node: cst.Subscript, context: Context) -> Labels:
        keys = self._slice_labels(frame, node, context)
        attr = self._self_attr(frame, node.value)
        if attr is not None:  # a lookup in a container kept on the press
            key_node = node.slice[0].slice if node.slice else None
            return self._read(frame, node, attr, context, key_labels=keys, key_node=key_node) | (keys - POSITION_LABELS)
        # `cache.layers[module.layer_idx]` is data of this layer, not a layer position.
        return self._expr(frame, node.value, context) | (keys - POSITION_LABELS)

    def _binary(self, frame: _Frame, node: cst.BinaryOperation, context: Context) -> Labels:
        left, right = self._expr(frame, node.left, context), self._expr(frame, node.right, context)
        labels = left | right
        if type(node.operator).__name__ in _ARITHMETIC:
            self._blend(frame, node, left, right, node.right, node.left)
        if isinstance(node.operator, (cst.Modulo, cst.FloorDivide)) and labels & POSITION_LABELS:
            fields = attrs_in(right if left & POSITION_LABELS else left)
            self.facts.arithmetic.append(Arithmetic(**self._site_args(frame, node, context), attrs=frozenset(fields)))
            return labels - {LAYER, OTHER} | {GROUP}
        if GROUP in labels:  # `layer - layer % n`, `(layer // n) * n`: still the group's
            return labels - {LAYER, OTHER}
        if labels & {LAYER, OTHER}:  # `layer - 1`, `layer + k`: another layer's index
            return labels - {LAYER} | {OTHER}
        return labels

    def _comparison(self, frame: _Frame, node: cst.Comparison, context: Context) -> Labels:
        labels = self._expr_state(frame, node.left, context)
        compares = False  # by value: `is None` asks whether there is a position, not which it is
        for target in node.comparisons:
            compares = compares or not isinstance(target.operator, (cst.Is, cst.IsNot))
            membership = isinstance(target.operator, (cst.In, cst.NotIn))
            attr = self._self_attr(frame, target.comparator) if membership else None
            if attr is not None:  # `key in self.x`: whose entry is there, or is the layer among fixed ones?
                key = labels & POSITION_LABELS
                read = self._read(frame, target.comparator, attr, context, state_only=True,
                                  key_labels=key if key else None, key_node=node.left)
                # The test keeps the key's position: whether `self.x` is per-layer state (written while
                # layers are compressed) or a fixed set of layers is decided from its stores, later.
                labels = labels | read
                continue
            labels |= self._expr_state(frame, target.comparator, context)
        return labels | {ANCHOR} if compares and labels & {LAYER, OTHER} else labels

    def _expr_state(self, frame: _Frame, node: cst.BaseExpression, context: Context) -> Labels:
        """Operands of `is None` / `in` checks on ``self.x`` are state checks, not uses."""
        attr = self._self_attr(frame, node)
        if attr is not None:
            return self._read(frame, node, attr, context, state_only=True)
        return self._expr(frame, node, context)

    # -- calls -----------------------------------------------------------------------------
    def _is_score_call(self, frame: _Frame, func: cst.BaseExpression) -> bool:
        """A call the configured press base names as its scoring (``chunkkv_update``, ``self.scores_fn``)."""
        if not self.model.score_calls:
            return False
        text = dotted(func)
        if text is None:
            return False
        head, _, rest = text.partition(".")
        if rest and head in frame.selves:
            text = f"self.{rest}"
        return any(text == pattern if "." in pattern else text.rpartition(".")[2] == pattern
                   for pattern in self.model.score_calls)

    def _call_expr(self, frame: _Frame, node: cst.Call, context: Context) -> Labels:
        func = node.func
        args = [a.value for a in node.args]
        if self._is_score_call(frame, func):
            if isinstance(func, cst.Attribute):
                self._expr(frame, func.value, context)
            self._exprs(frame, args, context)
            self._score_site(frame, node, context)
            return frozenset({SCORE, INDICES})  # a configured scoring call scores and selects
        if isinstance(func, cst.Name):
            if func.value == "getattr" and len(args) >= 2:
                name = _string_value(args[1])
                if name is not None and self._is_layer_attribute(name):
                    return frozenset({LAYER})
                if name is not None and frame.is_self(args[0]):
                    return self._read(frame, node, name, context)
            if func.value == "setattr" and len(args) >= 3 and frame.is_self(args[0]) and (name := _string_value(args[1])):
                self._store(frame, node, name, self._expr(frame, args[2], context), context, _is_empty_value(args[2]))
                return EMPTY
            followed = self._function_call(frame, node, func.value, args, context)
            if followed is not None:
                return followed
            labels = self._exprs(frame, args, context)
            return labels if func.value in _KEEP_POSITION_CALLS else labels - POSITION_LABELS
        if not isinstance(func, cst.Attribute):
            return self._exprs(frame, args, context) - POSITION_LABELS
        name = func.attr.value
        receiver = func.value
        if frame.is_self(receiver) or _is_super_call(receiver):
            return self._method_call(frame, node, name, receiver, args, context)
        attr = self._self_attr(frame, receiver)
        if attr is not None and name in _MUTATORS | _RESETTERS | {"get"} and not (name == "update" and len(args) > 1):
            # (`self.stats.update(step, layer, idx)` is a call on an object, not `dict.update`)
            return self._container_call(frame, node, attr, name, args, context)
        if (isinstance(receiver, cst.Subscript) and name in _MUTATORS
                and (attr := self._self_attr(frame, receiver.value)) is not None):
            # `self.buffer[layer_idx].append(h)`: a write into one entry of the container.
            keys = self._slice_labels(frame, receiver, context)
            self._store(frame, node, attr, self._exprs(frame, args, context), context, is_reset=False,
                        key_labels=keys, key_node=receiver.slice[0].slice if receiver.slice else None)
            return EMPTY
        if name == SCORE_METHOD or (name == NESTED_COMPRESS and attr is not None):
            # A nested press: `self.press.score(...)`, or its compress(), which scores too.
            self._expr(frame, receiver, context)
            self._exprs(frame, args, context)
            self._score_site(frame, node, context)
            return frozenset({SCORE})
        held = self._held_object(frame, receiver)
        if held is not None:
            followed = self._held_call(frame, node, held, name, args, context)
            if followed is not None:
                return followed
        if attr is not None:
            exchanged = self._exchange(frame, node, attr, args, context)
            if exchanged is not None:
                return exchanged
        if isinstance(receiver, cst.Name) and receiver.value not in frame.env:
            # `helpers.select(self, ...)`: a function of another module of the run.
            followed = self._function_call(frame, node, f"{receiver.value}.{name}", args, context)
            if followed is not None:
                return followed
        receiver_labels = self._expr(frame, receiver, context)
        arg_labels = [self._expr(frame, a, context) - POSITION_LABELS for a in args]
        if isinstance(receiver, cst.Name) and receiver.value not in frame.env and arg_labels:
            receiver_labels |= arg_labels[0]  # `torch.cat(x, ...)`: the data is the first argument
        # `x.gather(2, idx)` holds x's data: a selection in an argument does not make the result one.
        labels = receiver_labels | frozenset().union(*(a - {INDICES} for a in arg_labels))
        if name in _MASK_CALLS and any(INDICES in a for a in arg_labels):
            return labels | {MASK}
        return labels | {INDICES} if name in _INDEX_CALLS else labels

    @staticmethod
    def _is_log_statement(frame: _Frame, value: cst.BaseExpression) -> bool:
        """``print(...)``, or ``logger.info(...)`` on a module-level name, whose result is dropped."""
        if not isinstance(value, cst.Call):
            return False
        func = value.func
        if isinstance(func, cst.Name):
            return func.value == "print"
        return (isinstance(func, cst.Attribute) and func.attr.value in _LOG_METHODS
                and isinstance(func.value, cst.Name) and func.value.value not in frame.env
                and func.value.value not in frame.selves)

    def _log_args(self, frame: _Frame, args: list, context: Context) -> Labels:
        for arg in args:
            self._sinked(frame, "log", arg, context)
        return EMPTY

    def _container_call(self, frame: _Frame, node: cst.Call, attr: str, name: str, args: list, context: Context) -> Labels:
        key = self._slice_free_labels(frame, args[:1], context) if args else None
        rest = self._exprs(frame, args[1:], context)
        key_node = args[0] if args else None
        if name == "get":
            read = self._read(frame, node, attr, context, key_labels=key, key_node=key_node)
            return read | ((key or EMPTY) - POSITION_LABELS) | rest
        if name in _RESETTERS:
            if name == "clear" or name == "popitem":
                self._store(frame, node, attr, EMPTY, context, is_reset=True)
                return EMPTY
            self._store(frame, node, attr, EMPTY, context, is_reset=True, key_labels=key, key_node=key_node)
            return self._read(frame, node, attr, context, key_labels=key, key_node=key_node)
        if name in {"setdefault", "__setitem__"}:
            self._store(frame, node, attr, rest, context, is_reset=False, key_labels=key, key_node=key_node)
            return self._read(frame, node, attr, context, key_labels=key, key_node=key_node) if name == "setdefault" else EMPTY
        self._store(frame, node, attr, (key or EMPTY) | rest, context, is_reset=False)
        return EMPTY

    def _slice_free_labels(self, frame: _Frame, nodes: list, context: Context) -> Labels:
        saved, frame.sink = frame.sink, None
        try:
            return self._exprs(frame, nodes, context)
        finally:
            frame.sink = saved

    def _score_site(self, frame: _Frame, node: cst.Call, context: Context) -> None:
        if self._record_scores:
            call = frame.source.code_for_node(node.func) + "(...)"
            self.facts.score_sites.append(ScoreSite(**self._site_args(frame, node, context), call=call))

    def _method_call(self, frame: _Frame, node: cst.Call, name: str, receiver, args: list, context: Context) -> Labels:
        arg_labels = [self._expr(frame, a, context) for a in args]
        if name == SCORE_METHOD and frame.obj is self.this:
            self._score_site(frame, node, context)
        resolved = self.method(name, after=frame.owner if _is_super_call(receiver) else None, obj=frame.obj)
        if resolved is None:
            returned = frozenset().union(*arg_labels) if arg_labels else EMPTY
            return returned | ({SCORE} if name == SCORE_METHOD else set())
        owner, function = resolved
        params = self._bind_params(function, node, arg_labels, skip_self=True)
        held = self._bind_held(frame, function, node, skip_self=True)
        returned = self._call_method(owner, function, frame.obj, params, context, self._record_scores, held)
        return returned | ({SCORE} if name == SCORE_METHOD else set())

    def _held_object(self, frame: _Frame, receiver: cst.BaseExpression) -> _Object | None:
        if isinstance(receiver, cst.Name):
            return frame.held.get(receiver.value)
        attr = self._self_attr(frame, receiver)
        if attr is not None and frame.obj is self.this:
            return self._held.get(attr)
        return None

    def _held_call(self, frame: _Frame, node: cst.Call, held: _Object, name: str, args: list,
                   context: Context) -> Labels | None:
        """``self.coordinator.publish(layer, kept)``: follow into the held object's method, whose
        ``self`` is that object (its state is shared by every layer)."""
        resolved = self.method(name, obj=held)
        if resolved is None:
            return None
        owner, function = resolved
        arg_labels = [self._expr(frame, a, context) for a in args]
        params = self._bind_params(function, node, arg_labels, skip_self=True)
        return self._call_method(owner, function, held, params, context, self._record_scores)

    def _exchange(self, frame: _Frame, node: cst.Call, attr: str, args: list, context: Context) -> Labels | None:
        """A call on an object the press holds whose code the run does not have: with a layer
        position and a selection it publishes; with a layer position alone it fetches."""
        arg_labels = [self._expr(frame, a, context) for a in args]
        every = frozenset().union(*arg_labels) if arg_labels else EMPTY
        if not every & POSITION_LABELS:
            return None
        if every & ({SCORE} | SELECTION):
            self._store(frame, node, attr, every - POSITION_LABELS, context, is_reset=False, key_labels=EMPTY,
                        shared=True, exchange=True)
            return EMPTY
        if node is frame.dropped:  # `self.stats.log(layer, x)`: nothing is fetched from it
            return None
        return (self._read(frame, node, attr, context, key_labels=EMPTY, shared=True, exchange=True)
                | (every - POSITION_LABELS))

    def _function_call(self, frame: _Frame, node: cst.Call, name: str, args: list, context: Context) -> Labels | None:
        """Follow a module-level function of the run: the press passed as an argument is ``self``."""
        resolved = self.index.resolve_function(frame.source, name)
        if resolved is None:
            return None
        source, function_name = resolved
        module = self.index.module_of(source)
        tree = module.functions.get(function_name) if module is not None else None
        function = source.top_level_node(tree, last=True) if tree is not None else None
        if function is None:
            return None
        arg_labels = [self._expr(frame, a, context) for a in args]
        params = self._bind_params(function, node, arg_labels, skip_self=False)
        selves: set[str] = set()
        held: dict[str, _Object] = {}
        for arg, param in self._pairs(function, node, skip_self=False):
            if frame.is_self(arg):
                selves.add(param)
            elif (target := self._held_object(frame, arg)) is not None:
                held[param] = target
        callee = _Frame(source, function, f"{module.name if module else source.display}:{function_name}", None,
                        frame.obj, frozenset(selves), params, held=held)
        return self._run_frame(callee, context, self._record_scores)

    @staticmethod
    def _pairs(function: cst.FunctionDef, node: cst.Call, skip_self: bool) -> list[tuple[cst.BaseExpression, str]]:
        """(argument, parameter) pairs of a call."""
        positional = _positional(function)
        static = _decorated(function, "staticmethod")
        positional = positional[1:] if skip_self and not static else positional
        pairs = []
        for arg in node.args:
            if arg.keyword is not None:
                pairs.append((arg.value, arg.keyword.value))
            elif arg.star == "" and positional:
                pairs.append((arg.value, positional.pop(0)))
        return pairs

    def _bind_params(self, function: cst.FunctionDef, node: cst.Call, arg_labels: list[Labels],
                     skip_self: bool) -> dict[str, Labels]:
        # `self.m(a)` binds `a` to the second parameter, unless `m` is a staticmethod.
        labels_of = {id(arg.value): labels for arg, labels in zip(node.args, arg_labels)}
        return {param: labels_of.get(id(arg), EMPTY) for arg, param in self._pairs(function, node, skip_self)}

    def _bind_held(self, frame: _Frame, function: cst.FunctionDef, node: cst.Call, skip_self: bool) -> dict[str, _Object]:
        held = {}
        for arg, param in self._pairs(function, node, skip_self):
            target = self._held_object(frame, arg)
            if target is not None:
                held[param] = target
        return held


