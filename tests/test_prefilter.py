"""The prefilter: only files that may define a press are parsed, and the results stay the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import STATIC_PRESSES, TESTS, run_cli

from kvaudit import engine
from kvaudit.analysis.prefilter import ClassScan, TextScan, press_candidates, scan_text
from kvaudit.engine import CheckOptions, run_check
from kvaudit.reporters.json_report import render_json

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text()


def _both(targets: list[str]) -> tuple[str, str]:
    quick = render_json(run_check(targets, CheckOptions(prefilter=True, jobs=1)))
    full = render_json(run_check(targets, CheckOptions(prefilter=False, jobs=1)))
    return quick, full


def test_same_results_on_kvpress_and_the_test_presses(kvpress_presses_dir: Path) -> None:
    targets = [str(kvpress_presses_dir), str(STATIC_PRESSES), str(TESTS / "presses" / "dynamic"),
               str(TESTS.parent / "audit" / "reference")]
    quick, full = _both(targets)
    assert quick == full
    assert '"name": "ChunkKVPress"' in quick


def _tricky_tree(root: Path) -> Path:
    """Presses reached only through aliases, re-exports, module attributes and odd base lists,
    beside files that hold no press but a mixin whose methods a press inherits."""
    pkg = root / "tricky"
    (pkg / "impl").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .impl.real import RealBase as ExportedBase\n")
    (pkg / "impl" / "__init__.py").write_text("")
    (pkg / "impl" / "real.py").write_text(GOOD.replace("class Alg2ModuloPress(BasePress):", "class RealBase(BasePress):"))
    (pkg / "mixins.py").write_text(
        "class CacheMixin:\n"
        "    def reset(self):\n"
        "        self.indices = None\n"
        "\n\nclass Unrelated(dict):\n    pass\n")
    (pkg / "helpers.py").write_text("def helper():\n    return 1\n")
    (pkg / "aliased.py").write_text(
        '"""ChunkKV (arXiv 2502.00299)."""\n'
        "from tricky import ExportedBase as EB\n"
        "from tricky.mixins import CacheMixin\n\n\n"
        "class ViaAlias(CacheMixin, EB):\n    pass\n")
    (pkg / "dotted.py").write_text(
        '"""ChunkKV (arXiv 2502.00299)."""\n'
        "import tricky.impl.real\nfrom tricky.impl import real as r\n\n\n"
        "class ViaModule(tricky.impl.real.RealBase):\n    pass\n\n\n"
        "class ViaModuleAlias(r.RealBase):\n    pass\n")
    (pkg / "odd_bases.py").write_text(
        '"""ChunkKV (arXiv 2502.00299)."""\n'
        "from tricky.impl.real import RealBase\n\n\n"
        "class \\\n    Continued(  # a comment with a ) in it\n"
        "        RealBase,\n        metaclass=type,  # \"quoted\"\n    ):\n    pass\n\n\n"
        "@decorator(\"(\")\nclass Decorated(RealBase): pass\n")
    return pkg


def test_same_results_on_aliases_reexports_and_odd_bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tricky_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    quick, full = _both(["tricky"])
    assert quick == full
    for name in ("ViaAlias", "ViaModule", "ViaModuleAlias", "Continued", "Decorated", "RealBase"):
        assert f'"name": "{name}"' in quick, name


def test_files_that_cannot_hold_a_press_are_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tricky_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    parsed: list[str] = []
    real = engine.load_source

    def load_source(path, *rest):
        parsed.append(Path(path).name)
        return real(path, *rest)

    monkeypatch.setattr(engine, "load_source", load_source)
    result = run_check(["tricky"], CheckOptions(jobs=1))
    assert not result.has_errors, result.files
    assert sorted(parsed) == ["aliased.py", "dotted.py", "odd_bases.py", "real.py"]


def test_a_broken_file_a_press_needs_is_still_reported(tmp_path: Path) -> None:
    # Not parsed up front (it defines no class) but read when a press's base is looked up in it.
    (tmp_path / "bases.py").write_text("from kvpress.presses.base_press import BasePress as Root\nx = (\n")
    (tmp_path / "press.py").write_text("from bases import Root\n\n\nclass P(Root):\n    pass\n")
    result = run_cli("check", str(tmp_path), "-f", "json")
    assert result.exit_code == 2
    errors = {Path(f["path"]).name: f["message"] for f in result.json()["files"] if f["status"] == "error"}
    assert "syntax error at line 2" in errors["bases.py"]


def test_a_named_file_is_always_parsed(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("x = (\n")
    result = run_cli("check", str(tmp_path / "broken.py"), "-f", "json")
    assert result.exit_code == 2 and "syntax error" in result.json()["files"][0]["message"]


# -- the scan itself ---------------------------------------------------------------------------------
def test_scan_reads_class_statements_and_import_aliases() -> None:
    text = (
        "import a.b as ab\nfrom m import (X as Y,\n    Z)\n"
        "class A(B, c.D, metaclass=M):\n    pass\n"
        "    class Nested(E): pass\n"
        "class F:\n    pass\n"
        "x = 'class G(H):'\n"
        "subclass K(L): pass\n"
        "class \\\n  W(V): pass\n"
        "class Ünï(Çø): pass\n"
    )
    scan = scan_text(text)
    assert scan.classes == (
        ClassScan("A", ("B", "c", "D", "metaclass", "M")), ClassScan("Nested", ("E",)), ClassScan("F", ()),
        ClassScan("W", ("V",)), ClassScan("Ünï", ("Çø",)))
    assert set(scan.aliases) == {("b", "ab"), ("X", "Y")}


def test_candidates_follow_names_and_aliases_across_files() -> None:
    scans = {
        "root": TextScan((ClassScan("Mine", ("BasePress",)),), ()),
        "alias": TextScan((), (("Mine", "Theirs"),)),
        "child": TextScan((ClassScan("Child", ("Theirs",)),), ()),
        "grandchild": TextScan((ClassScan("Grand", ("mod", "Child")),), ()),
        "kv": TextScan((ClassScan("Sub", ("SnapKVPress",)),), ()),
        "unreadable": TextScan((ClassScan("Odd", None),), ()),
        "other": TextScan((ClassScan("Model", ("Module",)),), ()),
        "nothing": TextScan((), ()),
    }
    assert press_candidates(scans) == {"root", "child", "grandchild", "kv", "unreadable"}
    assert press_candidates(scans, seeds={"Module"}) == {"root", "child", "grandchild", "kv", "unreadable", "other"}
