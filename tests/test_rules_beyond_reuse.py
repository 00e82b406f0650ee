"""KVA201 batch-row-0, KVA202 paper-default-mismatch, KVA203 python-loop-over-index-tensor."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import kvaudit.claims as claims_module
from kvaudit.claims import Paper
from kvaudit.engine import CheckOptions, run_check

HEAD = '''
from dataclasses import dataclass, field

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress

'''


def audit(tmp_path: Path, code: str, name: str = "press.py", select: str = "KVA2") -> tuple[Path, list]:
    path = tmp_path / name
    path.write_text(HEAD + textwrap.dedent(code), encoding="utf-8")
    result = run_check([str(path)], CheckOptions(select=[select]))
    assert not result.has_errors, result.files
    return path, result.findings


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


# -- kvpress's ChunkKVPress ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunkkv(kvpress_presses_dir: Path):
    path = kvpress_presses_dir / "chunkkv_press.py"
    result = run_check([str(path)])
    return path, {f.rule: f for f in result.findings}


def test_chunkkv_batch_row_0_at_the_loop_line(chunkkv) -> None:
    path, findings = chunkkv
    finding = findings["KVA201"]
    assert finding.line == line_of(path, "for chunk_idx in top_chunks.indices[0]:")
    assert finding.severity.value == "error" and finding.press == "ChunkKVPress"
    assert f"line {line_of(path, '.expand(keys.shape[0]')}" in finding.message
    assert "top_chunks.indices[0]" in finding.message


def test_chunkkv_default_mismatch_at_the_field(chunkkv) -> None:
    path, findings = chunkkv
    finding = findings["KVA202"]
    assert finding.line == line_of(path, "chunk_length: int = 20")
    assert "defaults to 20" in finding.message and "uses 10" in finding.message and "2502.00299" in finding.message


def test_chunkkv_python_loop_at_the_loop_line(chunkkv) -> None:
    path, findings = chunkkv
    finding = findings["KVA203"]
    assert finding.line == line_of(path, "for chunk_idx in top_chunks.indices[0]:")
    assert finding.severity.value == "warning"
    assert "torch.arange" in finding.message and "6.65" in finding.message


def test_only_chunk_presses_trip_the_new_rules_in_kvpress(kvpress_presses_dir: Path) -> None:
    result = run_check([str(kvpress_presses_dir)], CheckOptions(select=["KVA2"]))
    assert not result.has_errors
    by_file = {}
    for finding in result.findings:
        by_file.setdefault(Path(finding.path).name, set()).add(finding.rule)
    assert by_file["chunkkv_press.py"] == {"KVA201", "KVA202", "KVA203"}
    # Nothing else in kvpress loops over index tensors or takes row 0, except ChunkKV variants.
    assert all("chunkkv" in name for name in by_file), by_file


# -- KVA201 ----------------------------------------------------------------------------------


def test_independent_rows_do_not_fire(tmp_path: Path) -> None:
    _, findings = audit(tmp_path, '''
        @dataclass
        class PerRow(BasePress):
            press: ScorerPress = None
            chunk_length: int = 10

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                bsz, heads, kv_len, dim = keys.shape
                n = kv_len // self.chunk_length
                chunk_scores = scores.sum(dim=1)[..., : n * self.chunk_length].view(bsz, n, -1).mean(-1)
                top = chunk_scores.topk(n // 2, dim=-1)
                kept = (top.indices.unsqueeze(-1) * self.chunk_length + torch.arange(self.chunk_length)).flatten(1)
                kept = kept.sort(dim=-1)[0]                       # [0] of sort(): the values, not row 0
                first = keys.shape[0]                               # a size, not a row
                kept = kept[:, None, :, None].expand(bsz, heads, -1, dim)
                rows = []
                for b in range(bsz):                                # every row on its own
                    rows.append(scores[b].argsort(dim=-1)[..., -8:])
                return keys.gather(2, kept), values.gather(2, kept)
    ''')
    assert [f.rule for f in findings] == []


@pytest.mark.parametrize("apply", [
    "keys[:, :, kept], values[:, :, kept]",
    "torch.gather(keys, 2, kept4), torch.gather(values, 2, kept4)",
    "keys.gather(2, kept4.expand(keys.shape[0], -1, -1, -1)), values",
])
def test_row_zero_applied_to_the_batch_fires(tmp_path: Path, apply: str) -> None:
    path, findings = audit(tmp_path, f'''
        @dataclass
        class RowZero(BasePress):
            press: ScorerPress = None

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                order = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort(dim=-1)
                kept = order[0, 0, -8:].sort().values
                kept4 = kept.view(1, 1, -1, 1)
                return {apply}
    ''')
    assert [(f.rule, f.line) for f in findings] == [("KVA201", line_of(path, "kept = order[0, 0, -8:]"))]


@pytest.mark.parametrize("back, apply", [
    ("kept = torch.tensor(union, device=keys.device)", "kept.view(1, 1, -1, 1).expand(keys.shape[0], keys.shape[1], -1, 1)"),
    ("kept = torch.as_tensor(union).unsqueeze(0)", "kept.repeat(keys.shape[0], 1)"),
    ("kept = torch.as_tensor(union)", "torch.broadcast_to(kept, (keys.shape[0], len(union)))"),
    ("kept = torch.tensor(union)", "scores.index_select(-1, kept)"),
    ("mask = torch.zeros(keys.shape[2], dtype=torch.bool); mask[union] = True", "scores.masked_fill(~mask, 0.0)"),
    ("mask = torch.zeros(keys.shape[2], dtype=torch.bool); mask[union] = True", "torch.where(mask, scores, 0.0)"),
])
def test_row_zero_through_python_data_and_back_fires(tmp_path: Path, back: str, apply: str) -> None:
    """Row 0's choice leaves torch as a list (`.tolist()`), comes back (`torch.tensor`), and is applied to
    every row: by expand/repeat/broadcast_to, index_select, or a mask that masked_fill or where broadcasts."""
    path, findings = audit(tmp_path, f'''
        @dataclass
        class UnionRowZero(ScorerPress):
            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = -keys.norm(dim=-1)
                _, top = torch.topk(scores, k=8, dim=-1)
                flat = top.transpose(1, 2).contiguous().view(keys.shape[0], -1)
                union = list(dict.fromkeys(flat[0].tolist()))
                {back}
                spread = {apply}
                return scores
    ''')
    assert [(f.rule, f.line) for f in findings] == [("KVA201", line_of(path, "flat[0].tolist()"))]
    assert f"line {line_of(path, 'spread = ')} applies the selection" in findings[0].message


def test_row_zero_of_the_attention_interface_fires(tmp_path: Path) -> None:
    """Research code hooked as an attention function (`query`, `key`, `attention_mask`) is batch first too:
    the union of row 0's top-k, expanded to every row (the pattern of the LessIsMore strategy in the corpus)."""
    path, findings = audit(tmp_path, '''
        @dataclass
        class Hooked(BasePress):
            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                return keys, values

            def attention_forward(self, module, query, key, value, attention_mask, scaling):
                B, H, Lq, _ = query.shape
                weights = torch.matmul(query, key.transpose(2, 3)) * scaling + attention_mask
                _, middle = torch.topk(weights, k=16, dim=-1)
                union_tensor = middle.transpose(1, 3).contiguous().view(B, -1)
                union_list = list(dict.fromkeys(union_tensor[0].tolist()))
                middle = torch.tensor(union_list, dtype=middle.dtype, device=middle.device)
                middle = middle.unsqueeze(0).unsqueeze(1).unsqueeze(2)
                middle = middle.expand(B, H, Lq, -1)
                return torch.zeros_like(weights).scatter_(-1, middle, 1.0)
    ''')
    assert [(f.rule, f.line) for f in findings] == [("KVA201", line_of(path, "union_tensor[0].tolist()"))]
    assert f"line {line_of(path, 'middle.expand(B')} applies" in findings[0].message


