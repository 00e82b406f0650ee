"""KVA203 python-loop-over-index-tensor: positions built one element at a time in a Python loop."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ..analysis.tensors import (
    Method,
    bindings,
    call_name,
    index_names,
    is_index_tensor,
    names_in,
    press_methods,
    propagate,
    snippet,
    walk_all,
)
from ..model import Finding, Severity
from ..rule import PressContext, Rule

# Wrappers that iterate their (first) argument's elements.
_ITERATE_ARG = frozenset({"enumerate", "reversed", "list", "iter", "sorted", "tuple"})
# Work done per element that a vectorised implementation does once.
_TENSOR_CALLS = frozenset({"arange", "cat", "stack", "topk", "argsort", "item", "index_select", "nonzero", "full",
                           "zeros", "ones", "tensor", "linspace", "gather"})
_LIST_CALLS = frozenset({"append", "extend", "insert"})
_SCALAR_CASTS = frozenset({"int", "float", "bool"})
_FOR_TEXT = re.compile(r"\bfor\b")
_INDEX_TEXT = re.compile(r"indices|argsort|argmax|argmin|argwhere|nonzero")


@dataclass(frozen=True)
class _Loop:
    line: int  # of the `for`
    iterated: ast.expr  # the index tensor walked over
    via_list: bool  # walked over `.tolist()`: one sync, then Python numbers
    body: tuple[ast.AST, ...]
    target: ast.expr


def _iterated_tensor(expr: ast.expr, names: AbstractSet[str]) -> tuple[ast.expr, bool] | None:
    """The index tensor ``expr`` iterates over, and whether through ``.tolist()``; None for anything else."""
    via_list = False
    while isinstance(expr, ast.Call):
        name = call_name(expr)
        if isinstance(expr.func, ast.Name) and name in _ITERATE_ARG and expr.args:
            expr = expr.args[0]
        elif isinstance(expr.func, ast.Name) and name == "zip":
            for arg in expr.args:
                found = _iterated_tensor(arg, names)
                if found:
                    return found
            return None
        elif isinstance(expr.func, ast.Attribute) and name == "tolist":
            expr, via_list = expr.func.value, True
        else:
            break
    return (expr, via_list) if is_index_tensor(expr, names) else None


def _loops(body: list[ast.stmt], names: AbstractSet[str]) -> Iterator[_Loop]:
    for node in walk_all(body):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            found = _iterated_tensor(node.iter, names)
            if found:
                yield _Loop(node.lineno, found[0], found[1], tuple(node.body), node.target)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            element = (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)
            for comp in node.generators:
                found = _iterated_tensor(comp.iter, names)
                if found:
                    yield _Loop(comp.target.lineno, found[0], found[1], (*element, *comp.ifs), comp.target)


def _per_element_work(loop: _Loop, function_binds) -> ast.AST | None:
    """The strongest sign that the loop body builds positions per element, if any.

    Tensor-building calls first, then item assignment, list appends, scalar casts and
    comparisons of the loop variable (or values computed from it).
    """
    loop_names = names_in(loop.target)
    in_body = {id(n) for n in walk_all(list(loop.body))}
    binds = [b for b in function_binds if any(id(v) in in_body for v in b.values)]
    derived = loop_names | propagate(binds, lambda n: isinstance(n, ast.Name) and n.id in loop_names)
    found: list[tuple[int, int, ast.AST]] = []
    for order, node in enumerate(walk_all(list(loop.body))):
        rank = None
        if isinstance(node, ast.Call):
            name = call_name(node)
            if name in _TENSOR_CALLS:
                rank = 0
            elif name in _LIST_CALLS:
                rank = 2
            elif isinstance(node.func, ast.Name) and name in _SCALAR_CASTS and node.args \
                    and names_in(node.args[0]) & derived:
                rank = 3
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and names_in(t) & derived for t in node.targets):
            rank = 1
        elif isinstance(node, ast.Compare) and names_in(node) & derived:
            rank = 4
        if rank is not None:
            found.append((rank, order, node))
    return min(found, key=lambda item: item[:2])[2] if found else None


class PythonLoopOverIndexTensor(Rule):
    """
    A ``for`` loop (or a comprehension) walks a tensor of positions element by element
    (``for chunk_idx in top_chunks.indices[0]:``, or over ``.tolist()`` of an ``argsort`` or
    ``topk``) and builds the kept positions one element at a time: it appends a
    ``torch.arange`` per element, compares tensor elements (``chunk_idx < n``), or writes
    into a mask per element.

    On a GPU each iteration launches small kernels, and iterating a CUDA tensor itself
    yields 0-d device tensors: every comparison or ``if`` on them forces a device sync.
    Measured on one H200 (bf16, sdpa, a randomly initialised Llama-3.1-8B-shaped model,
    batch 1), kvpress's ChunkKVPress (SnapKV 0.5, chunk 10) costs x6.65 the prefill time
    without a press at 8k tokens and x4.42 at 32k, against x1.16 and x1.06 for a vectorised
    ChunkKV: its loop costs far more than layer-wise index reuse would ever save.

    Loops over ``range(n)``, over plain Python lists (layers, hooks, presses) or over
    tensors that are not positions (scores, hidden states) are not reported.

    What to do: build every kept position at once, e.g.
    ``(chunk_ids.unsqueeze(-1) * chunk_length + torch.arange(chunk_length)).flatten(-2)``,
    then ``sort`` and ``gather``.
    """

    id = "KVA203"
    name = "python-loop-over-index-tensor"
    severity = Severity.WARNING
    message = "a Python loop over an index tensor builds the kept positions one element at a time"

    VALID = [
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class VectorisedChunks(BasePress):
    """Kept positions built at once; the loops here walk ranges and Python lists."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = keys.shape[2] // self.chunk_length
        chunk_scores = scores.sum(dim=1)[..., : n_chunks * self.chunk_length].view(-1, n_chunks, self.chunk_length)
        top = chunk_scores.mean(-1).topk(n_chunks // 2, dim=-1).indices
        positions = (top.unsqueeze(-1) * self.chunk_length + torch.arange(self.chunk_length, device=keys.device))
        positions = positions.flatten(1).sort(dim=-1).values
        sizes = []
        for step in range(3):
            sizes.append(step * self.chunk_length)
        for layer in getattr(module, "layers", []):
            sizes.append(layer)
        positions = positions[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, positions), values.gather(2, positions)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class LoopedChunks(BasePress):
    """Kept positions built chunk by chunk in a Python loop over a CUDA tensor."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = keys.shape[2] // self.chunk_length
        chunk_scores = scores.sum(dim=1)[..., : n_chunks * self.chunk_length].view(-1, n_chunks, self.chunk_length)
        top = chunk_scores.mean(-1).topk(n_chunks // 2, dim=-1)
        positions = []
        for chunk in top.indices[0]:
            if chunk < n_chunks:
                start = chunk * self.chunk_length
                positions.append(torch.arange(start, start + self.chunk_length, device=keys.device))
        positions = torch.cat(positions).sort().values.view(1, 1, -1, 1).expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, positions), values.gather(2, positions)
''',
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ComprehensionChunks(BasePress):
    """The same loop as a comprehension over `.tolist()` of an argsort."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = keys.shape[2] // self.chunk_length
        order = scores.sum(dim=1)[..., : n_chunks * self.chunk_length].view(-1, n_chunks, self.chunk_length).mean(-1)
        order = order.argsort(dim=-1, descending=True)
        kept = [torch.arange(c * self.chunk_length, (c + 1) * self.chunk_length) for c in order[0, : n_chunks // 2].tolist()]
        positions = torch.cat(kept).sort().values.view(1, 1, -1, 1).expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, positions), values.gather(2, positions)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        for method in press_methods(ctx.index, ctx.press):
            yield from self._check_method(ctx, method)

    def _check_method(self, ctx: PressContext, method: Method) -> Iterator[Finding]:
        text = method.text
        if not _FOR_TEXT.search(text) or not _INDEX_TEXT.search(text):
            return  # no loop, or no index tensor: the common case, decided by text
        function_binds = bindings(method.function)
        names = index_names(method.function)
        reported: set[int] = set()
        for loop in _loops(method.function.body, names):
            if loop.line in reported:
                continue
            work = _per_element_work(loop, function_binds)
            if work is None:
                continue
            reported.add(loop.line)
            iterated = snippet(method.source, loop.iterated)
            per_element = f"`{snippet(method.source, work)}` runs once per element"
            cost = ("`.tolist()` syncs once, then each element costs its own kernel launches" if loop.via_list else
                    "each element is a 0-d device tensor, so comparisons and arithmetic on it sync the GPU every time")
            yield self.finding(
                ctx, loop.line,
                f"a Python loop walks the index tensor `{iterated}` element by element and {per_element}: {cost}; "
                f"build the positions at once (kvpress ChunkKVPress's loop: prefill x6.65 at 8k tokens on an H200, "
                f"x1.16 vectorised)",
                path=None if method.source is ctx.source else method.source.display,
                node=loop.iterated, source=method.source,
            )
