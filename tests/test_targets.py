"""Target expansion and module resolution (without importing anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kvaudit.targets import expand_targets, resolve_module, split_class_selector


def test_module_resolves_to_installed_source_without_import() -> None:
    code = (
        "import sys\nfrom kvaudit.targets import resolve_module\n"
        "path = resolve_module('kvpress.presses.chunkkv_press')\n"
        "assert path.name == 'chunkkv_press.py' and path.parent.name == 'presses', path\n"
        "print('kvpress' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"


def test_unknown_modules_resolve_to_nothing() -> None:
    assert resolve_module("kvpress.presses.no_such_press") is None
    assert resolve_module("no_such_top_level_pkg") is None


def test_directories_are_searched_recursively_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.py").write_text("")
    (tmp_path / "a.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.py").write_text("")
    files, errors = expand_targets([str(tmp_path), str(tmp_path / "a.py")])
    assert errors == []
    assert files == [tmp_path / "a.py", tmp_path / "b" / "z.py"]


def test_class_selector() -> None:
    assert split_class_selector("pkg.mod::Press") == ("pkg.mod", "Press")
    assert split_class_selector("path/to/file.py") == ("path/to/file.py", None)


def test_package_name_expands_to_its_modules() -> None:
    files, errors = expand_targets(["kvpress.presses"])
    assert errors == []
    names = {path.name for path in files}
    assert {"__init__.py", "chunkkv_press.py", "snapkv_press.py"} <= names and len(names) >= 46
