"""Mechanism ``chunk-selection``: ChunkKV's Algorithm 1, whole chunks chosen per row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import (
    CheckContext,
    Claimant,
    Mechanism,
    ReproRule,
    RunResult,
    holds,
    not_applicable,
    ratio_of,
    row_name,
    setting,
    spans,
    tie_tolerance,
    violated,
)

if TYPE_CHECKING:
    from ..tracer.observations import RunObservation


class ChunkSelection(Mechanism):
    """
    The sequence is split into chunks of ``c`` tokens aligned at position 0 (the last chunk holds
    the tail ``r = L mod c``); chunks are ranked by the mean of their head-summed scores, and the
    top ``K`` chunks are kept whole, in their original order. ChunkKV, Algorithm 1 (the paper's
    ``c`` is 10; kvpress's ``ChunkKVPress`` defaults to 20).

    Invariant, on every compressed layer and every batch row:

    * all KV heads of the layer keep the same positions;
    * the kept positions are a union of whole aligned chunks;
    * the kept count is ``K·c`` or ``K·c − (c − r)`` (the tail chunk kept), with
      ``K = max(1, int(ceil(L/c) · (1 − ratio)))``; a press that forces the observe window in may
      keep more chunks, never fewer;
    * when the layer's ``score()`` output was recorded, the kept chunks are the row's own top ``K``:
      no kept chunk scores below a dropped one. Chunks that overlap the observe window are
      protected (the paper always keeps the window) and are not ranked.

    Tolerance: scores within ``1e-6 ×`` the largest score count as tied. ``c`` is the press's
    ``chunk_length``, else the paper's 10.
    """

    id = "chunk-selection"
    name = "chunk-wise selection"
    title = "whole aligned chunks, the same on every KV head, the row's own top K"
    order = 20
    papers = {"chunkkv": Claimant("Algorithm 1 (chunk-based compression), chunk size c = 10", {"chunk_length": 10})}
    facts = ("chunk_length", "window_size")
    needs_scores = True

    VALID = [
        '''
from dataclasses import dataclass
import torch
from kvpress import BasePress, ScorerPress


@dataclass
class PerRowChunkKVPress(BasePress):
    """ChunkKV (arXiv 2502.00299), Algorithm 1: each row keeps its own top chunks, whole."""

    press: ScorerPress = None
    chunk_length: int = 10

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).sum(1)
        length, c = keys.shape[2], self.chunk_length
        chunk_of = torch.arange(length) // c
        n_chunks = int(chunk_of[-1]) + 1
        sums = torch.zeros(scores.shape[0], n_chunks).index_add_(1, chunk_of, scores)
        means = sums / torch.bincount(chunk_of, minlength=n_chunks)
        k = max(1, int(n_chunks * (1 - self.compression_ratio)))
        chosen = torch.zeros(scores.shape[0], n_chunks, dtype=torch.bool)
        chosen.scatter_(1, means.topk(k, dim=-1).indices, True)
        keep = chosen[:, chunk_of]
        n_kept = int(keep.sum(-1).min())
        kept = keep.float().topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = kept[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress import BasePress, ScorerPress



@dataclass
class TokenWiseChunkKVPress(BasePress):
    """ChunkKV (arXiv 2502.00299) in name only: it keeps the best tokens, not whole chunks."""

    press: ScorerPress = None
    chunk_length: int = 10

    @property
    def compression_ratio(self):
        return self.press.compression_ratio

    @compression_ratio.setter
    def compression_ratio(self, value):
        self.press.compression_ratio = value

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).sum(1)
        n_kept = max(1, int(keys.shape[2] * (1 - self.compression_ratio)))
        kept = scores.topk(n_kept, dim=-1).indices.sort(dim=-1).values
        index = kept[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        return keys.gather(2, index).contiguous(), values.gather(2, index).contiguous()
''',
    ]

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        c = int(setting(run, ctx.params, "chunk_length", default=10))
        ratio = ratio_of(run)
        window = int(setting(run, {}, "window_size", default=0) or 0)
        judged = 0
        for index, layer in enumerate(run.layers):
            if not layer.compressed or not layer.exact:
                continue
            length = layer.original_length
            if length < c:
                continue  # no complete chunk: the paper's rule does not apply (token-wise fallback)
            judged += 1
            n_chunks = -(-length // c)
            tail = length % c
            rule_k = max(1, int(n_chunks * (1 - ratio))) if ratio is not None else None
            for row, heads in enumerate(layer.kept):
                who = f"layer {index}{row_name(row, run.batch)}"
                if any(head != heads[0] for head in heads[1:]):
                    sizes = ", ".join(str(len(h)) for h in heads)
                    return violated(f"{who}: the KV heads keep different positions ({sizes} positions); the paper's "
                                    "rule keeps one set of chunks for every head", "same positions on every head",
                                    [len(h) for h in heads], gap=1.0, **_where(index, row, run.batch))
                kept = set(heads[0])
                chunks = sorted({p // c for p in kept})
                whole = {p for chunk in chunks for p in range(chunk * c, min(chunk * c + c, length))}
                partial = whole - kept
                if partial:
                    broken = sorted({p // c for p in partial})
                    return violated(
                        f"{who} kept {len(broken)} of its {len(chunks)} chunks only in part (positions "
                        f"{spans(partial)} missing, chunk length {c}); the paper's rule keeps whole chunks",
                        len(whole), len(kept), gap=len(partial) / max(1, len(whole)), **_where(index, row, run.batch))
                k = len(chunks)
                if rule_k is not None:
                    window_chunks = len({p // c for p in range(max(0, length - window), length)}) if window else 0
                    if k < rule_k or k > max(rule_k, window_chunks):
                        expected = rule_k * c - ((c - tail) if tail and chunks[-1] == n_chunks - 1 else 0)
                        return violated(
                            f"{who} kept {len(kept)} positions in {k} chunks; the paper's rule gives {rule_k} chunks "
                            f"of {c} ({expected} positions) at ratio {ratio:g}", expected, len(kept),
                            gap=abs(k - rule_k) / max(1, rule_k), **_where(index, row, run.batch))
                ranked = _outranked(layer.scores, row, chunks, c, length, window)
                if ranked is not None:
                    kept_chunk, kept_score, dropped_chunk, dropped_score, lower = ranked
                    return violated(
                        f"{who} kept {lower} chunks that rank below a chunk it dropped, by its own scores (kept chunk "
                        f"{kept_chunk} scores {kept_score:.4g}, dropped chunk {dropped_chunk} scores {dropped_score:.4g}); "
                        "the paper's rule keeps the row's top chunks", f"top {k} chunks of row {row}",
                        f"{lower} chunks outranked", gap=1.0 + lower, **_where(index, row, run.batch))
        if not judged:
            return not_applicable("no layer kept a strict subset of at least one whole chunk")
        return holds(f"{judged} compressed layers keep whole {c}-token chunks, the same on every head, the row's own "
                     "top chunks", c, c)

    def repro_rule(self, params: dict) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """ChunkKV, Algorithm 1: each row keeps whole chunks of c tokens (aligned at 0), the same on every KV head:
    its own top K chunks by mean head-summed score, K = max(1, int(ceil(L/c) * (1 - ratio))). The chunks of the
    observe window are always kept, and not ranked."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    c = setting(press, "chunk_length", default=PARAMS["chunk_length"])
    window = setting(press, "window_size", default=0)
    ratio = getattr(press, "compression_ratio", RATIO)
    for layer in range(len(run.keys)):
        length = run.keys[layer].shape[2]
        n_chunks = math.ceil(length / c)
        k = max(1, int(n_chunks * (1 - ratio)))
        protected = {p // c for p in range(length - window, length)}
        for row, heads in enumerate(kept_positions(run, layer)):
            where = f"layer {layer} row {row}"
            if all(len(kept) == length for kept in heads):
                continue  # not compressed
            if any(kept != heads[0] for kept in heads):
                return False, "one set of chunks for every KV head", f"{where}: heads keep {[len(h) for h in heads]}"
            chunks = sorted({p // c for p in heads[0]})
            whole = [p for i in chunks for p in range(i * c, min(i * c + c, length))]
            if whole != heads[0]:
                return False, f"whole chunks of {c}", f"{where}: {len(whole) - len(heads[0])} positions of its chunks dropped"
            if not k <= len(chunks) <= max(k, len(protected)):
                return False, f"{k} chunks of {c}", f"{where}: {len(chunks)} chunks"
            if run.scores[layer] is None:
                continue  # no score() output to rank the chunks by
            summed = run.scores[layer][row].sum(dim=0)  # the row's scores, summed over KV heads
            means = [summed[i * c:(i + 1) * c].mean().item() for i in range(n_chunks)]
            tie = 1e-6 * max(abs(m) for m in means if math.isfinite(m))  # float32 rounding: a tie
            dropped = [i for i in range(n_chunks) if i not in chunks and i not in protected]
            lower = [i for i in chunks if i not in protected and dropped
                     and means[i] < max(means[j] for j in dropped) - tie]
            if lower:
                best = max(dropped, key=lambda j: means[j])
                worst = min(lower, key=lambda i: means[i])
                return (False, f"{where} keeps its own top {len(chunks)} chunks by mean score",
                        f"{where}: {len(lower)} kept chunks rank below dropped chunk {best} ({means[best]:.6g}), "
                        f"e.g. kept chunk {worst} ({means[worst]:.6g})")
    return True, f"every row keeps its own top chunks of {c}, whole", "every compressed layer and row does"
''', rules=("KVA201", "KVA202"))


def _where(layer: int, row: int, batch: int) -> dict[str, int]:
    return {"layer": layer, **({"row": row} if batch > 1 else {})}


def _chunk_means(scores: tuple[tuple[float, ...], ...], c: int, length: int) -> list[float]:
    summed = [sum(head[p] for head in scores) for p in range(length)]
    return [sum(summed[i:i + c]) / len(summed[i:i + c]) for i in range(0, length, c)]


def _outranked(scores, row: int, chunks: list[int], c: int, length: int, window: int):
    """(kept chunk, its score, dropped chunk, its score, how many kept chunks are outranked), or None."""
    if scores is None or row >= len(scores) or any(len(head) != length for head in scores[row]):
        return None
    means = _chunk_means(scores[row], c, length)
    protected = {p // c for p in range(max(0, length - window), length)} if window else set()
    kept = [i for i in chunks if i not in protected]
    dropped = [i for i in range(len(means)) if i not in set(chunks) and i not in protected]
    if not kept or not dropped:
        return None
    best_dropped = max(dropped, key=lambda i: means[i])
    tolerance = tie_tolerance(means)
    lower = [i for i in kept if means[i] < means[best_dropped] - tolerance]
    if not lower:
        return None
    worst = min(lower, key=lambda i: means[i])
    return worst, means[worst], best_dropped, means[best_dropped], len(lower)
