"""Walking folders: exclude / extend-exclude / force-exclude, .gitignore (pathspec), the skip list."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pathspec import GitIgnoreSpec

from kvaudit import targets as targets_module
from kvaudit.globs import compile_globs
from kvaudit.targets import DEFAULT_EXCLUDE, SYSTEM_DIRS, WalkSettings, expand_targets, walk_python_files
from helpers import STATIC_PRESSES, run_cli

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text(encoding="utf-8")


def tree(root: Path, *files: str) -> Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("X = 1\n")
    return root


def py_files(result) -> list[str]:
    return sorted(f["path"] for f in result.json()["files"] if f["path"].endswith(".py"))


def names(files: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in files]


def test_default_excludes_skip_venvs_caches_and_builds(tmp_path: Path) -> None:
    tree(tmp_path, "src/a.py", ".venv/lib/x.py", "venv/y.py", "build/lib/z.py", "node_modules/n.py",
         "src/__pycache__/c.py", ".git/hooks/h.py", "deep/site-packages/pkg/s.py")
    files, errors = expand_targets([str(tmp_path)])
    assert errors == [] and names(files, tmp_path) == ["src/a.py"]


def test_excludes_never_apply_to_the_named_root_or_its_parents(tmp_path: Path) -> None:
    # An installed package lies under site-packages (a default exclude): naming it audits it.
    root = tree(tmp_path / "venv" / "lib" / "site-packages" / "pkg", "a.py", "sub/b.py", "__pycache__/c.py")
    files, errors = expand_targets([str(root)])
    assert errors == [] and names(files, root) == ["a.py", "sub/b.py"]


def test_exclude_and_extend_exclude_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, "src/a.py", "src/gen/g.py", "legacy/l.py", "build/b.py", "src/skip_me.py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kvaudit.toml").write_text('extend-exclude = ["src/gen/", "skip_*.py"]\n')
    result = run_cli("check", ".", "-f", "json")
    assert py_files(result) == ["legacy/l.py", "src/a.py"]
    (tmp_path / "kvaudit.toml").write_text('exclude = ["legacy"]\n')  # replaces the defaults: build/ comes back
    result = run_cli("check", ".", "-f", "json")
    assert py_files(result) == ["build/b.py", "src/a.py", "src/gen/g.py", "src/skip_me.py"]
    result = run_cli("check", ".", "-f", "json", "--extend-exclude", "src,build")
    assert py_files(result) == []


def test_a_named_file_is_audited_unless_force_exclude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, "legacy/l.py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kvaudit.toml").write_text('extend-exclude = ["legacy/"]\n')
    assert [f["path"] for f in run_cli("check", "legacy/l.py", "-f", "json").json()["files"]] == ["legacy/l.py"]
    forced = run_cli("check", "legacy/l.py", "--force-exclude", "-f", "json")
    assert forced.exit_code == 0 and forced.json()["files"] == []
    (tmp_path / "kvaudit.toml").write_text('extend-exclude = ["legacy/"]\nforce-exclude = true\n')
    assert run_cli("check", "legacy/l.py", "-f", "json").json()["files"] == []


def test_gitignore_files_are_respected_in_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    tree(tmp_path, "src/a.py", "src/generated.py", "src/keep_generated.py", "out/o.py", "src/sub/local.py",
         "src/sub/other.py")
    (tmp_path / ".gitignore").write_text("# build output\nout/\n*generated.py\n!keep_generated.py\n")
    (tmp_path / "src" / "sub" / ".gitignore").write_text("local.py\n")
    files, errors = expand_targets([str(tmp_path)])
    assert errors == []
    assert names(files, tmp_path) == ["src/a.py", "src/keep_generated.py", "src/sub/other.py"]
    # walking a subfolder still honours the repository's top-level .gitignore
    files, _ = expand_targets([str(tmp_path / "src")])
    assert names(files, tmp_path) == ["src/a.py", "src/keep_generated.py", "src/sub/other.py"]
    files, _ = expand_targets([str(tmp_path)], WalkSettings(respect_gitignore=False))
    assert "out/o.py" in names(files, tmp_path) and "src/generated.py" in names(files, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", ".", "--no-respect-gitignore", "-f", "json")
    assert "out/o.py" in {f["path"] for f in result.json()["files"]}
    # a folder a .gitignore ignores is still audited when named on purpose
    files, _ = expand_targets([str(tmp_path / "out")])
    assert names(files, tmp_path) == ["out/o.py"]


def test_a_hostile_gitignore_is_skipped_not_fatal_and_never_exponential(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    tree(tmp_path, "a.py", "a" * 200 + ".py")
    (tmp_path / ".gitignore").write_text("[z-a]\n" + "*a" * 40 + "*b\n" + "**/a/**/a/**/a/**/b\n\\\n")
    files, errors = expand_targets([str(tmp_path)])
    assert errors == [] and len(files) == 2


def test_a_folder_of_excluded_files_says_so(tmp_path: Path) -> None:
    tree(tmp_path, "build/b.py")
    result = run_cli("check", str(tmp_path / "build" / ".."), "-f", "json")
    assert result.exit_code == 2
    assert "directory holds no Python files (1 excluded or git-ignored)" in result.json()["files"][0]["message"]


def test_walking_root_never_enters_the_pseudo_file_systems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`check /` is bounded by the skip list: /proc, /sys, /dev are never listed (checked without walking /)."""
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path):  # list / for real, every other folder as empty
        listed.append(str(path))
        return real_scandir(path) if str(path) == "/" else real_scandir(tmp_path)

    monkeypatch.setattr(targets_module.os, "scandir", scandir)
    walk_python_files(Path("/"), WalkSettings(exclude=()))
    assert listed[0] == "/" and len(listed) > 1
    assert not set(listed) & SYSTEM_DIRS


def test_default_excludes_are_documented() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in DEFAULT_EXCLUDE)


PATTERNS = ["*.py", "a*b*c.py", "src/**", "**/x.py", "a/**/b/*.py", "build/", "*a*?*b", "[ab]*c*.py", "x/*/y",
            "**/a/**/b", "/top*.py", "a\\*b*c*", "dir/**/", "t*s*t*", "*.p?", "a**b*c", "**/a/**/a/**/b", "a/**"]
NAMES = ["a", "b", "c", "x", "y", "ab", "abc.py", "top1.py", "a*bxc", "tst", "tests", "src", "build", "x.py", "b.py"]


def test_bounded_globs_match_exactly_what_pathspec_matches() -> None:
    """The non-backtracking rewrite changes how globs match, never what they match."""
    rng = random.Random(8)
    paths = set()
    for _ in range(3000):
        path = "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 5)))
        paths.update({path, path + "/"})
    for pattern in PATTERNS:
        reference, ours = GitIgnoreSpec.from_lines([pattern]), compile_globs([pattern])
        differ = [p for p in sorted(paths) if reference.match_file(p) != ours.match_file(p)]
        assert not differ, (pattern, differ[:5])
