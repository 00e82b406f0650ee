"""Row matching (kvaudit.tracer.child.keptindices): the kept positions every claim reads come from it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvaudit.tracer.child.keptindices import duplicated_rows, match_rows  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gathered_rows_are_found_whatever_the_layout(dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(2, 3, 300, 16, generator=generator).to(dtype)
    kept = torch.stack([torch.randperm(300, generator=generator)[:120] for _ in range(6)]).view(2, 3, 120)
    # a transposed copy: the same rows in a tensor with other strides
    compressed = original.gather(2, kept.unsqueeze(-1).expand(-1, -1, -1, 16)).transpose(0, 1).contiguous().transpose(0, 1)
    assert torch.equal(match_rows(original, compressed), kept)


def test_changed_rows_match_nothing_and_twins_are_flagged() -> None:
    original = torch.randn(1, 2, 50, 8, generator=torch.Generator().manual_seed(1))
    original[0, 1, 40] = original[0, 1, 7]  # a twin (a repeated token's layer-0 value)
    compressed = original[:, :, [3, 7, 40, 20]].clone()
    compressed[0, 0, 0, 2] = 0.0  # a pruned key channel: no longer any row of the original
    found = match_rows(original, compressed)
    assert found[0, 0].tolist() == [-1, 7, 40, 20]
    assert found[0, 1].tolist() == [3, 7, 7, 20]  # the twin is matched to the first of the two
    twins = duplicated_rows(original)
    assert twins[0, 1].nonzero().flatten().tolist() == [7, 40] and not twins[0, 0].any()
