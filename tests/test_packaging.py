"""A plain (non-editable) install works, with rules/ shipped inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import STATIC_PRESSES

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_rules_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    [wheel] = tmp_path.glob("kvaudit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rules/papers.toml" in names and "rules/kva101_reuse_missing.py" in names
    assert "audit/cli/check.py" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    # Run from an unrelated folder so that nothing can come from the checkout.
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import audit, rules; print(audit.__file__); print(rules.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.split())
    done = subprocess.run([sys.executable, "-m", "audit", "check", str(STATIC_PRESSES / "alg2_modulo.py"), "-f", "json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"implemented"' in done.stdout
