"""What a layer's ``score()`` call was given, in float64, for recomputing a paper's formula independently.

Runs inside a forked worker child. A :class:`ScoreInputs` holds the arguments of one outermost
``score()`` call of a prefill (the attention module, its hidden states, the keys and values it was
given, eager attention weights if any, and the forward's keyword arguments) and derives the rest
with kvaudit's own code, never the press's or kvpress's helpers: the queries (projection, the
module's query norm where it has one, rotary embedding from the forward's ``position_embeddings``),
the keys before the rotary embedding, and softmax attention with the causal mask. Everything is
float64; a formula (``rules/claim_score_formula.py``) reads what it needs.

Grouped-query attention: a formula that reads attention works per query head; :meth:`per_kv_head`
averages the query heads of each KV head (the adaptation kvaudit applies to papers written for
multi-head attention, said in the claim's documentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

F64 = torch.float64


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The rotary embedding's pairing: (x1, x2) -> (-x2, x1) over the two halves of the last axis."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class ScoreInputs:
    """The arguments of one ``score()`` call, and what a formula derives from them (float64)."""

    module: Any
    hidden_states: torch.Tensor  # (batch, length, hidden)
    keys: torch.Tensor  # (batch, kv_heads, length, head_dim), after the rotary embedding, as the cache holds them
    values: torch.Tensor
    attentions: torch.Tensor | None  # (batch, heads, length, length) under eager attention, else None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_call(cls, args: tuple, kwargs: dict[str, Any]) -> ScoreInputs | None:
        """From ``score(module, hidden_states, keys, values, attentions, kwargs)``'s arguments; None if they do not fit."""
        names = ("module", "hidden_states", "keys", "values", "attentions", "kwargs")
        given = dict(zip(names, args))
        given.update({name: kwargs[name] for name in names if name in kwargs})
        if not all(name in given for name in names) or not isinstance(given["keys"], torch.Tensor):
            return None
        return cls(given["module"], given["hidden_states"], given["keys"], given["values"], given["attentions"],
                   given["kwargs"] if isinstance(given["kwargs"], dict) else {})

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.keys.shape[0]

    @property
    def kv_heads(self) -> int:
        return self.keys.shape[1]

    @property
    def length(self) -> int:
        return self.keys.shape[2]

    @property
    def head_dim(self) -> int:
        return self.keys.shape[3]

    @property
    def heads(self) -> int:
        return int(self.module.config.num_attention_heads)

    # -- float64 views -----------------------------------------------------------------------------
    @cached_property
    def k(self) -> torch.Tensor:
        """Keys (after the rotary embedding), float64."""
        return self.keys.detach().to(F64)

    @cached_property
    def v(self) -> torch.Tensor:
        """Values, float64."""
        return self.values.detach().to(F64)

    def _project(self, name: str, heads: int, norm: str) -> torch.Tensor:
        weight = getattr(self.module, name)
        hidden = self.hidden_states.detach().to(F64)
        out = torch.nn.functional.linear(hidden, weight.weight.detach().to(F64),
                                         None if weight.bias is None else weight.bias.detach().to(F64))
        out = out.view(hidden.shape[0], hidden.shape[1], heads, self.head_dim)
        layer_norm = getattr(self.module, norm, None)
        if layer_norm is not None:  # Qwen3 normalises queries and keys per head before the rotary embedding
            out = _rms_norm(out, layer_norm)
        return out.transpose(1, 2)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.kwargs["position_embeddings"]
        cos = cos.detach().to(F64)[:, -x.shape[2]:].unsqueeze(1)
        sin = sin.detach().to(F64)[:, -x.shape[2]:].unsqueeze(1)
        return x * cos + rotate_half(x) * sin

    @cached_property
    def queries_pre_rope(self) -> torch.Tensor:
        """Queries before the rotary embedding, (batch, heads, length, head_dim)."""
        return self._project("q_proj", self.heads, "q_norm")

    @cached_property
    def queries(self) -> torch.Tensor:
        """Queries after the rotary embedding, (batch, heads, length, head_dim)."""
        return self._rotate(self.queries_pre_rope)

    @cached_property
    def keys_pre_rope(self) -> torch.Tensor:
        """Keys before the rotary embedding, recomputed from the hidden states, (batch, kv_heads, length, head_dim)."""
        return self._project("k_proj", self.kv_heads, "k_norm")

    def attention(self, last: int | None = None) -> torch.Tensor:
        """Softmax attention of the last ``last`` queries (all when None) over every key, causal; per query head.

        Shape (batch, heads, queries, length). Keys are shared by the query heads of their KV head.
        """
        start = 0 if last is None else max(0, self.length - last)
        return self._attention_rows(start, self.length)

    def accumulated_attention(self, block: int = 256) -> torch.Tensor:
        """Attention each key receives, summed over every query (causal), per query head: (batch, heads, length).

        Summed a block of queries at a time, so memory stays at ``block × length`` per head.
        """
        total = torch.zeros(self.batch, self.heads, self.length, dtype=F64)
        for start in range(0, self.length, block):
            stop = min(start + block, self.length)
            total += self._attention_rows(start, stop).sum(dim=2)
        return total

    def _attention_rows(self, start: int, stop: int) -> torch.Tensor:
        queries = self.queries[:, :, start:stop]
        groups = self.heads // self.kv_heads
        keys = self.k.repeat_interleave(groups, dim=1)
        logits = queries @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)
        positions = torch.arange(self.length)
        rows = positions[start:stop]
        logits = logits.masked_fill(positions.view(1, -1) > rows.view(-1, 1), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def per_kv_head(self, per_query_head: torch.Tensor) -> torch.Tensor:
        """Average the query heads of each KV head: (batch, heads, ...) -> (batch, kv_heads, ...)."""
        groups = self.heads // self.kv_heads
        return per_query_head.view(self.batch, self.kv_heads, groups, *per_query_head.shape[2:]).mean(dim=2)


def _rms_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    epsilon = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    scaled = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon)
    return scaled * norm.weight.detach().to(F64)
