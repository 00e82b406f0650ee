"""The on-disk cache: a re-run on an unchanged tree gives the same output without analysing
anything, any change is seen, and a bad cache is ignored, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import STATIC_PRESSES, run_cli

from kvaudit import engine

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KVAUDIT_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # where the signing secret lives
    monkeypatch.chdir(tmp_path)
    shutil.copytree(STATIC_PRESSES, tmp_path / "presses")
    return tmp_path / "cache"


@pytest.fixture
def no_analysis(monkeypatch: pytest.MonkeyPatch):
    """After this, any analysis fails loudly: only a cache hit can produce a result."""

    def fail(*args, **kwargs):
        raise AssertionError("analysed again")

    def forbid() -> None:
        monkeypatch.setattr(engine, "audit_files", fail)

    return forbid


def _check(cache: Path, *args: str):
    return run_cli("check", "presses", "--cache-dir", str(cache), *args)


@pytest.mark.parametrize("output", ["json", "terminal", "sarif"])
def test_rerun_is_served_from_the_cache_and_is_identical(cache: Path, no_analysis, output: str) -> None:
    first = _check(cache, "-f", output)
    no_analysis()
    second = _check(cache, "-f", output)
    assert second.exception is None
    assert (second.exit_code, second.stdout) == (first.exit_code, first.stdout)
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_options_are_part_of_the_key(cache: Path, no_analysis) -> None:
    _check(cache, "-f", "json")
    no_analysis()
    assert _check(cache, "-f", "json", "--jobs", "1", "--debug").exit_code == 1  # how to run is not in the key
    missed = _check(cache, "-f", "json", "--ignore", "KVA101")
    assert missed.exit_code == 2 and "analysed again" in missed.stderr  # what to find is


def test_a_changed_file_is_seen(cache: Path, tmp_path: Path) -> None:
    before = _check(cache, "-f", "json").json()
    target = tmp_path / "presses" / "alg2_modulo.py"
    target.write_text(target.read_text().replace("if module.layer_idx % self.n_reuse == 0:", "if True:"))
    after = _check(cache, "-f", "json").json()
    verdict = {p["name"]: p["verdicts"] for p in after["presses"]}["Alg2ModuloPress"]
    assert verdict != {p["name"]: p["verdicts"] for p in before["presses"]}["Alg2ModuloPress"]


def test_a_base_outside_the_targets_and_a_module_that_appears_are_seen(cache: Path, tmp_path: Path) -> None:
    # Only press.py is a target; its base is read from beside it; `late` does not exist yet.
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "base.py").write_text(GOOD.replace("Alg2ModuloPress", "Base"))
    (tmp_path / "proj" / "press.py").write_text(
        '"""ChunkKV (arXiv 2502.00299)."""\nfrom base import Base\nfrom late import Late\n\n\n'
        "class Child(Base):\n    pass\n\n\nclass Later(Late):\n    pass\n")
    target = str(tmp_path / "proj" / "press.py")

    def presses() -> dict:
        payload = run_cli("check", target, "--cache-dir", str(cache), "-f", "json").json()
        return {p["name"]: p["verdicts"]["layer-index-reuse"] for p in payload["presses"]}

    assert presses() == {"Child": "implemented"}
    (tmp_path / "proj" / "base.py").write_text(GOOD.replace("Alg2ModuloPress", "Base").replace(
        "if module.layer_idx % self.n_reuse == 0:", "if True:"))
    assert presses()["Child"] != "implemented"
    (tmp_path / "proj" / "late.py").write_text(GOOD.replace("Alg2ModuloPress", "Late"))
    assert set(presses()) == {"Child", "Later"}


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/runs/*.json")) + sorted(cache.glob("*/scans.json"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "unsigned", "resigned"])
def test_a_damaged_or_forged_cache_is_ignored(cache: Path, tmp_path: Path, damage: str) -> None:
    first = _check(cache, "-f", "json")
    entries = _entries(cache)
    assert entries
    for entry in entries:
        raw = entry.read_bytes()
        mac, _, body = raw.partition(b"\n")
        forged = body.replace(b'"implemented"', b'"missing"').replace(b"Alg2ModuloPress", b"ForgedPress")
        entry.write_bytes({"garbage": b"\x00\xff not json", "truncated": raw[: len(raw) // 2],
                           "unsigned": forged, "resigned": mac + b"\n" + forged}[damage])
    if damage == "resigned":  # a cache made elsewhere (say, committed to the repository): another secret
        secret = tmp_path / "user-cache" / "kvaudit" / "cache.key"
        secret.write_bytes(os.urandom(32))
    second = _check(cache, "-f", "json")
    assert second.exception is None
    assert (second.exit_code, second.stdout) == (first.exit_code, first.stdout)
    assert "ForgedPress" not in second.stdout


def test_an_unusable_cache_folder_costs_nothing(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = _check(tmp_path / "a-file" / "cache", "-f", "json")  # cannot be created
    assert result.exception is None and result.exit_code == 1 and result.json()["presses"]
    assert result.stderr == ""


def test_no_cache_writes_nothing(cache: Path) -> None:
    result = _check(cache, "-f", "json", "--no-cache")
    assert result.exit_code == 1 and not cache.exists()


def test_default_cache_folder_is_in_the_project_root(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "kvaudit.toml").write_text("")
    run_cli("check", "presses")
    assert (tmp_path / ".kvaudit_cache" / ".gitignore").exists()


@pytest.mark.slow
def test_concurrent_runs_share_the_cache_safely(cache: Path, tmp_path: Path) -> None:
    env = {**os.environ}
    command = [sys.executable, "-m", "kvaudit", "check", "presses", "--cache-dir", str(cache), "-f", "json"]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert {run.returncode for run in runs} == {1}
    assert len({out for out, _ in outputs}) == 1 and all(err == b"" for _, err in outputs)
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert again.returncode == 1 and again.stdout == outputs[0][0]
    assert not list(cache.glob("*/.tmp-*")) and not list(cache.glob("*/runs/.tmp-*"))