def test_rows_taken_one_by_one_through_python_data_do_not_fire(tmp_path: Path) -> None:
    _, findings = audit(tmp_path, '''
        @dataclass
        class EachRow(ScorerPress):
            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = -keys.norm(dim=-1)
                top = scores.topk(8, dim=-1).indices
                masks = []
                for b in range(keys.shape[0]):
                    union = list(dict.fromkeys(top[b].flatten().tolist()))
                    mask = torch.zeros(keys.shape[2], dtype=torch.bool)
                    mask[torch.tensor(union)] = True
                    masks.append(mask)
                first = top[0].tolist()  # looked at only
                print(first)
                mask = torch.stack(masks)[:, None, :].expand(-1, keys.shape[1], -1)
                return scores.masked_fill(~mask, 0.0)
    ''')
    assert [f.rule for f in findings] == []


def test_inherited_press_of_the_run_is_reported_once(tmp_path: Path) -> None:
    path, findings = audit(tmp_path, '''
        @dataclass
        class Base(BasePress):
            press: ScorerPress = None

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                top = self.press.score(module, hidden_states, keys, values, attentions, kwargs).topk(8, dim=-1)
                kept = top.indices[0].view(1, -1, 8, 1).expand(keys.shape[0], -1, -1, keys.shape[-1])
                return keys.gather(2, kept), values.gather(2, kept)


        class Child(Base):
            pass
    ''')
    assert [(f.rule, f.press) for f in findings] == [("KVA201", "Base")]


