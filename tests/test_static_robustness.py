"""Issue 9, static engine: the crafted inputs that crashed or ran away, and internal errors.

Each of these failed on the code before issue 9 (a traceback, exit 1 on a crash, or whole-file
libcst parsing); the large inputs are generated here, never committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import STATIC_PRESSES, TESTS, run_cli

sys.path.insert(0, str(TESTS.parent / "benchmarks"))
import crafted  # noqa: E402

from kvaudit import engine  # noqa: E402
from kvaudit.analysis.flow import MAX_DEPTH  # noqa: E402
from kvaudit.rules.kva003_analysis_limit import AnalysisLimit  # noqa: E402
from kvaudit.source import SourceFile  # noqa: E402
from kvaudit.targets import expand_targets, find_module, resolve_module  # noqa: E402

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text()


def _namespace_tree(root: Path) -> Path:
    """``pkg`` (a regular package) holding ``sub``, a folder without ``__init__.py``, with a press base."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "base.py").write_text(GOOD.replace("Alg2ModuloPress", "SharedBase"))
    (root / "pkg" / "mod.py").write_text(
        '"""ChunkKV (arXiv 2502.00299)."""\nfrom pkg.sub.base import SharedBase\n\n\nclass Child(SharedBase):\n    pass\n')
    return root / "pkg"


def test_base_in_a_namespace_folder_inside_a_package_is_resolved(tmp_path: Path) -> None:
    # Before: KeyError in targets.resolve_module (PathFinder looked the parent up in sys.modules).
    package = _namespace_tree(tmp_path)
    result = run_cli("check", str(package / "mod.py"), "-f", "json")
    assert result.exception is None, result.exception
    assert result.exit_code == 0, result.stdout
    [press] = result.json()["presses"]
    assert press["name"] == "Child" and press["verdicts"] == {"layer-index-reuse": "implemented"}


def test_module_resolution_never_raises_and_reports_namespace_packages(tmp_path: Path) -> None:
    _namespace_tree(tmp_path)
    roots = [str(tmp_path)]
    assert resolve_module("pkg.sub.base", roots) == tmp_path / "pkg" / "sub" / "base.py"
    location = find_module("pkg.sub", roots)
    assert location is not None and location.is_namespace and location.folders == (tmp_path / "pkg" / "sub",)
    assert resolve_module("pkg.sub", roots) is None  # no source file: a namespace package
    for odd in ("", ".", "pkg..sub", "pkg.sub.", "pkg.sub.base.nothing", "1pkg", "pkg.mod\x00"):
        assert resolve_module(odd, roots) is None


