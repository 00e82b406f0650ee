"""What a (trained) causal LM's attention looks like: plain functions over a loaded model.

- :func:`next_token_loss`: mean next-token loss in nats/token, over given windows;
- :func:`attention_stats`: per layer and head, the share of attention on the last ``window``
  positions (locality) and the mass on position 0 (an attention sink), each beside its value under
  uniform causal attention;
- :func:`induction_stats`: on rows of a repeated random segment, the attention from each token of a
  later copy to the token that followed its previous occurrence (an induction head), with copy
  accuracy and loss on the copied tokens.

The figures say whether a model *shows* a structure, so that a claim that relies on it can refuse a
verdict where it is absent. Everything is reduced in float64. Importing this module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import FIRST_ORDINARY_ID, IGNORE, next_token_labels, repeated_segments


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def next_token_loss(model: nn.Module, input_ids: np.ndarray | torch.Tensor, labels: np.ndarray | None = None,
                    batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` on ``input_ids``.

    Parameters
    ----------
    input_ids
        (rows, length) token ids.
    labels
        Targets aligned with the positions that predict them (``labels[:, p]`` is the id after
        position ``p``), IGNORE where no loss is taken; by default every next token.
    batch_size
        Rows per forward pass.
    """
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    targets = torch.as_tensor(next_token_labels(ids.numpy()) if labels is None else labels, dtype=torch.long)
    total, count = 0.0, 0
    device = _device(model)
    for start in range(0, ids.shape[0], batch_size):
        logits = model(input_ids=ids[start:start + batch_size].to(device)).logits.double()
        chunk = targets[start:start + batch_size].to(device)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), chunk.flatten(), ignore_index=IGNORE,
                                             reduction="sum").item()
        count += int((chunk != IGNORE).sum())
    if count == 0:
        raise ValueError("no position carries a label")
    return total / count


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch ``model`` to eager attention (the only kind that returns its weights), then back."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@torch.no_grad()
def attention_maps(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention weights for ``input_ids`` (one row): a list of (heads, T, T) float64."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError("attention_maps takes one row: input_ids of shape (1, T)")
    with eager_attention(model):
        out = model(input_ids=input_ids.to(_device(model)), output_attentions=True)
    return [layer[0].double().cpu() for layer in out.attentions]


# When a head *shows* a structure: at least this share of its attention where the structure puts it,
# and this many times what uniform attention puts there. A sink or an induction head of a trained LLM
# carries most of its head's attention; a few times uniform (a few percent of the mass) is not one.
SHOWN_MASS, SHOWN_FACTOR = 0.2, 10.0


def _heads(values: np.ndarray, uniform: float, min_mass: float, factor: float) -> list[tuple[int, int]]:
    shown = (values >= min_mass) & (values >= factor * uniform)
    return [(int(layer), int(head)) for layer, head in np.argwhere(shown)]


def locality_share(maps: list[torch.Tensor], window: int, min_query: int) -> np.ndarray:
    """(layers, heads): mean share of attention on the last ``window`` keys (the query's own included).

    ``maps``: per layer, (heads, T, T) attention weights of one row; queries ``>= min_query`` count.
    """
    length = maps[0].shape[-1]
    queries = torch.arange(min_query, length)
    near = torch.arange(length)[None, :] > queries[:, None] - window  # keys after the query are masked anyway
    return np.stack([(m[:, min_query:, :] * near).sum(-1).mean(-1).numpy() for m in maps])


def sink_mass(maps: list[torch.Tensor], min_query: int) -> np.ndarray:
    """(layers, heads): mean attention on position 0 of queries ``>= min_query``."""
    return np.stack([m[:, min_query:, 0].mean(-1).numpy() for m in maps])


def induction_score(maps: list[torch.Tensor], segment: int) -> np.ndarray:
    """(layers, heads): on a row ``BOS s s``, mean attention from each query of the second copy to the
    token that followed the first occurrence of the query's id.

    Query ``p`` (``segment + 1 <= p <= 2 * segment``) holds the id first seen at ``p - segment``;
    the token after that occurrence sits at ``p - segment + 1``.
    """
    queries = torch.arange(segment + 1, 2 * segment + 1)
    return np.stack([m[:, queries, queries - segment + 1].mean(-1).numpy() for m in maps])


def _uniform(queries: torch.Tensor, keys_counted: torch.Tensor | int) -> float:
    """Mean share that uniform causal attention gives ``keys_counted`` keys, over query positions ``queries``."""
    q = queries.double()
    return float((torch.clamp(torch.as_tensor(keys_counted, dtype=torch.float64), max=q + 1) / (q + 1)).mean())


@dataclass(frozen=True)
class AttentionStats:
    """Attention shares per (layer, head), averaged over rows and over queries at positions ``>= min_query``."""

    locality: np.ndarray  # (layers, heads): share on the last `window` positions (the query's own included)
    locality_uniform: float  # the same share under uniform causal attention
    sink: np.ndarray  # (layers, heads): mass on position 0
    sink_uniform: float
    window: int
    min_query: int
    rows: int

    def sink_heads(self, min_mass: float = SHOWN_MASS, factor: float = SHOWN_FACTOR) -> list[tuple[int, int]]:
        """(layer, head) pairs that show a sink: mass on position 0 at least ``min_mass`` and ``factor`` × uniform."""
        return _heads(self.sink, self.sink_uniform, min_mass, factor)


def attention_stats(model: nn.Module, input_ids: np.ndarray | torch.Tensor, window: int = 64,
                    min_query: int | None = None) -> AttentionStats:
    """Locality and sink mass of every head of ``model`` on ``input_ids`` (rows, T).

    Only queries at positions ``>= min_query`` (default ``window``) count: an earlier query sees
    fewer than ``window`` keys, so its locality is 1 whatever the head does.
    """
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    length = ids.shape[1]
    min_query = window if min_query is None else min_query
    if not 1 <= min_query < length:
        raise ValueError(f"min_query {min_query} must lie in 1..{length - 1}")
    locality, sink = [], []
    for row in ids:
        maps = attention_maps(model, row[None])
        locality.append(locality_share(maps, window, min_query))
        sink.append(sink_mass(maps, min_query))
    queries = torch.arange(min_query, length)
    return AttentionStats(
        locality=np.mean(locality, axis=0),
        locality_uniform=_uniform(queries, window),
        sink=np.mean(sink, axis=0),
        sink_uniform=_uniform(queries, 1),
        window=window,
        min_query=min_query,
        rows=ids.shape[0],
    )


@dataclass(frozen=True)
class InductionStats:
    """Induction and copying on ``BOS s s`` rows (a random segment ``s`` of ``segment`` ids, twice)."""

    score: np.ndarray  # (layers, heads): see induction_score
    uniform: float  # that attention under uniform causal attention
    copy_accuracy: float  # argmax next token right, on the second copy (its first token excluded)
    copy_loss: float  # nats/token on the same tokens
    chance_loss: float  # ln(ids the segments are drawn from): a model that knows them but copies nothing
    segment: int
    rows: int

    def induction_heads(self, min_mass: float = SHOWN_MASS, factor: float = SHOWN_FACTOR) -> list[tuple[int, int]]:
        """(layer, head) pairs that show induction: a score of at least ``min_mass`` and ``factor`` × uniform."""
        return _heads(self.score, self.uniform, min_mass, factor)


def induction_stats(model: nn.Module, segment: int = 64, rows: int = 4, seed: int = 0,
                    vocab: np.ndarray | None = None) -> InductionStats:
    """Measure induction heads and copying on ``rows`` rows ``BOS s s`` (``s``: ``segment`` distinct ids).

    ``vocab`` is the set the ids are drawn from (default: every ordinary id of the model's
    vocabulary). The rows come from ``numpy.random.default_rng(seed)``, so a figure is repeatable.
    """
    vocab = np.arange(FIRST_ORDINARY_ID, model.config.vocab_size) if vocab is None else np.asarray(vocab)
    rep = repeated_segments(2 * segment + 1, rows, np.random.default_rng(seed), vocab, (segment, segment))
    ids = torch.as_tensor(rep.input_ids)
    scores = [induction_score(attention_maps(model, row[None]), segment) for row in ids]
    with torch.no_grad():
        logits = model(input_ids=ids.to(_device(model))).logits.double().cpu()
    labels = torch.as_tensor(rep.labels)
    known = labels != IGNORE
    return InductionStats(
        score=np.mean(scores, axis=0),
        uniform=_uniform(torch.arange(segment + 1, 2 * segment + 1), 1),
        copy_accuracy=(logits[known].argmax(-1) == labels[known]).double().mean().item(),
        copy_loss=nn.functional.cross_entropy(logits[known], labels[known]).item(),
        chance_loss=math.log(vocab.size),
        segment=segment,
        rows=rows,
    )


def summary(stats: AttentionStats | InductionStats) -> dict[str, object]:
    """The figures of ``stats`` as JSON-ready values, per-layer arrays rounded to 4 digits."""
    out: dict[str, object] = {}
    for name, value in vars(stats).items():
        out[name] = np.round(value, 4).tolist() if isinstance(value, np.ndarray) else value
    if isinstance(stats, AttentionStats):
        out["sink_heads"] = stats.sink_heads()
    else:
        out["induction_heads"] = stats.induction_heads()
    return out


__all__ = ["AttentionStats", "InductionStats", "attention_maps", "attention_stats", "eager_attention",
           "induction_score", "induction_stats", "locality_share", "next_token_loss", "sink_mass", "summary"]
