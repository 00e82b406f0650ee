"""What the instrumentation saw, as plain Python data (no torch).

The worker turns tensors into these structures right after each prefill, so the verdict logic
(:mod:`kvaudit.tracer.verdicts`) is pure Python and can be tested on hand-made observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Kept positions of one layer: kept[row][head] is the sorted tuple of the prompt positions that
# survived compression for that batch row and KV head.
KeptIndices = tuple[tuple[tuple[int, ...], ...], ...]


@dataclass(frozen=True)
class LayerObservation:
    """One attention layer during one prefill.

    Parameters
    ----------
    score_calls : int
        Outermost ``score()`` calls made for this layer (a scorer calling another counts once).
    kept : KeptIndices
        Positions kept per batch row and KV head.
    original_length : int
        Cache length before the press ran on this layer.
    score_time_s, compress_time_s : float
        Wall time in ``score()`` and in the press's forward hook (which includes ``score()``).
    unmatched : int
        Compressed cache rows (row 0, all heads) that match no original position (merged or
        transformed keys and values); they count in ``kept_count`` but carry no index.
    """

    score_calls: int
    kept: KeptIndices
    original_length: int
    score_time_s: float = 0.0
    compress_time_s: float = 0.0
    unmatched: int = 0
    kept_lengths: tuple[tuple[int, ...], ...] = ()  # cache rows per [row][head]; kept sizes if empty

    @property
    def compressed(self) -> bool:
        """Whether anything was dropped on any row or head (everything kept is no compression)."""
        lengths = self.kept_lengths or tuple(tuple(len(h) for h in row) for row in self.kept)
        return any(n < self.original_length for row in lengths for n in row)

    @property
    def kept_count(self) -> int:
        """Kept positions of batch row 0, averaged over KV heads (heads differ under head-wise presses)."""
        lengths = self.kept_lengths or tuple(tuple(len(h) for h in row) for row in self.kept)
        row = lengths[0] if lengths else ()
        return round(sum(row) / len(row)) if row else 0


@dataclass
class RunObservation:
    """One prefill: its shape and every layer's observation, or the failure that stopped it."""

    tokens: int
    batch: int
    seed: int
    layers: list[LayerObservation] = field(default_factory=list)
    prefill_time_s: float = 0.0
    error: str | None = None  # the exception's last line when the prefill raised
    exception_type: str | None = None

    @property
    def label(self) -> str:
        return f"{self.tokens}×{self.batch}"

    @property
    def ok(self) -> bool:
        return self.error is None