def test_namespace_package_target_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nspkg").mkdir()
    (tmp_path / "nspkg" / "press.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    files, errors = expand_targets(["nspkg"])
    assert errors == [] and files == [(tmp_path / "nspkg" / "press.py").resolve()]


@pytest.mark.slow
def test_thousand_deep_chain_of_presses(tmp_path: Path) -> None:
    # Before: RecursionError in index.is_press, shown as a traceback with exit 1.
    (tmp_path / "chain.py").write_text(crafted.press_chain(1000, bodies=False))
    result = run_cli("check", str(tmp_path / "chain.py"), "-f", "json")
    assert result.exception is None, result.exception
    assert result.exit_code in (0, 1)
    presses = result.json()["presses"]
    assert len(presses) == 1000
    assert {p["verdicts"]["layer-index-reuse"] for p in presses} == {"implemented"}


def test_an_expression_too_deep_for_libcst_positions_costs_its_file_only(tmp_path: Path) -> None:
    # CPython and libcst parse a 500-term conditional chain, but libcst's position pass recurses
    # past the limit and then fails with a KeyError whose text itself recurses: once an internal
    # error that ended the whole run.
    chain = " if c else ".join(["module.layer_idx"] * 500)
    deep = GOOD.replace("    def compress(self", f"    def helper(self, module, c):\n        return {chain}\n\n"
                        "    def compress(self", 1).replace("Alg2ModuloPress", "DeepPress")
    (tmp_path / "deep.py").write_text(deep)
    (tmp_path / "good.py").write_text(GOOD)
    result = run_cli("check", str(tmp_path / "deep.py"), str(tmp_path / "good.py"), "-f", "json")
    assert result.exception is None and result.exit_code == 2
    assert "internal error" not in result.stdout + result.stderr
    assert [p["name"] for p in result.json()["presses"]] == ["Alg2ModuloPress"]
    [status] = [f for f in result.json()["files"] if f["path"].endswith("deep.py")]
    assert "DeepPress: too deeply nested to analyse (" in status["message"] and "deep.py, the class at line" in status["message"]


def test_a_call_chain_past_the_depth_limit_is_said(tmp_path: Path) -> None:
    # Each press reaches P0's score() through BasePress.forward_hook and its chain of super()
    # calls: the flow pass follows MAX_DEPTH calls and says so (KVA003) where it stopped short.
    (tmp_path / "chain.py").write_text(crafted.press_chain(MAX_DEPTH + 3))
    presses = {p["name"]: p for p in run_cli("check", str(tmp_path / "chain.py"), "-f", "json").json()["presses"]}
    reach = MAX_DEPTH - 1
    for i in range(reach):
        assert presses[f"P{i}"]["verdicts"] == {"layer-index-reuse": "implemented"}, i
        assert "KVA003" not in {f["rule"] for f in presses[f"P{i}"]["findings"]}
    for i in (reach, MAX_DEPTH + 2):
        [limit] = [f for f in presses[f"P{i}"]["findings"] if f["rule"] == "KVA003"]
        assert f"did not enter `P{i - reach}.compress`" in limit["message"]


def test_the_depth_limit_is_documented_as_it_is() -> None:
    assert f"up to {MAX_DEPTH} calls deep" in " ".join(AnalysisLimit.documentation().split())


def test_chain_through_imported_files_outside_the_targets(tmp_path: Path) -> None:
    # Before: RecursionError while following bases from file to file (only the last file is a target).
    paths = crafted.press_chain_files(tmp_path / "chain", 600)
    result = run_cli("check", str(paths[-1]), "-f", "json")
    assert result.exception is None, result.exception
    [press] = result.json()["presses"]
    assert press["name"] == "P599" and press["verdicts"] == {"layer-index-reuse": "implemented"}


def test_chain_results_do_not_depend_on_the_order_presses_are_audited(tmp_path: Path) -> None:
    # Walks of base methods are shared between the presses of a run: each press must still
    # get what it would get alone.
    (tmp_path / "chain.py").write_text(crafted.press_chain(12))
    together = run_cli("check", str(tmp_path / "chain.py"), "-f", "json").json()["presses"]
    for target in ("P11", "P5"):
        source = crafted.press_chain(int(target[1:]) + 1)
        (tmp_path / f"{target}.py").write_text(source)
        alone = run_cli("check", str(tmp_path / f"{target}.py"), "-f", "json").json()["presses"]
        [mine] = [p for p in alone if p["name"] == target]
        [theirs] = [p for p in together if p["name"] == target]
        assert {k: v for k, v in mine.items() if k != "path"} == {k: v for k, v in theirs.items() if k != "path"}


def test_large_file_is_never_parsed_whole_by_libcst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the whole module went through libcst and its PositionProvider (110 s, 5 GB at 10 MB).
    def whole_module(self: SourceFile):
        raise AssertionError(f"{self.display} was parsed whole with libcst")

    monkeypatch.setattr(SourceFile, "module", property(whole_module))
    source = crafted.large_module(300_000, with_press=True)
    (tmp_path / "big.py").write_text(source)
    result = run_cli("check", str(tmp_path / "big.py"), "-f", "json")
    assert result.exception is None and result.exit_code == 0, result.stdout
    [press] = result.json()["presses"]
    assert press["verdicts"] == {"layer-index-reuse": "implemented"}
    lines = source.splitlines()
    test = 1 + next(i for i, line in enumerate(lines) if "if module.layer_idx" in line)
    assert {e["line"] for e in press["evidence"]} == {test, test + 1}


def test_line_numbers_survive_form_feeds_and_odd_line_ends(tmp_path: Path) -> None:
    # Classes are parsed on their own: their line numbers must stay the file's, whatever the line ends.
    source = "\x0c\n# page break above\r\n" + GOOD.replace("\n", "\r\n")
    (tmp_path / "ff.py").write_bytes(source.encode())
    (tmp_path / "plain.py").write_text("\n\n" + GOOD)
    payload = run_cli("check", str(tmp_path / "ff.py"), str(tmp_path / "plain.py"), "-f", "json").json()
    lines = {Path(p["path"]).name: (p["line"], [e["line"] for e in p["evidence"]]) for p in payload["presses"]}
    assert lines["ff.py"] == lines["plain.py"]


def test_many_suppression_comments(tmp_path: Path) -> None:
    # Before: each comment of a block walked the rest of the block (quadratic); now linear, and the same.
    block = crafted.suppressions(3000, standalone=True)
    (tmp_path / "block.py").write_text(block)
    (tmp_path / "inline.py").write_text(crafted.suppressions(3000, standalone=False))
    result = run_cli("check", str(tmp_path), "-f", "json", "--select", "KVA001", "--select", "KVA101")
    assert result.exception is None and result.exit_code in (0, 1), result.stderr
    unused = [f for f in result.json()["other_findings"] if f["rule"] == "KVA001"]
    assert len(unused) == 6000
    below = len(block.splitlines())  # the code line under the block: every comment of it covers it
    assert all(f"and {below}" in f["message"] for f in unused if f["path"].endswith("block.py"))


# -- internal errors ------------------------------------------------------------------------------
@pytest.fixture
def broken_audit(monkeypatch: pytest.MonkeyPatch):
    """Make kvaudit itself fail on presses named ``Crash*`` (a stand-in for a bug)."""
    real = engine.audit_press

    def audit_press(index, press, options, *rest):
        if press.name.startswith("Crash"):
            raise ValueError("simulated bug")
        return real(index, press, options, *rest)

    monkeypatch.setattr(engine, "audit_press", audit_press)


def _two_files(folder: Path) -> None:
    (folder / "crash.py").write_text(GOOD.replace("Alg2ModuloPress", "CrashPress"))
    (folder / "good.py").write_text(GOOD)


@pytest.mark.parametrize("command", ["check", "report"])
def test_internal_error_is_one_line_exit_2_and_the_rest_is_reported(
        tmp_path: Path, broken_audit, command: str) -> None:
    _two_files(tmp_path)
    extra = ["-o", str(tmp_path / "out" / "r.md"), "--no-trace"] if command == "report" else []
    result = run_cli(command, str(tmp_path / "crash.py"), str(tmp_path / "good.py"), *extra)
    assert result.exception is None
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if "internal error" in line]
    assert "crash.py" in line and "CrashPress" in line and "ValueError: simulated bug" in line and "--debug" in line
    if command == "check":
        payload = run_cli("check", str(tmp_path / "crash.py"), str(tmp_path / "good.py"), "-f", "json").json()
        assert [p["name"] for p in payload["presses"]] == ["Alg2ModuloPress"]
    else:
        assert "Alg2ModuloPress" in (tmp_path / "out" / "r.md").read_text()


