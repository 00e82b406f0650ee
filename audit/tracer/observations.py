"""What the instrumentation saw, as plain Python data (no torch).

The worker child turns tensors into these structures right after each run, so the verdict logic
(:mod:`kvaudit.tracer.verdicts`) and every mechanism's check (``rules/claim_*.py``) are pure Python
and can be tested on hand-made observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import Failure

# Kept positions of one layer: kept[row][head] is the sorted tuple of the prompt positions that
# survived compression for that batch row and KV head.
KeptIndices = tuple[tuple[tuple[int, ...], ...], ...]
# Per [row][head]: one number each (cache rows, masked rows, …).
PerHead = tuple[tuple[int, ...], ...]
# The output of a score() call: scores[row][head][position].
Scores = tuple[tuple[tuple[float, ...], ...], ...]


def _per_head(lengths: PerHead, kept: KeptIndices) -> PerHead:
    return lengths or tuple(tuple(len(h) for h in row) for row in kept)


@dataclass(frozen=True)
class StepObservation:
    """One attention layer after one decoding step.

    Parameters
    ----------
    rows : PerHead
        Cache rows per batch row and KV head after the step (masked ones included).
    masked : PerHead
        Rows masked per batch row and KV head (``module.masked_key_indices``).
    score_calls, compress_calls : int
        Outermost ``score()`` and ``compress()`` calls made for this layer during the step.
    kept : KeptIndices
        Positions the cache holds after the step (prompt positions, then ``tokens + step`` for
        generated tokens), composed step by step from the row maps; masked rows left out.
    unmatched : int
        Rows of batch row 0 that matched no row of the cache before the step.
    """

    rows: PerHead
    masked: PerHead
    score_calls: int = 0
    compress_calls: int = 0
    kept: KeptIndices = ()
    unmatched: int = 0

    @property
    def effective(self) -> PerHead:
        """Rows attention can see, per batch row and KV head: cache rows minus masked rows."""
        return tuple(tuple(r - m for r, m in zip(rows, masked)) for rows, masked in zip(self.rows, self.masked))

    @property
    def length(self) -> int:
        """Effective rows of batch row 0, averaged over KV heads (rounded)."""
        row = self.effective[0] if self.effective else ()
        return round(sum(row) / len(row)) if row else 0


@dataclass(frozen=True)
class LayerObservation:
    """One attention layer during one prefill (and, after it, the decoding steps).

    Parameters
    ----------
    score_calls : int
        Outermost ``score()`` calls made for this layer during the prefill (a scorer calling
        another counts once).
    kept : KeptIndices
        Positions kept per batch row and KV head.
    original_length : int
        Cache length before the press ran on this layer.
    score_time_s, compress_time_s : float
        Wall time in ``score()`` and in the press's forward hook (which includes ``score()``).
    unmatched : int
        Compressed cache rows (row 0, all heads) that match no original position (merged or
        transformed keys and values); they count in ``kept_count`` but carry no index.
    kept_lengths : PerHead
        Rows attention can see per batch row and KV head (masked rows left out); kept sizes if empty.
    compress_calls : int
        Outermost ``compress()`` calls made for this layer during the prefill.
    scores : Scores | None
        The output of the layer's last outermost ``score()`` call of the prefill, when the checks
        asked for it and its shape was (batch, kv_heads, length).
    memory : tuple[int, int]
        Elements of keys plus values in this layer's cache before and after the press.
    ambiguous : int
        Rows of batch row 0 whose match had several identical candidates at different positions
        (values without RoPE of a repeated token): their position is a guess.
    decode : tuple[StepObservation, ...]
        The layer after each decoding step.
    references : dict[str, Scores]
        Mechanism id -> the claimed paper's formula recomputed (float64) from the inputs of the same
        ``score()`` call as ``scores``, on the short prefills (``Mechanism.reference_scores``).
    pruned_channels, whole, channel_reference
        Key-channel pruning (only when a check asks): the channels a kept row's key lost against the
        same position before the press (zeroed where they were not), the positions whose key lost none,
        and the paper's per-channel criterion recomputed from the layer's inputs.
    """

    score_calls: int
    kept: KeptIndices
    original_length: int
    score_time_s: float = 0.0
    compress_time_s: float = 0.0
    unmatched: int = 0
    kept_lengths: PerHead = ()
    compress_calls: int = 0
    scores: Scores | None = None
    memory: tuple[int, int] = (0, 0)
    ambiguous: int = 0
    decode: tuple[StepObservation, ...] = ()
    references: dict[str, Scores] = field(default_factory=dict)
    pruned_channels: tuple[tuple[tuple[int, ...], ...], ...] = ()  # [row][head]: key channels zeroed on kept rows
    whole: KeptIndices = ()  # [row][head]: kept positions whose key lost no channel
    channel_reference: tuple[tuple[tuple[float, ...], ...], ...] = ()  # [row][head][channel], the paper's criterion

    @property
    def lengths(self) -> PerHead:
        """Rows attention can see per batch row and KV head."""
        return _per_head(self.kept_lengths, self.kept)

    @property
    def exact(self) -> bool:
        """Whether every kept row has one known position (no merged row, no ambiguous twin)."""
        return not self.unmatched and not self.ambiguous

    @property
    def compressed(self) -> bool:
        """Whether anything was dropped on any row or head (everything kept is no compression)."""
        return any(n < self.original_length for row in self.lengths for n in row)

    @property
    def kept_count(self) -> int:
        """Kept positions of batch row 0, averaged over KV heads (heads differ under head-wise presses)."""
        row = self.lengths[0] if self.lengths else ()
        return round(sum(row) / len(row)) if row else 0


@dataclass
class RunObservation:
    """One prefill (and its decoding steps): its shape and every layer's observation, or the failure.

    ``ratio`` is the compression ratio the run set on the press (None: the press has none to set).
    ``facts`` are the press's own settings read after the prefill (``window_size``, ``n_sink``,
    ``chunk_length``, the ``compression_ratio`` it reports, …), by attribute name.
    """

    tokens: int
    batch: int
    seed: int
    layers: list[LayerObservation] = field(default_factory=list)
    prefill_time_s: float = 0.0
    error: str | None = None  # the exception's last line when the prefill raised
    failure: Failure | None = None  # what kind of failure that was (kvaudit.tracer.errors.press_failure)
    ratio: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    decode_steps: int = 0  # decoding steps that completed
    decode_error: str | None = None  # the exception's last line when a decoding step raised
    probe: str = ""  # "" for a run of the grid; else the probe's kind (kvaudit.tracer.options.REPEAT, ALONE)
    rows: tuple[int, ...] | None = None  # the batch prompt's rows a probe ran alone

    @property
    def label(self) -> str:
        return f"{self.tokens}×{self.batch}"

    @property
    def where(self) -> str:
        """``512×1`` or ``512×1 at ratio 0.5``: how messages name the run."""
        return self.label if self.ratio is None else f"{self.label} at ratio {self.ratio:g}"

    @property
    def ok(self) -> bool:
        return self.error is None
