"""Local tensor-pattern facts for the rules beyond reuse (KVA201 batch-row-0, KVA203 index loops).

Everything here is syntactic and local to one method: a flow-insensitive propagation of
"derived from" over the names bound in a function (assignments, ``for`` targets, list
``append``/``extend``, item assignment and in-place tensor methods). It reasons about the
operations applied to values (``.indices``, ``argsort``, ``[0]``, ``.expand``), never about
variable names.

It works on CPython's ``ast`` trees, which the index already holds for every file: these
rules look at every press, and building libcst trees for all of them would cost more than
the rest of the audit. Nothing here imports torch.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache

from .index import ClassInfo, ProjectIndex
from ..source import SourceFile, one_line

# Calls that return a tensor of positions.
INDEX_CALLS = frozenset({"argsort", "argmax", "argmin", "argwhere", "nonzero"})
# Calls that return a (values, indices) pair (or a tuple): ``[0]`` on them is a field, not a batch row.
PAIR_CALLS = frozenset({"topk", "sort", "max", "min", "median", "mode", "kthvalue", "cummax", "cummin", "unique",
                        "chunk", "split", "unbind", "broadcast_tensors", "meshgrid", "where"})
# Methods that keep "this is a tensor of positions" when chained on one.
INDEX_PASSTHROUGH = frozenset({"to", "long", "int", "cpu", "cuda", "squeeze", "unsqueeze", "flatten", "view",
                               "reshape", "contiguous", "clone", "detach", "type", "t", "transpose", "permute"})
# Methods that broadcast a value over new leading rows.
BROADCAST_CALLS = frozenset({"expand", "expand_as", "repeat", "broadcast_to", "repeat_interleave"})
TORCH_MODULES = frozenset({"torch", "th"})
# Attribute reads and calls that give metadata (shapes, devices), not tensor data.
_METADATA_ATTRS = frozenset({"shape", "device", "dtype", "ndim", "is_cuda", "layout"})
_METADATA_CALLS = frozenset({"size", "dim", "numel", "len", "isinstance", "type", "nelement", "get_device"})
# Mutating methods: ``x.append(v)`` makes ``x`` carry ``v``.
_MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "appendleft", "extendleft"})

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


# -- node helpers ------------------------------------------------------------------------


def call_name(call: ast.Call) -> str | None:
    """``argsort`` for ``x.argsort(...)`` and ``torch.argsort(...)``; ``len`` for ``len(x)``."""
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def function_form(call: ast.Call) -> bool:
    """``torch.gather(x, ...)`` (or a bare function) rather than ``x.gather(...)``."""
    if isinstance(call.func, ast.Name):
        return True
    return (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
            and call.func.value.id in TORCH_MODULES)


def call_receiver(call: ast.Call) -> ast.expr | None:
    """The tensor a call works on: ``x`` for ``x.m(...)``, the first argument of ``torch.m(x, ...)``."""
    if function_form(call):
        return call.args[0] if call.args else None
    return call.func.value if isinstance(call.func, ast.Attribute) else None


def is_zero(expr: ast.AST | None) -> bool:
    return isinstance(expr, ast.Constant) and type(expr.value) is int and expr.value == 0


def is_int(expr: ast.AST | None, value: int) -> bool:
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        return is_int(expr.operand, -value)
    return isinstance(expr, ast.Constant) and type(expr.value) is int and expr.value == value


def subscript_elements(sub: ast.Subscript) -> list[ast.expr]:
    """The comma-separated parts of ``x[a, b:c, ...]``."""
    return list(sub.slice.elts) if isinstance(sub.slice, ast.Tuple) else [sub.slice]


def first_index(sub: ast.Subscript) -> ast.expr | None:
    """The first part of ``x[a, ...]`` when it is a plain index (not a slice)."""
    first = subscript_elements(sub)[0]
    return None if isinstance(first, ast.Slice) else first


def is_full_slice(element: ast.expr) -> bool:
    if isinstance(element, ast.Slice):
        return element.lower is None and element.upper is None and element.step is None
    return isinstance(element, ast.Constant) and element.value is Ellipsis


def _is_metadata(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr in _METADATA_ATTRS:
        return True
    return isinstance(node, ast.Call) and call_name(node) in _METADATA_CALLS


def walk(node: ast.AST, skip_metadata: bool = False) -> Iterator[ast.AST]:
    """``node`` and what it contains, in source order, not entering nested defs or classes;
    with ``skip_metadata``, not inside ``.shape`` or ``size()`` either."""
    stack = [node]
    while stack:
        current = stack.pop()
        if skip_metadata and _is_metadata(current):
            continue
        yield current
        inner = [c for c in ast.iter_child_nodes(current)
                 if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.expr_context))]
        stack.extend(reversed(inner))


def walk_all(nodes: list[ast.AST]) -> Iterator[ast.AST]:
    for node in nodes:
        yield from walk(node)


def names_in(expr: ast.AST) -> set[str]:
    """Names whose tensor data ``expr`` reads (shape and device reads excluded)."""
    return {n.id for n in walk(expr, skip_metadata=True) if isinstance(n, ast.Name)}


def target_names(target: ast.AST) -> set[str]:
    """Names bound (or mutated) by an assignment target; ``x[i] = v`` mutates ``x``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return {name for element in target.elts for name in target_names(element)}
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    if isinstance(target, ast.Subscript):
        return target_names(target.value)
    return set()