def test_debug_shows_the_traceback(tmp_path: Path, broken_audit) -> None:
    _two_files(tmp_path)
    result = run_cli("check", str(tmp_path), "--debug")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr and "simulated bug" in result.stderr


def test_internal_error_outside_any_file_is_exit_2_never_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvaudit.reporters import json_report

    def render_json(result):
        raise KeyError("reporter bug")

    monkeypatch.setattr(json_report, "render_json", render_json)
    (tmp_path / "press.py").write_text(GOOD.replace("if module.layer_idx % self.n_reuse == 0:", "if True:"))
    result = run_cli("check", str(tmp_path / "press.py"), "-f", "json")
    assert result.exception is None and result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "internal error in kvaudit: KeyError" in line and "press.py" in line
    assert "Traceback" not in result.stderr
    assert "Traceback" in run_cli("check", str(tmp_path / "press.py"), "-f", "json", "--debug").stderr


# -- the pool ---------------------------------------------------------------------------------------
@pytest.fixture
def always_parallel(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engine, "_PARALLEL_SCAN_FILES", 1)
    monkeypatch.setattr(engine, "_PARALLEL_AUDIT_BYTES", 1)
    monkeypatch.setattr(engine, "_SCAN_CHUNK_FILES", 2)


@pytest.mark.slow
def test_pool_gives_the_same_result_as_one_process(always_parallel) -> None:
    targets = [str(STATIC_PRESSES), str(TESTS / "presses" / "dynamic")]
    alone = run_cli("check", *targets, "-f", "json", "--jobs", "1")
    pooled = run_cli("check", *targets, "-f", "json", "--jobs", "3")
    assert alone.exit_code == pooled.exit_code == 1
    assert alone.stdout == pooled.stdout


@pytest.mark.slow
def test_a_worker_that_dies_costs_its_file_only(tmp_path: Path, always_parallel,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    real = engine.audit_press

    def audit_press(index, press, options, *rest):
        if press.name.startswith("Crash"):
            os._exit(70)  # like a segfault in a native parser: the worker is gone
        return real(index, press, options, *rest)

    monkeypatch.setattr(engine, "audit_press", audit_press)
    for i in range(4):
        (tmp_path / f"good{i}.py").write_text(GOOD.replace("Alg2ModuloPress", f"Good{i}Press"))
    (tmp_path / "crash.py").write_text(GOOD.replace("Alg2ModuloPress", "CrashPress"))
    result = run_cli("check", str(tmp_path), "-f", "json", "--jobs", "2")
    assert result.exception is None and result.exit_code == 2
    payload = result.json()
    assert sorted(p["name"] for p in payload["presses"]) == [f"Good{i}Press" for i in range(4)]
    [bad] = [f for f in payload["files"] if f["status"] == "error"]
    assert bad["path"].endswith("crash.py") and "analysis process died" in bad["message"]
