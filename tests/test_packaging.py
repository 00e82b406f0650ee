"""The wheel installs one top-level name, ``kvaudit``, and lives beside a package that owns ``rules``.

PyPI's ``rules`` (django-rules) installs ``site-packages/rules/``; kvaudit's rule files used to
install there too. The test builds kvaudit's wheel, installs it into a fresh virtual environment
next to a stand-in ``rules`` package, and runs ``kvaudit check`` there. kvaudit's own dependencies
(typer, libcst, rich) come from the test environment through a ``.pth`` file placed after the
fresh venv's own site-packages, so nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import STATIC_PRESSES

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _build_wheel(project: Path, folder: Path) -> Path:
    """Build ``project``'s wheel with this environment's setuptools (no download)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(project)],
        check=True, capture_output=True, text=True,
    )
    [wheel] = folder.glob("*.whl")
    return wheel


def _stand_in_rules_package(folder: Path) -> Path:
    """A minimal distribution that owns the top-level import name ``rules``, as django-rules does."""
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "__init__.py").write_text("OWNER = 'django-rules stand-in'\n")
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "rules"\nversion = "3.5"\n[tool.setuptools]\npackages = ["rules"]\n'
    )
    return folder


def _top_level_names(wheel: Path) -> set[str]:
    return {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}


def test_wheel_installs_only_kvaudit_beside_a_rules_package(tmp_path: Path) -> None:
    wheel = _build_wheel(ROOT, tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert _top_level_names(wheel) == {"kvaudit", "kvaudit-0.1.0.dist-info"}
    assert "kvaudit/rules/papers.toml" in names and "kvaudit/rules/kva101_reuse_missing.py" in names
    assert "kvaudit/cli/check.py" in names
    # The tiny trained model travels as package data (kvaudit.trained), every file its checksums list.
    model = "kvaudit/trained/tiny-trained/"
    listed = (ROOT / "audit" / "trained" / "tiny-trained" / "SHA256SUMS").read_text().splitlines()
    assert {model + line.partition("  ")[2] for line in listed} | {model + "SHA256SUMS"} <= set(names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # this environment's pip installs into it (--python)
    python = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    # kvaudit's dependencies, from this environment, after the fresh venv's own packages.
    (fresh_site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    rules_wheel = _build_wheel(_stand_in_rules_package(tmp_path / "rules-src"), tmp_path / "rules-dist")
    def install(requirement: Path) -> set[str]:
        """The top-level names ``requirement`` adds to the fresh site-packages."""
        before = {p.name for p in fresh_site.iterdir()}
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(requirement)],
                       check=True, capture_output=True, text=True)
        return {p.name for p in fresh_site.iterdir()} - before

    assert install(rules_wheel) == {"rules", "rules-3.5.dist-info"}
    assert install(wheel) == {"kvaudit", "kvaudit-0.1.0.dist-info"}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import kvaudit, rules; print(kvaudit.__file__); print(rules.OWNER)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    kvaudit_file, owner = where.stdout.splitlines()
    assert kvaudit_file.startswith(str(fresh_site)) and owner == "django-rules stand-in"

    for command in ([str(env_dir / "bin" / "kvaudit")], [str(python), "-m", "kvaudit"]):
        done = subprocess.run([*command, "check", str(STATIC_PRESSES / "alg2_modulo.py"), "-f", "json"],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert '"implemented"' in done.stdout
