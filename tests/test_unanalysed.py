"""Presses kvaudit cannot analyse (issue 15): their base is in no file of the run, nor in kvpress.

Such a class is not audited. kvaudit says so in every format: a ``warning:`` line on stderr per class,
the JSON's ``warnings`` (and the file's message), and the terminal view's summary line. The exit code
does not change (README, "Exit codes"): a warning says the audit is incomplete; a directory in which
no press could be analysed is exit 2, as any directory without presses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REUSE_BASE, run_cli

from kvaudit.targets import resolve_module

# A ChunkKV press whose base lives in a package that is not there.
SUB = '''"""ChunkKV, arXiv 2502.00299."""
from dataclasses import dataclass

from mylib.base import ReuseBase


@dataclass
class Sub(ReuseBase):
    pass
'''
WHY = "its base mylib.base.ReuseBase is not in the run, nor in kvpress"
WARNING = f"warning: sub.py:8: Sub is not analysed: {WHY} (name the base's file or package among the targets, " \
          "or declare it under [[press-bases]] in the configuration)"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sub.py").write_text(SUB)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_terminal_view_gives_the_reason_and_the_summary_counts_it(project: Path) -> None:
    result = run_cli("check", "sub.py")
    assert result.exception is None
    assert result.exit_code == 0  # a warning: the audit is incomplete, no target is broken
    assert result.stderr.splitlines() == [WARNING]
    assert result.stdout.splitlines()[-1] == \
        f"0 press(es) audited: 0 error(s), 0 warning(s), 0 info; 1 class not analysed: {WHY}"


@pytest.mark.parametrize("fmt", ["json", "concise", "sarif", "github"])
def test_every_format_says_it_on_stderr_and_json_in_its_warnings(project: Path, fmt: str) -> None:
    result = run_cli("check", "sub.py", "-f", fmt)
    assert (result.exit_code, result.stderr.splitlines()) == (0, [WARNING])
    if fmt == "json":
        payload = result.json()
        assert payload["warnings"] == [WARNING.removeprefix("warning: ")]
        assert payload["files"] == [{"path": "sub.py", "status": "ok", "message": (
            "sub.py: no press classes; Sub derives from mylib.base.ReuseBase, which is neither in the run nor in "
            "kvpress, so it is not audited")}]


def test_once_the_base_is_in_the_run_the_press_is_analysed_and_nothing_is_said(project: Path) -> None:
    (project / "mylib").mkdir()
    (project / "mylib" / "__init__.py").write_text("")
    (project / "mylib" / "base.py").write_text(REUSE_BASE)
    result = run_cli("check", "sub.py", "-f", "json")
    assert result.exit_code == 0 and "warnings" not in result.json(), result.stdout
    assert [p["name"] for p in result.json()["presses"]] == ["Sub"]


def test_a_directory_where_no_press_could_be_analysed_is_exit_2_and_counts_them(tmp_path: Path) -> None:
    # Found in a walk, a file is parsed when a base may be a press: here its name ends in Press.
    (tmp_path / "sub.py").write_text(SUB.replace("ReuseBase", "ReuseBasePress"))
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"error: {tmp_path}: no press classes found (1 class(es) not analysed: " \
                                            "see the warnings)"
    assert result.stderr.splitlines()[1].startswith(f"warning: {tmp_path}/sub.py:8: Sub is not analysed: its base "
                                                    "mylib.base.ReuseBasePress is not in the run")


def test_beside_analysed_presses_the_summary_counts_both(project: Path) -> None:
    (project / "base.py").write_text(REUSE_BASE)
    (project / "ok.py").write_text(SUB.replace("mylib.base", "base").replace("class Sub", "class Fine"))
    result = run_cli("check", "sub.py", "ok.py", "base.py")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [WARNING]
    assert result.stdout.splitlines()[-1].startswith("2 press(es) audited: ")
    assert result.stdout.splitlines()[-1].endswith(f"; 1 class not analysed: {WHY}")


def test_several_classes_are_counted_in_the_summary(project: Path) -> None:
    (project / "more.py").write_text(SUB.replace("class Sub", "class SubA") + "\n\nclass SubB(ReuseBase):\n    pass\n")
    result = run_cli("check", "sub.py", "more.py")
    assert len(result.stderr.splitlines()) == 3
    assert result.stdout.splitlines()[-1].endswith("; 3 classes not analysed: their bases cannot be read (see the warnings)")


@pytest.mark.parametrize("source", [
    # a model class: torch, transformers and the standard library hold no press base
    '"""ChunkKV, arXiv 2502.00299."""\nimport torch\n\n\nclass ChunkCache(torch.nn.Module):\n    pass\n',
    '"""ChunkKV, arXiv 2502.00299."""\nfrom abc import ABC\n\n\nclass ReusePress(ABC):\n    pass\n',
    # nothing says it is a press: no citation, no Press in its name or its base's
    "from mylib.base import Helper\n\n\nclass Thing(Helper):\n    pass\n",
])
def test_classes_that_do_not_look_like_presses_are_not_reported(tmp_path: Path, source: str) -> None:
    (tmp_path / "other.py").write_text(source)
    result = run_cli("check", str(tmp_path / "other.py"))
    assert (result.exit_code, result.stderr) == (0, "")
    assert "not analysed" not in result.stdout


@pytest.mark.skipif(resolve_module("kvpress") is None, reason="needs kvpress installed")
def test_a_kvpress_name_the_installed_kvpress_lacks(project: Path) -> None:
    (project / "newer.py").write_text("from kvpress import NoSuchPress\n\n\nclass Mine(NoSuchPress):\n    pass\n")
    result = run_cli("check", "newer.py", "-f", "json")
    assert result.exit_code == 0
    assert result.json()["warnings"] == ["newer.py:4: Mine is not analysed: its base kvpress.NoSuchPress is not in the "
                                         "installed kvpress (it may come from another kvpress release)"]
    assert result.json()["files"][0]["message"].endswith(
        "Mine derives from kvpress.NoSuchPress, which the installed kvpress does not have, so it is not audited")


def test_a_cached_run_says_the_same(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvaudit import engine

    monkeypatch.delenv("KVAUDIT_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(project / "user-cache"))
    first = run_cli("check", "sub.py", "--cache-dir", str(project / "cache"))
    monkeypatch.setattr(engine, "audit_files", lambda *args, **kwargs: pytest.fail("analysed again"))
    second = run_cli("check", "sub.py", "--cache-dir", str(project / "cache"))
    assert second.exception is None
    assert (second.exit_code, second.stdout, second.stderr) == (first.exit_code, first.stdout, first.stderr)
    assert WHY in second.stdout
