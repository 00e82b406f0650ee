"""A small label-propagation pass over a press's methods.

It answers, for one press class, where ``score()`` is reached, under which branch
conditions, which values depend on the layer's position, and what is stored on and
read back from the press instance. It follows ``self.method()`` calls, ``super()``
calls and inherited methods (kvpress's own ``BasePress.forward_hook`` included, read
from its installed source), carrying the branch conditions of each call site into the
callee. It reasons about data flow, never about names: a field called ``share_every``
counts exactly as ``n_reuse`` does.

Labels carried by values:
    ``layer``   depends on the layer's position (``module.layer_idx``, ``getattr(m, "layer_idx")``)
    ``group``   a layer-group value: layer arithmetic with ``%`` or ``//``, or a lookup keyed by the layer
    ``score``   derived from a ``score()`` result (scores, top-k indices, gathered positions)
    ``attr:X``  read from ``self.X``
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from .index import ClassInfo, ProjectIndex
from ..source import SourceFile

LAYER, GROUP, SCORE = "layer", "group", "score"
POSITION_LABELS = frozenset({LAYER, GROUP})
LAYER_ATTRIBUTE = "layer_idx"
SCORE_METHOD = "score"
NESTED_COMPRESS = "compress"
ENTRY_METHODS = ("forward_hook", "compress")
_MAX_DEPTH = 12
_MUTATORS = frozenset({"append", "add", "update", "setdefault", "insert", "extend", "__setitem__"})
_RESETTERS = frozenset({"clear", "pop", "popitem"})
_KEEP_POSITION_CALLS = frozenset({"int", "abs", "min", "max", "divmod", "range"})
Labels = frozenset[str]
EMPTY: Labels = frozenset()


def attr_label(name: str) -> str:
    return f"attr:{name}"


def attrs_in(labels: Labels) -> set[str]:
    return {label[5:] for label in labels if label.startswith("attr:")}


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


@dataclass(frozen=True)
class ScoreSite(Site):
    call: str = ""  # e.g. "self.press.score(...)"


@dataclass(frozen=True)
class Store(Site):
    attr: str = ""
    labels: Labels = EMPTY
    is_reset: bool = False


@dataclass(frozen=True)
class Read(Site):
    attr: str = ""
    state_only: bool = False  # `self.x is None`, `key in self.x`: a check, not a use of the value


@dataclass(frozen=True)
class Arithmetic(Site):
    attrs: frozenset[str] = frozenset()  # fields combined with the layer position


@dataclass(frozen=True)
class Branch(Site):
    labels: Labels = EMPTY


@dataclass
class FlowFacts:
    """Everything the pass saw for one press class."""

    score_sites: list[ScoreSite] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    arithmetic: list[Arithmetic] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    methods_seen: set[str] = field(default_factory=set)


@dataclass
class _Frame:
    owner: ClassInfo
    function: cst.FunctionDef
    env: dict[str, Labels]
    returns: set[str] = field(default_factory=set)


def _terminates(block: cst.BaseSuite) -> bool:
    body = block.body if isinstance(block, cst.IndentedBlock) else [block]
    if not body:
        return False
    last = body[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
    if isinstance(last, cst.SimpleStatementSuite):
        return any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
    if isinstance(last, cst.If):
        return _terminates(last.body) and last.orelse is not None and _orelse_terminates(last.orelse)
    return False


def _orelse_terminates(orelse: cst.If | cst.Else) -> bool:
    if isinstance(orelse, cst.Else):
        return _terminates(orelse.body)
    return _terminates(orelse.body) and orelse.orelse is not None and _orelse_terminates(orelse.orelse)


def _is_self(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "self"


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


def _string_value(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.SimpleString):
        return expr.evaluated_value if isinstance(expr.evaluated_value, str) else None
    return None


class FlowAnalyzer:
    """Runs the label-propagation pass for one press class."""

    def __init__(self, index: ProjectIndex, press: ClassInfo) -> None:
        self.index = index
        self.press = press
        self.mro = index.mro(press)
        self.facts = FlowFacts()
        self._stack: list[int] = []
        self._record_scores = True  # off while sweeping methods the hook never reaches

    # -- method resolution ---------------------------------------------------------------
    def method(self, name: str, after: ClassInfo | None = None) -> tuple[ClassInfo, cst.FunctionDef] | None:
        """Resolve ``self.name`` (or ``super().name`` when ``after`` is the defining class)."""
        classes = self.mro
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
        entry = self.method(ENTRY_METHODS[0]) or self.method(ENTRY_METHODS[1])
        if entry is not None:
            self._call(entry[0], entry[1], {}, ())
        # Methods never reached from the hook still hold stores and reads (resets, caches).
        for cls in self.mro:
            for statement in cls.node.body.body:
                if isinstance(statement, cst.FunctionDef) and f"{cls.name}.{statement.name.value}" not in self.facts.methods_seen:
                    self._call(cls, statement, {}, (), record_scores=False)
        self._deduplicate()
        return self.facts

    def _deduplicate(self) -> None:
        # Loop bodies are walked twice to reach a fixpoint; keep one copy of each fact.
        for name in ("score_sites", "stores", "reads", "arithmetic", "branches"):
            seen: set = set()
            unique = []
            for site in getattr(self.facts, name):
                key = (id(site.node), tuple((id(c.node), c.taken) for c in site.context), getattr(site, "attr", ""))
                if key not in seen:
                    seen.add(key)
                    unique.append(site)
            setattr(self.facts, name, unique)

    def _call(
        self,
        owner: ClassInfo,
        function: cst.FunctionDef,
        params: dict[str, Labels],
        context: Context,
        record_scores: bool = True,
    ) -> Labels:
        key = id(function)
        if key in self._stack or len(self._stack) >= _MAX_DEPTH:
            return EMPTY
        self._stack.append(key)
        self.facts.methods_seen.add(f"{owner.name}.{function.name.value}")
        frame = _Frame(owner, function, dict(params))
        saved, self._record_scores = self._record_scores, record_scores
        try:
            # Twice, so that values assigned late in a loop reach uses earlier in it.
            for _ in range(2):
                self._block(frame, function.body, context)
        finally:
            self._record_scores = saved
            self._stack.pop()
        return frozenset(frame.returns)

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

    def _if(self, frame: _Frame, node: cst.If, context: Context) -> tuple[Context, bool]:
        labels = self._expr(frame, node.test, context)
        self._branch(frame, node.test, labels, context)
        body_leaves = self._block(frame, node.body, (*context, Cond(node.test, labels, True, frame.owner.source)))
        else_context = (*context, Cond(node.test, labels, False, frame.owner.source))
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
            return (*context, Cond(node.test, labels, True, frame.owner.source)), False
        return context, False

    def _loop(self, frame: _Frame, node: cst.For | cst.While, context: Context) -> None:
        if isinstance(node, cst.For):
            labels = self._expr(frame, node.iter, context)
            self._bind(frame, node.target, labels, context, node)
            inner = context
        else:
            labels = self._expr(frame, node.test, context)
            self._branch(frame, node.test, labels, context)
            inner = (*context, Cond(node.test, labels, True, frame.owner.source))
        self._block(frame, node.body, inner)
        if node.orelse is not None:
            self._block(frame, node.orelse.body, context)

    def _small(self, frame: _Frame, node: cst.BaseSmallStatement, context: Context) -> None:
        if isinstance(node, cst.Assign):
            labels = self._expr(frame, node.value, context)
            for target in node.targets:
                self._bind(frame, target.target, labels, context, node, value=node.value)
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            labels = self._expr(frame, node.value, context) if node.value is not None else EMPTY
            if isinstance(node, cst.AugAssign):
                labels |= self._expr(frame, node.target, context)
            if node.value is not None:
                self._bind(frame, node.target, labels, context, node, value=node.value)
        elif isinstance(node, cst.Return) and node.value is not None:
            frame.returns |= self._expr(frame, node.value, context)
        elif isinstance(node, cst.Expr):
            self._expr(frame, node.value, context)
        elif isinstance(node, cst.Assert):
            self._expr(frame, node.test, context)
        elif isinstance(node, cst.Del):
            self._delete(frame, node.target, context)

    def _delete(self, frame: _Frame, target: cst.BaseExpression, context: Context) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._delete(frame, element.value, context)
            return
        attr = self._self_attr(target if not isinstance(target, cst.Subscript) else target.value)
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
    ) -> None:
        if isinstance(target, cst.Name):
            frame.env[target.value] = frame.env.get(target.value, EMPTY) | labels
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(frame, element.value, labels, context, statement)
        elif isinstance(target, cst.StarredElement):
            self._bind(frame, target.value, labels, context, statement)
        elif (attr := self._self_attr(target)) is not None:
            self._store(frame, statement, attr, labels, context, is_reset=_is_empty_value(value))
        elif isinstance(target, cst.Subscript) and (attr := self._self_attr(target.value)) is not None:
            keys = self._slice_labels(frame, target, context)
            self._store(frame, statement, attr, labels | keys, context, is_reset=False)

    # -- facts ---------------------------------------------------------------------------
    def _site_args(self, frame: _Frame, node: cst.CSTNode, context: Context) -> dict:
        return {"node": node, "source": frame.owner.source, "context": context,
                "method": f"{frame.owner.name}.{frame.function.name.value}"}

    def _store(self, frame: _Frame, node: cst.CSTNode, attr: str, labels: Labels, context: Context, is_reset: bool) -> None:
        self.facts.stores.append(Store(**self._site_args(frame, node, context), attr=attr, labels=labels, is_reset=is_reset))

    def _branch(self, frame: _Frame, test: cst.BaseExpression, labels: Labels, context: Context) -> None:
        if labels & POSITION_LABELS:
            self.facts.branches.append(Branch(**self._site_args(frame, test, context), labels=labels))

    @staticmethod
    def _self_attr(expr: cst.BaseExpression) -> str | None:
        if isinstance(expr, cst.Attribute) and _is_self(expr.value):
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
        for element in node.slice:
            if isinstance(element.slice, cst.Index):
                labels |= self._expr(frame, element.slice.value, context)
            else:
                labels |= self._exprs(frame, [p for p in (element.slice.lower, element.slice.upper, element.slice.step) if p], context)
        return labels

    def _read(self, frame: _Frame, node: cst.CSTNode, attr: str, context: Context, state_only: bool = False) -> Labels:
        self.facts.reads.append(Read(**self._site_args(frame, node, context), attr=attr, state_only=state_only))
        return frozenset({attr_label(attr)})

    def _expr(self, frame: _Frame, node: cst.BaseExpression | None, context: Context) -> Labels:
        if node is None:
            return EMPTY
        if isinstance(node, cst.Name):
            return frame.env.get(node.value, EMPTY)
        if isinstance(node, cst.Attribute):
            if node.attr.value == LAYER_ATTRIBUTE:
                return frozenset({LAYER})
            if _is_self(node.value):
                return self._read(frame, node, node.attr.value, context)
            return self._expr(frame, node.value, context)
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
            labels = self._expr(frame, node.test, context)
            self._branch(frame, node.test, labels, context)
            body = self._expr(frame, node.body, (*context, Cond(node.test, labels, True, frame.owner.source)))
            orelse = self._expr(frame, node.orelse, (*context, Cond(node.test, labels, False, frame.owner.source)))
            return body | orelse
        if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
            return self._exprs(frame, [e.value for e in node.elements], context)
        if isinstance(node, cst.Dict):
            parts = []
            for element in node.elements:
                parts.extend([element.key, element.value] if isinstance(element, cst.DictElement) else [element.value])
            return self._exprs(frame, parts, context)
        if isinstance(node, (cst.FormattedString,)):
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
        attr = self._self_attr(node.value)
        if attr is not None:  # a lookup in a container kept on the press
            labels = self._read(frame, node.value, attr, context)
            return labels | (keys - POSITION_LABELS) | ({GROUP} if keys & POSITION_LABELS else set())
        # `cache.layers[module.layer_idx]` is data of this layer, not a layer position.
        return self._expr(frame, node.value, context) | (keys - POSITION_LABELS)

    def _binary(self, frame: _Frame, node: cst.BinaryOperation, context: Context) -> Labels:
        left, right = self._expr(frame, node.left, context), self._expr(frame, node.right, context)
        labels = left | right
        if isinstance(node.operator, (cst.Modulo, cst.FloorDivide)) and labels & POSITION_LABELS:
            labels |= {GROUP}
            fields = attrs_in(right if LAYER in left or GROUP in left else left)
            self.facts.arithmetic.append(Arithmetic(**self._site_args(frame, node, context), attrs=frozenset(fields)))
        return labels

    def _comparison(self, frame: _Frame, node: cst.Comparison, context: Context) -> Labels:
        labels = self._expr_state(frame, node.left, context, node)
        for target in node.comparisons:
            operand = self._expr_state(frame, target.comparator, context, node)
            if isinstance(target.operator, (cst.In, cst.NotIn)) and attrs_in(operand) and labels & POSITION_LABELS:
                labels |= {GROUP}  # membership of a layer-derived key in a container on the press
            labels |= operand
        return labels

    def _expr_state(self, frame: _Frame, node: cst.BaseExpression, context: Context, comparison: cst.Comparison) -> Labels:
        """Operands of `is None` / `in` checks on ``self.x`` are state checks, not uses."""
        attr = self._self_attr(node)
        if attr is not None:
            return self._read(frame, node, attr, context, state_only=True)
        return self._expr(frame, node, context)

    def _call_expr(self, frame: _Frame, node: cst.Call, context: Context) -> Labels:
        func = node.func
        args = [a.value for a in node.args]
        if isinstance(func, cst.Name):
            if func.value == "getattr" and len(args) >= 2:
                name = _string_value(args[1])
                if name == LAYER_ATTRIBUTE:
                    return frozenset({LAYER})
                if name is not None and _is_self(args[0]):
                    return self._read(frame, node, name, context)
            if func.value == "setattr" and len(args) >= 3 and _is_self(args[0]) and (name := _string_value(args[1])):
                self._store(frame, node, name, self._expr(frame, args[2], context), context, _is_empty_value(args[2]))
                return EMPTY
            labels = self._exprs(frame, args, context)
            return labels if func.value in _KEEP_POSITION_CALLS else labels - POSITION_LABELS
        if not isinstance(func, cst.Attribute):
            return self._exprs(frame, args, context) - POSITION_LABELS
        name = func.attr.value
        receiver = func.value
        if _is_self(receiver) or _is_super_call(receiver):
            return self._method_call(frame, node, name, receiver, args, context)
        attr = self._self_attr(receiver)
        if attr is not None and name in _MUTATORS | _RESETTERS | {"get"}:
            return self._container_call(frame, node, attr, name, args, context)
        if name == SCORE_METHOD or (name == NESTED_COMPRESS and attr is not None):
            # A nested press: `self.press.score(...)`, or its compress(), which scores too.
            self._expr(frame, receiver, context)
            self._exprs(frame, args, context)
            self._score_site(frame, node, context)
            return frozenset({SCORE})
        receiver_labels = self._expr(frame, receiver, context)
        return receiver_labels | (self._exprs(frame, args, context) - POSITION_LABELS)

    def _container_call(self, frame: _Frame, node: cst.Call, attr: str, name: str, args: list, context: Context) -> Labels:
        labels = self._exprs(frame, args, context)
        if name == "get":
            read = self._read(frame, node, attr, context)
            return read | (labels - POSITION_LABELS) | ({GROUP} if labels & POSITION_LABELS else set())
        if name in _RESETTERS:
            self._store(frame, node, attr, EMPTY, context, is_reset=True)
            return self._read(frame, node, attr, context) if name != "clear" else EMPTY
        self._store(frame, node, attr, labels, context, is_reset=False)
        return EMPTY

    def _score_site(self, frame: _Frame, node: cst.Call, context: Context) -> None:
        if self._record_scores:
            call = frame.owner.source.module.code_for_node(node.func) + "(...)"
            self.facts.score_sites.append(ScoreSite(**self._site_args(frame, node, context), call=call))

    def _method_call(self, frame: _Frame, node: cst.Call, name: str, receiver, args: list, context: Context) -> Labels:
        arg_labels = [self._expr(frame, a, context) for a in args]
        if name == SCORE_METHOD:
            self._score_site(frame, node, context)
        resolved = self.method(name, after=frame.owner if _is_super_call(receiver) else None)
        if resolved is None:
            returned = frozenset().union(*arg_labels) if arg_labels else EMPTY
            return returned | ({SCORE} if name == SCORE_METHOD else set())
        owner, function = resolved
        params = self._bind_params(function, node, arg_labels)
        returned = self._call(owner, function, params, context, record_scores=self._record_scores)
        return returned | ({SCORE} if name == SCORE_METHOD else set())

    @staticmethod
    def _bind_params(function: cst.FunctionDef, node: cst.Call, arg_labels: list[Labels]) -> dict[str, Labels]:
        positional = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
        # `self.m(a)` binds `a` to the second parameter, unless `m` is a staticmethod.
        is_static = any(isinstance(d.decorator, cst.Name) and d.decorator.value == "staticmethod"
                        for d in function.decorators)
        positional = positional if is_static else positional[1:]
        bound: dict[str, Labels] = {}
        for arg, labels in zip(node.args, arg_labels):
            if arg.keyword is not None:
                bound[arg.keyword.value] = labels
            elif arg.star == "" and positional:
                bound[positional.pop(0)] = labels
        return bound
