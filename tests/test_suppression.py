"""Inline suppression `# kvaudit: ignore[ID] reason`, and the meta rules KVA001/KVA002."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvaudit.engine import CheckOptions, run_check
from kvaudit.suppression import parse_suppressions
from helpers import run_cli

HEADER = '''from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVNoReuse(BasePress):
    """ChunkKV: https://arxiv.org/abs/2502.00299"""

    press: ScorerPress = None
    chunk_length: int = {chunk_length}

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
'''
SCORE = "        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)"
TAIL = '''
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
'''


def press(tmp_path: Path, body: str, chunk_length: int = 10) -> Path:
    path = tmp_path / "press.py"
    path.write_text(HEADER.format(chunk_length=chunk_length) + body + TAIL, encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def found(path: Path, options: CheckOptions | None = None) -> list[tuple[str, int]]:
    result = run_check([str(path)], options)
    assert not result.has_errors
    return [(f.rule, f.line) for f in result.findings]


def test_unsuppressed_baseline(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE)
    assert found(path) == [("KVA101", line_of(path, "self.press.score"))]


def test_suppression_on_the_line(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101] reuse is planned")
    assert found(path) == []


def test_suppression_on_the_line_above(tmp_path: Path) -> None:
    path = press(tmp_path, "        # kvaudit: ignore[KVA101] reuse is planned\n" + SCORE)
    assert found(path) == []
    path = press(tmp_path, "        # kvaudit: ignore[KVA101] reuse is planned\n        # more words\n" + SCORE)
    assert found(path) == []  # a block of comments may stand between


def test_suppression_two_lines_above_does_not_count(tmp_path: Path) -> None:
    path = press(tmp_path, "        # kvaudit: ignore[KVA101] too far\n        kv_len = keys.shape[2]\n" + SCORE)
    suppression = line_of(path, "kvaudit: ignore")
    assert sorted(found(path)) == [("KVA001", suppression), ("KVA101", line_of(path, "self.press.score"))]


def test_trailing_suppression_does_not_cover_the_next_line(tmp_path: Path) -> None:
    path = press(tmp_path, "        kv_len = keys.shape[2]  # kvaudit: ignore[KVA101]\n" + SCORE)
    assert ("KVA101", line_of(path, "self.press.score")) in found(path)


def test_several_ids(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101, kva202] both", chunk_length=20)
    # KVA202 fires on the field line, not here: its id is unused on this line.
    assert sorted(found(path)) == [("KVA001", line_of(path, "kvaudit: ignore")),
                                   ("KVA202", line_of(path, "chunk_length: int = 20"))]
    path = press(tmp_path, SCORE, chunk_length=20)
    path.write_text(path.read_text().replace("chunk_length: int = 20", "chunk_length: int = 20  # kvaudit: ignore[KVA202,KVA101]"))
    assert found(path) == [("KVA001", line_of(path, "chunk_length: int = 20")), ("KVA101", line_of(path, "self.press.score"))]
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101]", chunk_length=20)
    path.write_text(path.read_text().replace("chunk_length: int = 20", "chunk_length: int = 20  # kvaudit: ignore[KVA202,KVA101]"))
    result = run_check([str(path)])
    assert [(f.rule, f.line) for f in result.findings] == [("KVA001", line_of(path, "chunk_length: int = 20"))]
    [message] = [f.message for f in result.findings]
    assert message.startswith("unused suppression: no KVA101 finding")


def test_bare_suppression_is_rejected(tmp_path: Path) -> None:
    for comment in ("# kvaudit: ignore", "# kvaudit: ignore[]", "# kvaudit: ignore KVA101", "#kvaudit:ignore"):
        path = press(tmp_path, f"{SCORE}  {comment}")
        line = line_of(path, "self.press.score")
        assert sorted(found(path)) == [("KVA002", line), ("KVA101", line)], comment  # suppresses nothing
    result = run_check([str(path)])
    [bare] = [f for f in result.findings if f.rule == "KVA002"]
    assert bare.severity.value == "error" and bare.press is None and "kvaudit: ignore[KVA101]" in bare.message
    assert bare in result.extra_findings


def test_unused_and_unknown_ids(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101, KVA203, KVA9X9]")
    result = run_check([str(path)])
    line = line_of(path, "self.press.score")
    assert [(f.rule, f.line) for f in result.findings] == [("KVA001", line), ("KVA001", line)]
    messages = sorted(f.message for f in result.findings)
    assert "unknown rule `KVA9X9`" in messages[0] and "no KVA203 finding" in messages[1]
    assert all(f.severity.value == "warning" for f in result.findings)


def test_ids_of_rules_that_did_not_run_are_not_unused(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101, KVA203]")
    assert found(path, CheckOptions(select=["KVA1"])) == []
    assert found(path, CheckOptions(ignore=["KVA203"])) == []
    assert found(path, CheckOptions(per_path_ignores={"press.py": ["KVA203"]})) == []
    assert found(path, CheckOptions(ignore=["KVA001"])) == []
    assert found(path) == [("KVA001", line_of(path, "self.press.score"))]


def test_bare_suppression_respects_selection(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore")
    assert found(path, CheckOptions(ignore=["KVA002"])) == [("KVA101", line_of(path, "self.press.score"))]


def test_strings_are_not_comments() -> None:
    text = 'x = "# kvaudit: ignore"\ny = 1  # kvaudit: ignore[KVA101] why\n# kvaudit: ignore[KVA2]\nz = 2\n'
    sups = parse_suppressions(text)
    assert [(s.line, s.ids, s.standalone, sorted(s.covers)) for s in sups] == [
        (2, ("KVA101",), False, [2]),
        (3, ("KVA2",), True, [3, 4]),
    ]
    assert sups[0].reason == "why"


def test_cli_shows_meta_findings_and_fails_on_bare(tmp_path: Path) -> None:
    path = press(tmp_path, SCORE + "  # kvaudit: ignore[KVA101] planned")
    assert run_cli("check", str(path)).exit_code == 0
    path = press(tmp_path, SCORE + "  # kvaudit: ignore")
    result = run_cli("check", str(path), "-f", "json")
    assert result.exit_code == 1
    assert [f["rule"] for f in result.json()["other_findings"]] == ["KVA002"]


@pytest.mark.parametrize("rule", ["KVA201", "KVA203"])
def test_suppressing_kvpress_chunkkv_findings(kvpress_presses_dir: Path, tmp_path: Path, rule: str) -> None:
    text = (kvpress_presses_dir / "chunkkv_press.py").read_text(encoding="utf-8")
    marker = "        for chunk_idx in top_chunks.indices[0]:"
    path = tmp_path / "chunk.py"
    path.write_text(text.replace(marker, f"        # kvaudit: ignore[{rule}] batch 1 only\n{marker}"), encoding="utf-8")
    rules = [f.rule for f in run_check([str(path)]).findings]
    assert rule not in rules and {"KVA201", "KVA203"} - {rule} <= set(rules)
