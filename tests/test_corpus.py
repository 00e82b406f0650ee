"""kvaudit against real press code nobody here wrote (tests/corpus): kvpress forks, research
repositories, MLX caches, plus hand-written cases for each pattern. The expected verdicts were
reached by reading the code; they are data in the corpus files, not kvaudit's output copied.
benchmarks/bench_corpus.py prints the same measure as correct/total."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from helpers import TESTS, run_cli

_spec = importlib.util.spec_from_file_location("kvaudit_corpus_harness", TESTS / "corpus" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def corpus() -> dict[str, harness.Case]:
    return {f"{c.where}::{c.press}": c for c in harness.corpus_cases()}


@pytest.fixture(scope="module")
def kvpress() -> dict[str, harness.Case]:
    return {c.press: c for c in harness.kvpress_cases()}


def _ids(root: Path) -> list[str]:
    ids = []
    for run in harness.RUNS:
        for path in sorted(run.rglob("*.py")):
            for match in harness._EXPECT.finditer(path.read_text(encoding="utf-8")):
                ids.append(f"{path.relative_to(root).as_posix()}::{match.group(1)}")
    return ids


CORPUS_IDS = _ids(harness.CORPUS)


def test_the_corpus_is_real_and_labelled() -> None:
    files = [p for run in harness.RUNS for p in run.rglob("*.py") if p.name != "__init__.py"]
    third_party = [p for p in files if "handwritten" not in p.parts]
    assert len(third_party) >= 10 and len(CORPUS_IDS) >= 20
    for path in third_party:
        head = path.read_text(encoding="utf-8")[:600]
        assert "Provenance: https://github.com/" in head and "commit " in head and "Licence:" in head, path


@pytest.mark.parametrize("case_id", CORPUS_IDS)
def test_corpus_case(corpus, case_id: str) -> None:
    case = corpus[case_id]
    assert case.ok, f"{case_id}: {'; '.join(case.problems)} (expected {' '.join(case.clauses)})"


@pytest.mark.parametrize("name", sorted(harness.tomllib.loads(
    (harness.CORPUS / "kvpress-0.5.5.toml").read_text(encoding="utf-8"))["expect"]))
def test_kvpress_press_under_forced_claim(kvpress, kvpress_presses_dir, name: str) -> None:
    case = kvpress[name]
    assert case.ok, f"{name}: {'; '.join(case.problems)} (expected {' '.join(case.clauses)})"


def test_no_kvpress_press_implements_reuse_under_forced_claim(kvpress, kvpress_presses_dir) -> None:
    assert kvpress["(every press)"].ok, kvpress["(every press)"].problems


def test_configured_press_base_on_the_cli() -> None:
    """The MLX caches are audited only because the configuration declares their base."""
    mlx = str(harness.CORPUS / "mlx")
    without = run_cli("check", mlx, "--no-config", "-f", "json")
    assert without.json()["presses"] == [] and without.exit_code == 2  # a folder with no presses
    configured = run_cli("check", mlx, "--config", str(harness.CONFIG), "-f", "json")
    assert configured.exception is None, configured.stderr
    verdicts = {p["name"]: p["verdicts"] for p in configured.json()["presses"]}
    assert verdicts == {"ChunkKVCache": {"layer-index-reuse": "implemented"},
                        "SqueezeAttentionCache": {"layer-index-reuse": "missing"}}
