"""The static audit of every press in the installed kvpress (0.5.5)."""

from __future__ import annotations

from pathlib import Path

from kvaudit.engine import run_check


def test_no_kvpress_press_is_implemented(kvpress_presses_dir: Path) -> None:
    result = run_check([str(kvpress_presses_dir)])
    assert not result.has_errors, [f for f in result.files if f.status == "error"]
    assert len(result.presses) >= 40
    verdicts = {p.name: p.verdicts.get("layer-index-reuse") for p in result.presses}
    assert "implemented" not in verdicts.values()
    assert verdicts["ChunkKVPress"] == "missing"
    # SnapKV and PyramidKV cite papers that claim no reuse: no verdict, no reuse findings.
    for name in ("SnapKVPress", "PyramidKVPress", "KnormPress", "StreamingLLMPress"):
        press = next(p for p in result.presses if p.name == name)
        assert press.verdicts == {} and not [f for f in press.findings if f.rule.startswith("KVA1")]


def test_subclass_of_installed_chunkkv_inherits_its_verdict(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from dataclasses import dataclass\nfrom kvpress import ChunkKVPress\n\n\n"
        "@dataclass\nclass MyChunk(ChunkKVPress):\n    chunk_length: int = 10\n"
    )
    [press] = run_check([str(tmp_path / "mine.py")]).presses
    assert press.name == "MyChunk"
    assert press.verdicts == {"layer-index-reuse": "missing"}  # inherits the claim and compress()
    assert press.claims[0].source.startswith("inherited from ChunkKVPress (class docstring")
