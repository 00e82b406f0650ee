"""Configuration: [tool.kvaudit] in pyproject.toml or kvaudit.toml; discovery; strict validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kvaudit.config import Config, ConfigError, discover, find_config, load_config, path_matches
from helpers import STATIC_PRESSES, run_cli

NO_REUSE = '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVNoReuse(BasePress):
    """ChunkKV: https://arxiv.org/abs/2502.00299"""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
'''

UNCITED = '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class PlainPress(BasePress):
    """Cites no paper."""

    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder, the working directory, with presses in src/ and legacy/."""
    (tmp_path / "src").mkdir()
    (tmp_path / "legacy").mkdir()
    (tmp_path / "src" / "chunk.py").write_text(NO_REUSE, encoding="utf-8")
    (tmp_path / "legacy" / "chunk_old.py").write_text(NO_REUSE, encoding="utf-8")
    (tmp_path / "src" / "plain.py").write_text(UNCITED, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rules_fired(*args: str) -> set[tuple[str, str]]:
    result = run_cli("check", *args, "-f", "json")
    assert result.exception is None and result.exit_code in (0, 1), (result.exit_code, result.stderr)
    return {(p["path"], f["rule"]) for p in result.json()["presses"] for f in p["findings"]}


def test_without_config_every_rule_runs(project: Path) -> None:
    assert rules_fired("src", "legacy") == {("src/chunk.py", "KVA101"), ("legacy/chunk_old.py", "KVA101")}


def test_select_and_ignore(project: Path) -> None:
    write(project / "kvaudit.toml", 'select = ["KVA2"]\n')
    assert rules_fired("src") == set()
    write(project / "kvaudit.toml", 'ignore = ["KVA101"]\n')
    assert rules_fired("src") == set()
    write(project / "kvaudit.toml", 'select = ["kva1"]\nignore = ["KVA102"]\n')  # prefixes, any case
    assert rules_fired("src") == {("src/chunk.py", "KVA101")}


def test_fail_on(project: Path) -> None:
    assert run_cli("check", "src").exit_code == 1
    write(project / "kvaudit.toml", 'fail-on = "never"\n')
    assert run_cli("check", "src").exit_code == 0
    assert run_cli("check", "src", "--fail-on", "error").exit_code == 1  # the flag wins


def test_cli_flags_override_the_file(project: Path) -> None:
    write(project / "kvaudit.toml", 'select = ["KVA2"]\n')
    assert rules_fired("src", "--select", "KVA101") == {("src/chunk.py", "KVA101")}
    write(project / "kvaudit.toml", 'ignore = ["KVA101"]\n')
    assert rules_fired("src", "--ignore", "KVA203") == {("src/chunk.py", "KVA101")}
    assert rules_fired("src", "--no-config") == {("src/chunk.py", "KVA101")}


def test_per_path_ignores(project: Path) -> None:
    write(project / "kvaudit.toml", """
        [per-path-ignores]
        "legacy/**" = ["KVA101"]
    """)
    assert rules_fired("src", "legacy") == {("src/chunk.py", "KVA101")}
    write(project / "kvaudit.toml", 'per-path-ignores = { "chunk.py" = ["KVA1"] }\n')  # no '/': a file name anywhere
    assert rules_fired("src", "legacy") == {("legacy/chunk_old.py", "KVA101")}


def test_globs_are_relative_to_the_config_folder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "kvaudit.toml", 'per-path-ignores = { "src/*.py" = ["KVA101"] }\n')
    monkeypatch.chdir(project / "src")  # the file is found from a subfolder
    assert rules_fired(".") == set()
    root = project.resolve()
    assert path_matches("src/*.py", "chunk.py", root)
    assert not path_matches("src/*.py", "chunk.py", root / "elsewhere")
    assert path_matches("**/chunk.py", "chunk.py", root)
    assert not path_matches("*.py", "sub/chunk_old.txt", root)
    assert path_matches("src/", "chunk.py", root)


def test_claim_overrides_add_and_drop(project: Path) -> None:
    write(project / "kvaudit.toml", """
        [[claim-overrides]]
        path = "src/plain.py"
        add = ["layer-index-reuse"]

        [[claim-overrides]]
        class = "ChunkKV*"
        path = "legacy/**"
        drop = ["layer-index-reuse"]
    """)
    result = run_cli("check", "src", "legacy", "-f", "json")
    presses = {p["path"]: p for p in result.json()["presses"]}
    plain = presses["src/plain.py"]
    assert [c["id"] for c in plain["claims"]] == ["layer-index-reuse"]
    assert "claim-overrides" in plain["claims"][0]["source"]
    assert plain["verdicts"] == {"layer-index-reuse": "missing"}
    assert [f["rule"] for f in plain["findings"]] == ["KVA101"]
    # ChunkKV's other claims stay; the reuse claim, its verdict and its findings are gone.
    legacy = presses["legacy/chunk_old.py"]
    assert [c["id"] for c in legacy["claims"]] == ["chunk-selection", "layer-similarity", "observation-window",
                                                    "reuse-quality"]
    assert legacy["verdicts"] == {} and legacy["findings"] == []
    assert [f["rule"] for f in presses["src/chunk.py"]["findings"]] == ["KVA101"]  # not matched: unchanged


def test_pyproject_table(project: Path) -> None:
    write(project / "pyproject.toml", """
        [project]
        name = "demo"

        [tool.kvaudit]
        ignore = ["KVA101"]

        [[tool.kvaudit.claim-overrides]]
        class = "PlainPress"
        add = ["layer-index-reuse"]
    """)
    assert rules_fired("src") == set()
    assert find_config(project) == project / "pyproject.toml"


def test_discovery(project: Path, tmp_path: Path) -> None:
    nested = project / "a" / "b"
    nested.mkdir(parents=True)
    assert find_config(nested) is None
    write(project / "pyproject.toml", '[project]\nname = "x"\n')  # no [tool.kvaudit]: not a config
    assert find_config(nested) is None
    write(project / "a" / "pyproject.toml", '[tool.kvaudit]\nfail-on = "info"\n')
    assert find_config(nested) == project / "a" / "pyproject.toml"
    write(project / "a" / "kvaudit.toml", 'fail-on = "warning"\n')
    assert find_config(nested) == project / "a" / "kvaudit.toml"  # kvaudit.toml first in a folder
    write(nested / "pyproject.toml", '[tool.kvaudit]\nfail-on = "never"\n')
    assert discover(start=nested).fail_on == "never"  # the nearest folder wins
    assert discover(project / "a" / "kvaudit.toml").fail_on == "warning"  # --config
    assert discover(start=project) == Config()


def test_config_option(project: Path) -> None:
    write(project / "legacy" / "kvaudit.toml", 'ignore = ["KVA101"]\n')
    assert rules_fired("src") == {("src/chunk.py", "KVA101")}  # not on the path up from the cwd
    assert rules_fired("src", "--config", "legacy/kvaudit.toml") == set()


BAD = [
    ("kvaudit.toml", 'selct = ["KVA101"]\n', "selct"),
    ("kvaudit.toml", 'select = "KVA101"\n', "select"),
    ("kvaudit.toml", 'select = ["KVA999"]\n', "select"),
    ("kvaudit.toml", 'ignore = [101]\n', "ignore"),
    ("kvaudit.toml", 'fail-on = "sometimes"\n', "fail-on"),
    ("kvaudit.toml", 'fail-on = 1\n', "fail-on"),
    ("kvaudit.toml", 'per-path-ignores = ["KVA101"]\n', "per-path-ignores"),
    ("kvaudit.toml", 'per-path-ignores = { "x/*" = ["NOPE1"] }\n', 'per-path-ignores."x/*"'),
    ("kvaudit.toml", '[[claim-overrides]]\nclass = "X"\nadd = ["telepathy"]\n', "claim-overrides[0].add"),
    ("kvaudit.toml", '[[claim-overrides]]\nclass = "X"\n', "claim-overrides[0]"),
    ("kvaudit.toml", '[[claim-overrides]]\nadd = ["layer-index-reuse"]\n', "claim-overrides[0]"),
    ("kvaudit.toml", '[[claim-overrides]]\nclass = "X"\nadd = ["layer-index-reuse"]\nwhen = 1\n', "claim-overrides[0].when"),
    ("kvaudit.toml", '[[claim-overrides]]\nclass = 3\ndrop = ["layer-index-reuse"]\n', "claim-overrides[0].class"),
    ("kvaudit.toml", 'claim-overrides = { class = "X" }\n', "claim-overrides"),
    ("pyproject.toml", '[tool.kvaudit]\nignores = ["KVA101"]\n', "tool.kvaudit.ignores"),
    ("pyproject.toml", '[tool.kvaudit]\nfail-on = "high"\n', "tool.kvaudit.fail-on"),
]


@pytest.mark.parametrize(("name", "text", "key"), BAD, ids=[f"{n}:{k}" for n, _, k in BAD])
def test_bad_config_is_exit_2_naming_file_and_key(project: Path, name: str, text: str, key: str) -> None:
    write(project / name, text)
    result = run_cli("check", "src")
    assert result.exception is None
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {name}: ") and key in line, line
    with pytest.raises(ConfigError) as raised:
        load_config(project / name)
    assert key in str(raised.value)


def test_broken_toml_and_missing_config_are_exit_2(project: Path) -> None:
    write(project / "kvaudit.toml", "select = [\n")
    result = run_cli("check", "src")
    assert result.exit_code == 2 and "kvaudit.toml: invalid TOML" in result.stderr
    result = run_cli("check", "src", "--config", "nowhere.toml", "--no-config")
    assert result.exit_code == 1  # --no-config wins
    result = run_cli("check", "src", "--config", "nowhere.toml")
    assert result.exit_code == 2 and "nowhere.toml: configuration file not found" in result.stderr


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[1] / "docs" / "ci.md").read_text(encoding="utf-8")
    block = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path / "pyproject.toml", block))
    assert config.select == ["KVA1", "KVA2"] and config.ignore == ["KVA203"] and config.fail_on == "warning"
    assert config.per_path_ignores == {"tests/**": ["KVA201"], "legacy_*.py": ["KVA1"]}
    assert [(o.cls, o.add, o.drop) for o in config.claim_overrides] == [
        ("*ReusePress", ("layer-index-reuse",), ()), ("ExperimentalChunkPress", (), ("layer-index-reuse",))]


def test_broken_pyproject_with_our_table_is_reported_not_skipped(tmp_path, monkeypatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.kvaudit\nfail-on = "never"\n')
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", str(STATIC_PRESSES / "decoy_logs_layer.py"))
    assert result.exit_code == 2 and "pyproject.toml: invalid TOML" in result.stderr
