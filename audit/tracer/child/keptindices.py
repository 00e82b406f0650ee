"""Which prompt positions survived compression, recovered from the cache itself.

Method (works for any press, not just gather-based ones): the tracer keeps a copy of each layer's
keys and values as they were *before* the press ran (a forward hook that runs first), and reads
the final cache after the prefill. Every row of the compressed keys is matched, per batch row and
KV head, to the position of the identical row in the original keys. Keys carry RoPE, so two
positions never share a key row even when they hold the same token. Rows whose keys changed
(key re-rotation) are matched on their values instead; rows matching nothing (merged entries)
are counted as ``unmatched``. During decoding the same matching runs after every step, against
the cache as it was before the press ran in that step, and the maps compose (:func:`map_rows`). Head-wise presses that mask instead of dropping (AdaKV writes
``module.masked_key_indices``) have their masked positions removed from the kept set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_HASH_SEED = 20250200
_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}  # an integer dtype of each float's size


def _row_hashes(rows: torch.Tensor) -> torch.Tensor:
    """(..., head_dim) -> (...) int64: a hash of each row's bits.

    Integer arithmetic wraps and is associative, so a row's hash does not depend on the layout of the
    tensor it sits in (a float projection does: its reduction order follows the strides). Identical
    rows always hash alike; different rows collide with negligible probability, and every match is
    checked for exact equality anyway.
    """
    head_dim = rows.shape[-1]
    generator = torch.Generator().manual_seed(_HASH_SEED)
    weights = (torch.randint(1, 2**62, (head_dim,), generator=generator, dtype=torch.int64) * 2 + 1).to(rows.device)
    bits = rows.contiguous().view(_BITS[rows.element_size()]).to(torch.int64)
    return (bits * weights).sum(-1)


def match_rows(original: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """Position in ``original`` of each row of ``compressed``, or -1 when no row is identical.

    Parameters
    ----------
    original : torch.Tensor
        (batch, heads, length, head_dim), the cache before compression.
    compressed : torch.Tensor
        (batch, heads, kept, head_dim), the cache after compression.

    Returns
    -------
    torch.Tensor
        (batch, heads, kept) long tensor.

    Notes
    -----
    Rows are compared through a hash of their bits (sort + binary search: O(L log L), no Python loop
    over rows), then every candidate is checked for exact equality, so a hash collision can never
    produce a false match. A row with twins is matched to the first of them.
    """
    batch, heads, length, head_dim = original.shape
    if compressed.shape[:2] != original.shape[:2] or compressed.shape[-1] != head_dim or length == 0:
        return torch.full(compressed.shape[:3], -1, dtype=torch.long)
    if compressed.dtype != original.dtype:
        compressed = compressed.to(original.dtype)
    ordered, order = _row_hashes(original).sort(dim=-1, stable=True)
    wanted = _row_hashes(compressed)
    slot = torch.searchsorted(ordered.contiguous(), wanted.contiguous()).clamp(max=length - 1)
    candidate = order.gather(-1, slot)
    rows = original.gather(2, candidate.unsqueeze(-1).expand(-1, -1, -1, head_dim))
    exact = (ordered.gather(-1, slot) == wanted) & (rows == compressed).all(-1)
    return torch.where(exact, candidate, torch.full_like(candidate, -1)).cpu()


def duplicated_rows(original: torch.Tensor) -> torch.Tensor:
    """(batch, heads, length) bool: rows that have an identical twin at another position of the same head.

    Layer-0 values carry no RoPE, so a repeated token gives identical value rows: a row matched on
    its value alone cannot tell which of the twins it came from.
    """
    batch, heads, length, head_dim = original.shape
    if length < 2:
        return torch.zeros((batch, heads, length), dtype=torch.bool)
    ordered, order = _row_hashes(original).sort(dim=-1, stable=True)
    rows = original.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, head_dim))
    twin = (ordered[..., 1:] == ordered[..., :-1]) & (rows[:, :, 1:] == rows[:, :, :-1]).all(-1)  # neighbours
    in_order = torch.zeros((batch, heads, length), dtype=torch.bool, device=original.device)
    in_order[..., 1:] |= twin
    in_order[..., :-1] |= twin
    result = torch.zeros_like(in_order)
    result.scatter_(-1, order, in_order)
    return result.cpu()


@dataclass
class RowMap:
    """Where each row of a cache came from, as prompt positions (-1: merged or transformed).

    ``positions`` is (batch, heads, rows). ``alive`` marks the rows attention can see (masked rows
    are not). ``unmatched`` and ``ambiguous`` count rows of batch row 0 (all heads).
    """

    positions: torch.Tensor
    alive: torch.Tensor
    unmatched: int = 0
    ambiguous: int = 0

    def kept(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """Kept positions per [row][head]: sorted, masked and unmatched rows left out."""
        return tuple(
            tuple(tuple(sorted({p for p, a in zip(head, head_alive) if a and p >= 0}))
                  for head, head_alive in zip(row, row_alive))
            for row, row_alive in zip(self.positions.tolist(), self.alive.tolist())
        )

    def lengths(self) -> tuple[tuple[int, ...], ...]:
        """Rows attention can see per [row][head] (unmatched ones included)."""
        return tuple(tuple(int(n) for n in row) for row in self.alive.sum(-1).tolist())

    def rows(self) -> tuple[tuple[int, ...], ...]:
        """Cache rows per [row][head] (masked ones included)."""
        batch, heads, length = self.positions.shape
        return tuple(tuple(length for _ in range(heads)) for _ in range(batch))

    def masked(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(n) for n in row) for row in (~self.alive).sum(-1).tolist())


def _alive(shape: torch.Size, masked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    alive = torch.ones(shape, dtype=torch.bool)
    if masked is not None:
        batch_index, head_index, seq_index = (t.cpu().long() for t in masked)
        inside = (batch_index < shape[0]) & (head_index < shape[1]) & (seq_index < shape[2])
        alive[batch_index[inside], head_index[inside], seq_index[inside]] = False
    return alive


def map_rows(
    before_keys: torch.Tensor,
    before_values: torch.Tensor,
    before_positions: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
) -> RowMap:
    """Map the rows of a cache after a press ran to positions, through the cache before it ran.

    Rows are matched on keys (they carry RoPE, so twins are impossible); rows whose keys changed
    (re-rotated keys, pruned key channels) are matched on values, rows whose values changed
    (merged values) keep their key match. ``before_positions`` (batch, heads, rows_before) gives the
    position of each row before: ``arange(L)`` at prefill, the composed map during decoding.
    """
    if keys.shape == before_keys.shape and torch.equal(keys, before_keys) and torch.equal(values, before_values):
        index = torch.arange(keys.shape[2]).expand(keys.shape[:3])
        by_value = False
    else:
        index = match_rows(before_keys, keys)
        by_value = bool((index < 0).any()) and values.shape[:3] == keys.shape[:3]
        if by_value:
            value_index = match_rows(before_values, values)
            index = torch.where(index < 0, value_index, index)
    positions = torch.where(index >= 0, before_positions.cpu().gather(2, index.clamp(min=0)), torch.full_like(index, -1))
    alive = _alive(positions.shape, masked)
    unmatched = int(((positions[0] < 0) & alive[0]).sum()) if len(positions) else 0
    ambiguous = 0
    if by_value and len(positions):
        twins = duplicated_rows(before_values)
        ambiguous = int((twins[0].gather(-1, index[0].clamp(min=0)) & (index[0] >= 0) & alive[0]).sum())
    return RowMap(positions, alive, unmatched, ambiguous)


def kept_positions(
    original_keys: torch.Tensor,
    original_values: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
) -> tuple[tuple[tuple[tuple[int, ...], ...], ...], tuple[tuple[int, ...], ...], int]:
    """Kept positions per [row][head], cache rows per [row][head], and unmatched rows of row 0.

    ``masked`` is AdaKV's ``(batch_indices, head_indices, seq_indices)`` into the compressed cache.
    """
    batch, heads, length, _ = original_keys.shape
    positions = torch.arange(length).expand(batch, heads, length)
    row_map = map_rows(original_keys, original_values, positions, keys, values, masked)
    return row_map.kept(), row_map.lengths(), row_map.unmatched
