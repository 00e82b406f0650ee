"""Which prompt positions survived compression, recovered from the cache itself.

Method (works for any press, not just gather-based ones): the tracer keeps a copy of each layer's
keys and values as they were *before* the press ran (a forward hook that runs first), and reads
the final cache after the prefill. Every row of the compressed keys is matched, per batch row and
KV head, to the position of the identical row in the original keys. Keys carry RoPE, so two
positions never share a key row even when they hold the same token. Rows whose keys changed
(key re-rotation) are matched on their values instead; rows matching nothing (merged entries)
are counted as ``unmatched``. Head-wise presses that mask instead of dropping (AdaKV writes
``module.masked_key_indices``) have their masked positions removed from the kept set.
"""

from __future__ import annotations

import torch

_PROJECTION_SEED = 20250200


def _projection(head_dim: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_PROJECTION_SEED)
    return torch.randn(head_dim, generator=generator, dtype=torch.float64).to(device)


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
    Rows are compared through a random projection (sort + binary search: O(L log L)), then every
    candidate is checked for exact equality, so a projection tie can never produce a false match.
    """
    batch, heads, length, head_dim = original.shape
    if compressed.shape[:2] != original.shape[:2] or compressed.shape[-1] != head_dim or length == 0:
        return torch.full(compressed.shape[:3], -1, dtype=torch.long)
    weights = _projection(head_dim, original.device)
    projected_original = (original.to(torch.float64) * weights).sum(-1)
    projected_compressed = (compressed.to(torch.float64) * weights).sum(-1)
    ordered, order = projected_original.sort(dim=-1)
    slot = torch.searchsorted(ordered.contiguous(), projected_compressed.contiguous())
    result = torch.full(compressed.shape[:3], -1, dtype=torch.long, device=original.device)
    # Rounding can put the twin one slot either side of the insertion point: check both.
    for candidate_slot in (slot.clamp(max=length - 1), (slot - 1).clamp(min=0)):
        candidate = order.gather(-1, candidate_slot)
        rows = original.gather(2, candidate.unsqueeze(-1).expand(-1, -1, -1, head_dim))
        exact = (rows == compressed).all(-1) & (result < 0)
        result = torch.where(exact, candidate, result)
    # Rare leftovers (a projection far off through reduction order): exhaustive exact search.
    for b, h, k in (result < 0).nonzero().tolist():
        hits = (original[b, h] == compressed[b, h, k]).all(-1).nonzero()
        if len(hits):
            result[b, h, k] = hits[0, 0]
    return result.cpu()


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
    positions = match_rows(original_keys, keys)
    if (positions < 0).any() and values.shape[:3] == keys.shape[:3]:
        by_value = match_rows(original_values, values)
        positions = torch.where(positions < 0, by_value, positions)
    alive = torch.ones(positions.shape, dtype=torch.bool)
    if masked is not None:
        batch_index, head_index, seq_index = (t.cpu() for t in masked)
        alive[batch_index, head_index, seq_index] = False
    kept: list[tuple[tuple[int, ...], ...]] = []
    lengths: list[tuple[int, ...]] = []
    for row_positions, row_alive in zip(positions.tolist(), alive.tolist()):
        kept.append(
            tuple(
                tuple(sorted({p for p, a in zip(head, head_alive) if a and p >= 0}))
                for head, head_alive in zip(row_positions, row_alive)
            )
        )
        lengths.append(tuple(sum(head_alive) for head_alive in row_alive))
    unmatched = int(((positions[0] < 0) & alive[0]).sum()) if len(positions) else 0
    return tuple(kept), tuple(lengths), unmatched
