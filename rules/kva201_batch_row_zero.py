"""KVA201 batch-row-0: indices chosen from batch row 0 are applied to every row."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from ..analysis.tensors import (
    BROADCAST_CALLS,
    PAIR_CALLS,
    Method,
    batch_names,
    bindings,
    call_name,
    call_receiver,
    derived_from,
    first_index,
    function_form,
    is_batch_tensor,
    is_full_slice,
    is_int,
    is_zero,
    press_methods,
    propagate,
    snippet,
    subscript_elements,
    walk_all,
)
from ..model import Finding, Severity
from ..rule import PressContext, Rule

_ROW_ZERO_TEXT = re.compile(r"\[\s*0\s*[\],]")
_SINK_TEXT = re.compile(r"expand|repeat|broadcast_to|gather|index_select|scatter|masked_fill|where\(|\[\s*:|\[\s*\.\.\.")
# Calls that apply positions (or a mask of them) to the tensor they are called on.
_APPLY_CALLS = frozenset({"index_select", "scatter", "scatter_", "scatter_add", "scatter_add_", "masked_fill",
                          "masked_fill_", "masked_select", "masked_scatter", "masked_scatter_"})


class BatchRowZero(Rule):
    """
    A press picks the positions to keep from batch row 0 (``top_chunks.indices[0]``,
    ``scores.sum(dim=1)[0]``) and then applies them to every row of the batch, by
    broadcasting (``indices.expand(keys.shape[0], ...)``), by ``gather`` or by indexing
    ``keys[:, :, indices]``. With a batch of one this is harmless; with a batch of several
    prompts every row is compressed with row 0's selection, so rows 1.. keep tokens chosen
    for a different text.

    kvpress's ``ChunkKVPress`` (0.5.5) does this: its loop runs over
    ``top_chunks.indices[0]`` and the result is expanded to ``keys.shape[0]`` rows. The
    ChunkKV paper selects per sequence.

    The rule fires only where the indexed value is known to be a tensor whose first
    dimension is the batch: a ``score()`` result, the hidden states, keys or values handed
    to the press (or the query, key, value and attention mask of transformers' attention
    interface), or what tensor operations that keep dimension 0 make of them (``topk``,
    ``argsort``, ``.indices``, ``sum(dim=1)``, ``x[..., :n]``). ``[0]`` on a Python list (the
    ``start`` of a ``[start, end]`` pair), on a pair (``sort(...)[0]`` is its values) or on a
    row taken earlier is not a batch row. It follows values inside one method (assignments,
    ``for`` targets, ``append``, item assignment), through Python data and back
    (``union = list(dict.fromkeys(idx[0].tolist()))`` then ``torch.tensor(union)``); it fires at
    the ``[0]`` that takes the row, and names the line that spreads it over the batch:
    ``expand``/``repeat``/``broadcast_to``, ``gather``, ``index_select`` or ``scatter`` on a batch
    tensor, ``keys[:, :, kept]``, or a mask built from it that ``masked_fill`` or ``torch.where``
    applies to a batch tensor (broadcasting). Taking row 0 without spreading it (say, for
    logging) is fine.

    What to do: select per row (``topk`` over the last dimension keeps the batch
    dimension), build the positions for the whole batch at once and ``gather`` with them;
    or assert ``keys.shape[0] == 1`` and document the limit.
    """

    id = "KVA201"
    name = "batch-row-0"
    severity = Severity.ERROR
    message = "positions selected from batch row 0 are applied to every row of the batch"

    VALID = [
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PerRowChunks(BasePress):
    """Chunk selection done independently for each row of the batch."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = keys.shape[2] // self.chunk_length
        chunk_scores = scores.sum(dim=1)[..., : n_chunks * self.chunk_length].view(-1, n_chunks, self.chunk_length)
        top = chunk_scores.mean(-1).topk(n_chunks // 2, dim=-1).indices  # (batch, k): one set per row
        offsets = torch.arange(self.chunk_length, device=keys.device)
        positions = (top.unsqueeze(-1) * self.chunk_length + offsets).flatten(1).sort(dim=-1).values
        positions = positions[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, positions), values.gather(2, positions)
''',
        '''
import logging
from dataclasses import dataclass

from kvpress.presses.scorer_press import ScorerPress

logger = logging.getLogger(__name__)


@dataclass
class LogsFirstRow(ScorerPress):
    """Looks at row 0 only to log it; compresses every row with its own scores."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = -keys.norm(dim=-1)
        first = scores.argsort(dim=-1)[0]
        logger.debug("row 0 keeps %s", first[:8].tolist())
        return scores
''',
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class SpanListChunks(BasePress):
    """Chunks kept as [start, end] pairs of Python ints: `[0]` is a start, not a batch row."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).mean(dim=1)
        spans = []
        for seed in scores.topk(4, dim=-1).indices[:, 0].tolist():
            spans.append([max(0, seed - self.chunk_length), seed + self.chunk_length])
        kept = torch.cat([torch.arange(span[0], span[1], device=keys.device) for span in spans]).sort()[0]
        kept = kept.view(1, 1, -1, 1).expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, kept), values.gather(2, kept)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class RowZeroChunks(BasePress):
    """Chunks picked from the first row, then used for the whole batch."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        n_chunks = keys.shape[2] // self.chunk_length
        chunk_scores = scores.sum(dim=1)[..., : n_chunks * self.chunk_length].view(-1, n_chunks, self.chunk_length)
        top = chunk_scores.mean(-1).topk(n_chunks // 2, dim=-1)
        starts = top.indices[0] * self.chunk_length
        positions = (starts[:, None] + torch.arange(self.chunk_length, device=keys.device)).flatten().sort().values
        positions = positions.view(1, 1, -1, 1).expand(keys.shape[0], keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, positions), values.gather(2, positions)
''',
        '''
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class RowZeroScores(BasePress):
    """Scores of the first row decide for every row (indexing, no expand)."""

    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        first = scores.mean(dim=1)[0]
        kept = first.topk(keys.shape[2] // 2).indices.sort().values
        return keys[:, :, kept], values[:, :, kept]
''',
        '''
from dataclasses import dataclass

import torch
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class UnionOfFirstRow(ScorerPress):
    """Unions the heads' top-k of row 0 as a Python list, then broadcasts it back over the batch."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = -keys.norm(dim=-1)  # (batch, heads, seq)
        top = scores.topk(keys.shape[2] // 2, dim=-1).indices
        union = list(dict.fromkeys(top.transpose(1, 2).reshape(keys.shape[0], -1)[0].tolist()))
        kept = torch.as_tensor(union, device=keys.device)
        mask = torch.zeros(keys.shape[2], dtype=torch.bool, device=keys.device)
        mask[kept] = True
        return scores.masked_fill(~mask, float("-inf"))
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        for method in press_methods(ctx.index, ctx.press):
            yield from self._check_method(ctx, method)

    def _check_method(self, ctx: PressContext, method: Method) -> Iterator[Finding]:
        function = method.function
        text = method.text
        if not _ROW_ZERO_TEXT.search(text) or not _SINK_TEXT.search(text):
            return  # no `[0` or nothing that spreads over rows: the common case, decided by text
        binds = bindings(function)
        pairs = frozenset(name for b in binds if b.kind == "assign" and isinstance(b.values[0], ast.Call)
                          and call_name(b.values[0]) in PAIR_CALLS for name in b.targets)
        batched = batch_names(function, pairs)

        def takes_row_zero(node: ast.AST) -> bool:
            # `x[0]` where x is a tensor known to be batch first; a list (`[start, end]`), a pair
            # (`sort(...)[0]` is its values) or a row taken earlier has no batch dimension.
            if not isinstance(node, ast.Subscript) or not is_zero(first_index(node)):
                return False
            value = node.value
            if isinstance(value, ast.Call) and call_name(value) in PAIR_CALLS | {"size"}:
                return False
            if isinstance(value, ast.Name) and value.id in pairs:
                return False
            return is_batch_tensor(value, batched, pairs)

        reported: set[int] = set()
        for source in (node for node in walk_all(function.body) if takes_row_zero(node)):
            if source.lineno in reported:
                continue
            sink = self._first_sink(method, binds, source, batched)
            if sink is None:
                continue
            reported.add(source.lineno)
            yield self.finding(
                ctx, source.lineno,
                f"`{snippet(method.source, source)}` takes batch row 0, and line {sink.lineno} applies the selection "
                f"made from it to every row (`{snippet(method.source, sink)}`): with a batch of several prompts, "
                f"rows 1.. are compressed with row 0's selection",
                path=None if method.source is ctx.source else method.source.display,
                node=source, source=method.source,
            )

    @staticmethod
    def _first_sink(method: Method, binds, source: ast.AST, batched: frozenset[str]) -> ast.AST | None:
        def is_source(node: ast.AST) -> bool:
            return node is source

        derived = propagate(binds, is_source)
        params = method.params

        def carries(expr: ast.AST) -> bool:
            return derived_from(expr, derived, is_source)

        sinks: list[ast.AST] = []
        for node in walk_all(method.function.body):
            if isinstance(node, ast.Call):
                name = call_name(node)
                receiver = call_receiver(node)
                if receiver is None:
                    continue
                if name in BROADCAST_CALLS and carries(receiver):
                    sizes = node.args[1:] if function_form(node) else node.args
                    # expand(-1, ...) / repeat(1, ...) add no rows; expand_as always matches the other tensor.
                    if name == "expand_as" or (sizes and not (is_int(sizes[0], 1) or is_int(sizes[0], -1))):
                        sinks.append(node)
                elif name == "gather" and not carries(receiver):
                    keyword = [k.value for k in node.keywords if k.arg == "index"]
                    index = keyword or node.args[2 if function_form(node) else 1:][:1]
                    if index and carries(index[0]):
                        sinks.append(node)
                elif name in _APPLY_CALLS and is_batch_tensor(receiver, batched) and not carries(receiver):
                    # `x.index_select(2, kept)`, `x.scatter_(-1, kept, v)`, `x.masked_fill(~mask, v)`: row 0's
                    # positions (or a mask of them, broadcast over the rows) applied to a batch tensor.
                    offset = 1 if function_form(node) else 0
                    if any(carries(a) for a in [*node.args[offset:], *(k.value for k in node.keywords)]):
                        sinks.append(node)
                elif name == "where" and function_form(node) and node.args and carries(node.args[0]) and any(
                        is_batch_tensor(a, batched) and not carries(a) for a in node.args[1:]):
                    sinks.append(node)
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in params:
                parts = subscript_elements(node)
                if len(parts) > 1 and is_full_slice(parts[0]) and any(carries(e) for e in parts[1:]):
                    sinks.append(node)
        return min(sinks, key=lambda n: (n.lineno, n.col_offset)) if sinks else None