def snippet(source: SourceFile, node: ast.AST) -> str:
    """One line of source for ``node``, shortened for messages."""
    return one_line(ast.get_source_segment(source.text, node) or ast.unparse(node))


# -- bindings and propagation --------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """``targets`` receive a value computed from ``values`` (flow-insensitive)."""

    targets: frozenset[str]
    values: tuple[ast.AST, ...]
    kind: str  # "assign" | "for" | "mutate"


@lru_cache(maxsize=512)  # KVA201 and KVA203 look at the same methods
def bindings(function: FunctionNode) -> list[Binding]:
    found: list[Binding] = []
    for node in walk_all(function.body):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript):
                    found.append(Binding(frozenset(target_names(target)), (node.value, target.slice), "mutate"))
                else:
                    found.append(Binding(frozenset(target_names(target)), (node.value,), "assign"))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            found.append(Binding(frozenset(target_names(node.target)), (node.value,), "assign"))
        elif isinstance(node, ast.AugAssign):
            found.append(Binding(frozenset(target_names(node.target)), (node.value,), "mutate"))
        elif isinstance(node, ast.NamedExpr):
            found.append(Binding(frozenset(target_names(node.target)), (node.value,), "assign"))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            found.append(Binding(frozenset(target_names(node.target)), (node.iter,), "for"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in _MUTATORS or (method.endswith("_") and not method.startswith("_")):
                receiver = target_names(node.func.value)
                if receiver and node.args:
                    found.append(Binding(frozenset(receiver), tuple(node.args), "mutate"))
    return [b for b in found if b.targets]


def derived_from(expr: ast.AST, names: set[str], seed: Callable[[ast.AST], bool]) -> bool:
    return bool(names_in(expr) & names) or any(seed(n) for n in walk(expr, skip_metadata=True))


def propagate(binds: list[Binding], seed: Callable[[ast.AST], bool]) -> set[str]:
    """Names holding a value derived from a node for which ``seed`` holds (fixpoint)."""
    facts = []
    for binding in binds:
        names: set[str] = set()
        seeded = False
        for value in binding.values:
            for node in walk(value, skip_metadata=True):
                if isinstance(node, ast.Name):
                    names.add(node.id)
                elif not seeded and seed(node):
                    seeded = True
        facts.append((binding.targets, names, seeded))
    derived: set[str] = {name for targets, _, seeded in facts if seeded for name in targets}
    changed = True
    while changed:
        changed = False
        for targets, names, _ in facts:
            if not targets <= derived and names & derived:
                derived |= targets
                changed = True
    return derived


def source_text(source: SourceFile, function: FunctionNode) -> str:
    """The text of ``function``: a first look by regular expression costs far less than a walk."""
    return "\n".join(source.lines[function.lineno - 1 : function.end_lineno or function.lineno])


# -- index tensors -------------------------------------------------------------------------


@lru_cache(maxsize=512)
def index_names(function: FunctionNode) -> frozenset[str]:
    """Names bound to a tensor of positions (``x.topk(k).indices``, ``argsort``...), strictly."""
    assigns = [b for b in bindings(function) if b.kind == "assign"]
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for binding in assigns:
            if not binding.targets <= names and is_index_tensor(binding.values[0], names):
                names |= binding.targets
                changed = True
    return frozenset(names)


def is_index_tensor(expr: ast.AST, names: AbstractSet[str]) -> bool:
    """``expr`` is a tensor of positions: ``.indices``, ``argsort(...)``, ``topk(...)[1]``, a part of one
    (``idx[0]``, ``idx[:, :8]``), or a name bound to one."""
    if isinstance(expr, ast.Name):
        return expr.id in names
    if isinstance(expr, ast.Attribute):
        return expr.attr == "indices"
    if isinstance(expr, ast.Call):
        name = call_name(expr)
        if name in INDEX_CALLS:
            return True
        if name in INDEX_PASSTHROUGH and isinstance(expr.func, ast.Attribute):
            return is_index_tensor(expr.func.value, names)
        return False
    if isinstance(expr, ast.Subscript):
        if is_index_tensor(expr.value, names):
            return True
        # topk(...)[1], sort(...)[1]: the indices half of the pair.
        return (isinstance(expr.value, ast.Call) and call_name(expr.value) in {"topk", "sort"}
                and is_int(expr.slice, 1))
    return False


# -- tensors with a batch dimension -----------------------------------------------------------
# KVA201 needs to know that `x[0]` takes a batch row: only where `x` is known to be a tensor
# whose first dimension is the batch (a `[start, end]` pair, a list of chunks or a 1-D row
# taken earlier is not).

# The tensors a kvpress press is handed, batch first: (batch, heads, seq, dim) and (batch, seq, hidden);
# and those of transformers' attention interface (`attention_forward(module, query, key, value,
# attention_mask, ...)`), which research code hooks in place of a press (see docs/press-bases.md).
BATCH_PARAMETERS = frozenset({"hidden_states", "keys", "values", "attentions",
                              "query", "key", "value", "attention_mask", "query_states", "key_states", "value_states"})
# Methods that turn a tensor into Python data or metadata.
_TO_PYTHON = frozenset({"item", "tolist", "numpy", "size", "dim", "numel", "nelement", "data_ptr", "element_size"})
# Reductions: the batch dimension stays unless it is reduced (no `dim`, or `dim=0`).
_REDUCTIONS = frozenset({"sum", "mean", "max", "min", "amax", "amin", "prod", "std", "var", "norm", "logsumexp",
                         "all", "any", "median", "argmax", "argmin", "count_nonzero", "nansum", "nanmean"})
_RESHAPES = frozenset({"view", "reshape"})


def _dim_argument(call: ast.Call, position: int) -> ast.expr | None:
    keyword = next((k.value for k in call.keywords if k.arg in ("dim", "start_dim", "axis")), None)
    if keyword is not None:
        return keyword
    return call.args[position] if len(call.args) > position else None


def _mentions_zero(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Tuple):
        return any(is_zero(e) for e in expr.elts)
    return is_zero(expr)


def _keeps_batch(call: ast.Call, name: str) -> bool:
    """Whether ``receiver.name(...)`` (or ``torch.name(receiver, ...)``) keeps dimension 0 as the batch."""
    offset = 1 if function_form(call) else 0  # torch.sum(x, dim) has the receiver as argument 0
    if name in _TO_PYTHON:
        return False
    if name in _REDUCTIONS or name == "flatten":
        dim = _dim_argument(call, offset)
        return dim is not None and not _mentions_zero(dim)
    if name in _RESHAPES:
        sizes = call.args[offset:]
        first = sizes[0].elts[0] if sizes and isinstance(sizes[0], (ast.Tuple, ast.List)) and sizes[0].elts else (
            sizes[0] if sizes else None)
        # `view(-1, n)` and `view(bsz, n)` keep rows; `view(1, 1, -1, 1)` makes a new layout.
        return first is not None and not (isinstance(first, ast.Constant) and not is_int(first, -1))
    if name in ("squeeze", "unbind", "select", "narrow", "transpose", "movedim", "swapaxes"):
        dim = _dim_argument(call, offset)
        return dim is not None and not _mentions_zero(dim) and name != "unbind"
    return True


def is_batch_tensor(expr: ast.AST, names: AbstractSet[str], pairs: AbstractSet[str] = frozenset()) -> bool:
    """``expr`` is a tensor whose first dimension is the batch: a ``score()`` result, the hidden
    states, keys or values, or what tensor operations that keep dimension 0 make of them."""
    if isinstance(expr, ast.Name):
        return expr.id in names
    if isinstance(expr, ast.Attribute):
        return expr.attr in ("indices", "values") and is_batch_tensor(expr.value, names, pairs)
    if isinstance(expr, ast.Call):
        name = call_name(expr)
        if name == "score" and isinstance(expr.func, ast.Attribute):
            return True
        receiver = call_receiver(expr)
        if receiver is None or name is None:
            return False
        if function_form(expr) and name in ("cat", "stack", "concatenate"):
            return False  # rows of several tensors, or a new leading dimension
        return is_batch_tensor(receiver, names, pairs) and _keeps_batch(expr, name)
    if isinstance(expr, ast.Subscript):
        if not is_batch_tensor(expr.value, names, pairs):
            return False
        if isinstance(expr.value, ast.Call) and call_name(expr.value) in PAIR_CALLS or (
                isinstance(expr.value, ast.Name) and expr.value.id in pairs):
            return True  # `x.topk(k)[1]`: a field of the (values, indices) pair
        first = subscript_elements(expr)[0]
        return is_full_slice(first) or (isinstance(first, ast.Slice) and first.lower is None and first.upper is None)
    if isinstance(expr, ast.BinOp):
        return is_batch_tensor(expr.left, names, pairs) or is_batch_tensor(expr.right, names, pairs)
    if isinstance(expr, ast.UnaryOp):
        return is_batch_tensor(expr.operand, names, pairs)
    if isinstance(expr, ast.IfExp):
        return is_batch_tensor(expr.body, names, pairs) or is_batch_tensor(expr.orelse, names, pairs)
    return False


@lru_cache(maxsize=512)
def batch_names(function: FunctionNode, pairs: frozenset[str] = frozenset()) -> frozenset[str]:
    """Names bound to a batch-first tensor in ``function`` (a fixpoint over its assignments)."""
    args = function.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)} & BATCH_PARAMETERS
    assigns = [b for b in bindings(function) if b.kind == "assign"]
    changed = True
    while changed:
        changed = False
        for binding in assigns:
            if not binding.targets <= names and is_batch_tensor(binding.values[0], names, pairs):
                names |= binding.targets  # `values, indices = x.topk(k)`: both keep the batch
                changed = True
    return frozenset(names)


# -- methods of a press --------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A method the press runs, with the class (and file) that defines it."""

    function: FunctionNode
    owner: ClassInfo

    @property
    def source(self) -> SourceFile:
        return self.owner.source

    @property
    def text(self) -> str:
        return source_text(self.source, self.function)

    @property
    def params(self) -> set[str]:
        args = self.function.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        return {a.arg for a in every} - {"self", "cls"}


def press_methods(index: ProjectIndex, press: ClassInfo) -> list[Method]:
    """Methods ``press`` resolves to, defined in itself or in a base of the run that is not a press.

    A base that is itself a press of the run gets its own report, so its methods are left to
    it; bases outside the run (kvpress's own, when auditing a subclass) are left alone.
    """
    seen: set[str] = set()
    found: list[Method] = []
    for cls in index.mro(press):
        eligible = cls is press or (cls.is_target and not index.is_press(cls))
        for statement in cls.tree.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if statement.name in seen:
                    continue
                seen.add(statement.name)
                if eligible:
                    found.append(Method(statement, cls))
    return found
