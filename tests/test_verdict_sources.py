"""Where claims come from and what kvaudit audits: claim origins, --claim notes, docstring
examples, unknown bases, configured press bases (issue 10, sections 2 and 3)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kvaudit.claims import strip_example_code
from kvaudit.config import ConfigError, load_config
from kvaudit.engine import CheckOptions, run_check
from kvaudit.model import LAYER_INDEX_REUSE
from helpers import STATIC_PRESSES, TESTS, run_cli

ROOT = TESTS.parent
PLAIN = '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PlainPress(BasePress):
    """No paper cited."""

    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        indices = self.press.score(module, hidden_states, keys, values, attentions, kwargs).argsort()
        return keys.gather(2, indices), values.gather(2, indices)
'''


def test_a_config_override_says_where_the_claim_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plain.py").write_text(PLAIN)
    (tmp_path / "kvaudit.toml").write_text('[[claim-overrides]]\nclass = "PlainPress"\nadd = ["layer-index-reuse"]\n')
    monkeypatch.chdir(tmp_path)
    [press] = run_cli("check", "plain.py", "-f", "json").json()["presses"]
    [claim] = press["claims"]
    assert claim["origin"] == {"kind": "config", "place": "kvaudit.toml claim-overrides[0]", "paper": "chunkkv"}
    [finding] = [f for f in press["findings"] if f["rule"] == "KVA101"]
    assert finding["message"].startswith("PlainPress is held by kvaudit.toml claim-overrides[0] to layer-wise index reuse")
    assert "cites kvaudit.toml" not in finding["message"]


def test_citations_and_forced_claims_keep_their_origin(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(PLAIN)
    [forced] = run_check([str(tmp_path / "plain.py")], CheckOptions(forced_claims=[LAYER_INDEX_REUSE])).presses
    assert (forced.claims[0].origin.kind, forced.claims[0].origin.place) == ("option", "--claim")
    assert "PlainPress is held by --claim to" in next(f.message for f in forced.findings if f.rule == "KVA101")
    [cited] = run_check([str(STATIC_PRESSES / "decoy_logs_layer.py")]).presses
    assert cited.claims[0].origin.kind == "citation" and cited.claims[0].origin.paper == "chunkkv"
    assert cited.claims[0].source == "module docstring: ChunkKV (arXiv 2502.00299)"


def test_claim_not_applied_is_said_on_stderr() -> None:
    result = run_cli("check", str(STATIC_PRESSES / "quiet_presses.py"), "--claim", "layer-index-reuse", "-f", "json")
    assert result.exception is None
    json.loads(result.stdout)  # stdout stays machine-readable
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, result.stderr
    assert any("not applied to MySnapKVPress: it cites SnapKV (arXiv 2404.14469)" in n for n in notes)
    assert all("claim-overrides" in n for n in notes)  # and how to force it anyway
    assert "note:" not in run_cli("check", str(STATIC_PRESSES / "quiet_presses.py")).stderr  # no --claim, no note


def test_docstring_example_code_is_not_a_citation(kvpress_presses_dir: Path) -> None:
    text = textwrap.dedent('''\
        Wraps presses.

        Example:
        ```python
        press = ComposedPress([SnapKVPress(0.3)])
        ```
        e.g.
            press = ComposedPress([SnapKVPress(0.5), ThinKPress(0.5)])
        or, inline, ComposedPress([SnapKVPress(0.5)]) works too.
        Based on SnapKV (https://arxiv.org/abs/2404.14469).

        Examples
        --------
        >>> SnapKVPress(0.5)
        press = SnapKVPress(0.5)
        ''')
    stripped = strip_example_code(text)
    assert stripped.count("\n") == text.count("\n")  # line numbers survive
    assert stripped.count("SnapKV") == 1 and "Based on SnapKV (https://arxiv.org/abs/2404.14469)." in stripped
    # kvpress's ComposedPress and ThinKPress name SnapKVPress only in usage examples: ComposedPress cites
    # nothing (so --claim reaches it); ThinKPress cites its own paper, ThinK, whose claims (no reuse) it gets.
    from kvaudit.claims import paper_by_key

    result = run_check([str(kvpress_presses_dir / "composed_press.py"), str(kvpress_presses_dir / "think_press.py")],
                       CheckOptions(forced_claims=[LAYER_INDEX_REUSE]))
    assert {p.name: [(c.id, c.origin.kind) for c in p.claims] for p in result.presses} == {
        "ComposedPress": [(LAYER_INDEX_REUSE, "option")],
        "ThinKPress": [(claim, "citation") for claim in sorted(paper_by_key("think").claims)]}
    [note] = result.notes
    assert "not applied to ThinKPress: it cites ThinK (arXiv 2407.21018)" in note and "SnapKV" not in note


def test_a_press_with_an_unknown_base_is_not_reported(tmp_path: Path, kvpress_presses_dir: Path) -> None:
    path = tmp_path / "fork.py"
    path.write_text("from kvpress.presses.fork_only_press import ForkOnlyPress\n\n\n"
                    "class Mine(ForkOnlyPress):\n    \"\"\"ChunkKV.\"\"\"\n")
    result = run_check([str(path)])
    assert result.presses == []
    [status] = result.files
    assert status.status == "ok" and "Mine derives from kvpress.presses.fork_only_press.ForkOnlyPress" in status.message
    # with the base in the run, it is a press again
    (tmp_path / "base.py").write_text("from kvpress.presses.base_press import BasePress\n\n\nclass ForkOnlyPress(BasePress):\n"
                                      "    pass\n")
    path.write_text(path.read_text().replace("kvpress.presses.fork_only_press", "base"))
    assert [p.name for p in run_check([str(tmp_path)]).presses] == ["ForkOnlyPress", "Mine"]


def test_evidence_is_unique_under_forced_claim(kvpress_presses_dir: Path) -> None:
    payload = run_cli("check", str(kvpress_presses_dir), "--claim", "layer-index-reuse", "-f", "json").json()
    for press in payload["presses"]:
        items = [json.dumps(item, sort_keys=True) for item in press["evidence"]]
        assert len(items) == len(set(items)), press["name"]


PRESS_BASE = '[[press-bases]]\nclass = "mlx_lm.models.cache.KVCache"\nentry-methods = ["update_and_fetch"]\nscore-calls = ["f"]\n'
BAD_PRESS_BASES = [
    ('press-bases = { class = "X" }\n', "press-bases: must be an array of tables"),
    (PRESS_BASE.replace('score-calls = ["f"]\n', ""), "press-bases[0]: needs `score-calls`"),
    (PRESS_BASE + 'hook = "x"\n', "press-bases[0].hook: unknown key"),
    (PRESS_BASE.replace('"mlx_lm.models.cache.KVCache"', '"mlx-lm.KVCache"'), "press-bases[0].class"),
    (PRESS_BASE.replace('["update_and_fetch"]', '[]'), "press-bases[0].entry-methods: must name at least one"),
    (PRESS_BASE.replace('["update_and_fetch"]', '["self.update"]'), "press-bases[0].entry-methods: 'self.update'"),
    (PRESS_BASE.replace('["f"]', '"f"'), "press-bases[0].score-calls: must be a list"),
    (PRESS_BASE + 'state = "each"\n', "press-bases[0].state: must be one of shared, per-layer"),
    (PRESS_BASE + 'layer-index = [3]\n', "press-bases[0].layer-index"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PRESS_BASES, ids=[m.split(":")[0] for _, m in BAD_PRESS_BASES])
def test_bad_press_bases_are_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    (tmp_path / "kvaudit.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "kvaudit.toml")
    assert message in str(raised.value) and str(raised.value).startswith("kvaudit.toml: ")
    result = run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"))
    assert result.exit_code == 2 and result.exception is None and message in result.stderr


def test_the_documented_press_base_is_valid(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "press-bases.md").read_text(encoding="utf-8")
    block = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "kvaudit.toml").write_text(block)
    [base] = load_config(tmp_path / "kvaudit.toml").press_bases
    assert (base.cls, base.entry_methods, base.layer_index, base.per_layer_state) == (
        "mlx_lm.models.cache.KVCache", ("update_and_fetch",), ("_layer_id",), True)
    assert block in (ROOT / "tests" / "corpus" / "kvaudit.toml").read_text()  # the corpus runs what the docs show


def test_a_bare_class_name_matches_and_shared_state_is_shared(tmp_path: Path) -> None:
    """`class = "Cache"` matches by name; with the default `state = "shared"`, state on self crosses layers."""
    (tmp_path / "kvaudit.toml").write_text('[[press-bases]]\nclass = "Cache"\nentry-methods = ["step"]\n'
                                           'score-calls = ["self.rank"]\n')
    (tmp_path / "mine.py").write_text(textwrap.dedent('''\
        """ChunkKV (arXiv 2502.00299) in a framework of its own."""
        from framework import Cache


        class SharedCache(Cache):
            def __init__(self, n_reuse: int = 2):
                self.n_reuse = n_reuse
                self.kept = None

            def step(self, layer_idx, keys):
                if layer_idx % self.n_reuse == 0:
                    self.kept = self.rank(keys)
                return keys[..., self.kept, :]
        '''))
    config = load_config(tmp_path / "kvaudit.toml")
    [press] = run_check([str(tmp_path / "mine.py")], CheckOptions(press_bases=tuple(config.press_bases))).presses
    assert press.verdicts == {LAYER_INDEX_REUSE: "implemented"}
    assert run_check([str(tmp_path / "mine.py")]).presses == []  # not a press without the entry