# -- KVA203 ----------------------------------------------------------------------------------


def test_loops_over_ranges_lists_and_scores_do_not_fire(tmp_path: Path) -> None:
    _, findings = audit(tmp_path, '''
        @dataclass
        class Loops(BasePress):
            press: ScorerPress = None
            layers: list = field(default_factory=list)

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                parts = []
                for i in range(keys.shape[2] // 8):
                    parts.append(torch.arange(i * 8, i * 8 + 4))
                for layer in self.layers:
                    parts.append(layer)
                for row in scores:                  # scores, not positions
                    parts.append(row.mean())
                top = scores.topk(8, dim=-1).indices
                for _ in top:                       # walks positions but builds nothing
                    pass
                kept = torch.cat(parts)[None, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[3])
                return keys.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, keys.shape[3])), values
    ''')
    assert [f.rule for f in findings] == []


@pytest.mark.parametrize("loop", [
    "for c in order.tolist():\n    parts.append(torch.arange(c * 4, c * 4 + 4))",
    "for i, c in enumerate(order):\n    if c < 3:\n        parts.append(i)",
    "parts = [torch.arange(c * 4, c * 4 + 4) for c in order.tolist()]",
    "for c in torch.argsort(scores[0, 0], descending=True)[:8]:\n    mask[c * 4 : c * 4 + 4] = True",
])
def test_loops_over_index_tensors_fire(tmp_path: Path, loop: str) -> None:
    body = textwrap.indent(loop, " " * 16)
    path, findings = audit(tmp_path, f'''
        @dataclass
        class Looping(BasePress):
            press: ScorerPress = None

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                order = scores.mean(dim=(0, 1)).argsort(descending=True)[:8]
                parts = []
                mask = torch.zeros(keys.shape[2], dtype=torch.bool)
{body}
                return keys, values
    ''', select="KVA203")
    first = loop.splitlines()[0].strip()
    assert [(f.rule, f.line) for f in findings] == [("KVA203", line_of(path, first))]
    assert (".tolist()" in findings[0].message) == (".tolist()" in loop)


# -- KVA202 ----------------------------------------------------------------------------------


def test_defaults_equal_in_value_and_non_literal_defaults(tmp_path: Path) -> None:
    _, findings = audit(tmp_path, '''
        CHUNK = 20

        @dataclass
        class ChunkKVLike(BasePress):
            """ChunkKV (arXiv 2502.00299)."""

            press: ScorerPress = None
            chunk_length: float = 10.0          # 10.0 == 10
            n_reuse: int = CHUNK                 # not a literal: not compared

            def compress(self, module, hidden_states, keys, values, attentions, kwargs):
                return keys, values
    ''', select="KVA202")
    assert findings == []


def test_field_default_and_inherited_default(tmp_path: Path) -> None:
    path, findings = audit(tmp_path, '''
        @dataclass
        class ChunkKVField(BasePress):
            """ChunkKV (arXiv 2502.00299)."""

            press: ScorerPress = None
            chunk_length: int = field(default=16)
    ''', select="KVA202")
    assert [(f.rule, f.line) for f in findings] == [("KVA202", line_of(path, "field(default=16)"))]
    sub = tmp_path / "sub.py"
    sub.write_text("from kvpress.presses.chunkkv_press import ChunkKVPress\n\n\nclass MyChunkKV(ChunkKVPress):\n    pass\n")
    [finding] = run_check([str(sub)], CheckOptions(select=["KVA202"])).findings
    assert finding.line == 4 and "inherited from ChunkKVPress" in finding.message and "defaults to 20" in finding.message


def test_a_papers_defaults_need_only_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = claims_module.load_registry()
    snap = next(p for p in registry if p.key == "snapkv")
    assert not snap.defaults  # the registry publishes no SnapKV defaults: the patch below adds them
    patched = tuple(Paper(p.key, p.title, p.arxiv, p.names, p.claims, {"window_size": 32, "kernel_size": 5})
                    if p.key == "snapkv" else p for p in registry)
    monkeypatch.setattr(claims_module, "load_registry", lambda *args: patched)
    path, findings = audit(tmp_path, '''
        @dataclass
        class MySnap(ScorerPress):
            """SnapKV (arXiv 2404.14469)."""

            window_size: int = 64
            kernel_size: int = 5
            use_pool: bool = True

            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                return keys.norm(dim=-1)
    ''', select="KVA202")
    assert [(f.rule, f.line) for f in findings] == [("KVA202", line_of(path, "window_size: int = 64"))]
    assert "uses 32" in findings[0].message
