"""Hostile input on the static path (issue 9 §2): FIFOs, devices, symlink loops, huge files, bad
configuration files. Each one is a one-line error of that path (exit 2) or a silent skip, never
a hang or a traceback, and the other files are still audited.

Runs that would hang on a kvaudit without these guards go through a subprocess with a
generous timeout (a hang guard, not a timing assertion).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvaudit.config import ConfigError, load_config
from helpers import STATIC_PRESSES, run_cli

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text(encoding="utf-8")  # Alg2ModuloPress, no finding
KVAUDIT = str(Path(sys.executable).with_name("kvaudit"))
HANG_GUARD_S = 60


def kvaudit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script; a hang fails the test through TimeoutExpired."""
    return subprocess.run([KVAUDIT, *args], capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=cwd)


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
def test_a_fifo_named_x_py_in_a_walked_folder_is_skipped_unopened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.py")  # opening it for reading would block until a writer comes
    (tmp_path / "good.py").write_text(GOOD)
    done = kvaudit("check", str(tmp_path), "-f", "json")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [p["name"] for p in payload["presses"]] == ["Alg2ModuloPress"]
    assert not any(f["path"].endswith("x.py") for f in payload["files"])


@needs_fifo
def test_a_fifo_named_on_the_command_line_is_refused_unopened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "good.py").write_text(GOOD)
    done = kvaudit("check", str(tmp_path / "pipe.py"), str(tmp_path / "good.py"), "-f", "concise")
    no_traceback(done)
    assert done.returncode == 2
    assert f"error: {tmp_path / 'pipe.py'}: not a regular file (FIFO)" in done.stderr.splitlines()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_check_dev_zero_is_refused_without_reading() -> None:
    done = kvaudit("check", "/dev/zero")
    no_traceback(done)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: /dev/zero: not a regular file (character device)"]


def test_two_py_files_symlinked_to_each_other_are_errors_of_those_paths_only(tmp_path: Path) -> None:
    (tmp_path / "a.py").symlink_to(tmp_path / "b.py")
    (tmp_path / "b.py").symlink_to(tmp_path / "a.py")
    (tmp_path / "good.py").write_text(GOOD)
    for targets in ([str(tmp_path)], [str(tmp_path / "a.py"), str(tmp_path / "good.py")]):
        result = run_cli("check", *targets, "-f", "json")
        assert result.exception is None and result.exit_code == 2
        errors = {Path(f["path"]).name: f["message"] for f in result.json()["files"] if f["status"] == "error"}
        assert errors and all("symbolic link loop" in message for message in errors.values()), errors
        assert set(errors) <= {"a.py", "b.py"}
        assert [p["name"] for p in result.json()["presses"]] == ["Alg2ModuloPress"]


def test_a_folder_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "good.py").write_text(GOOD)
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path / "pkg")  # pkg/loop/loop/loop/... for ever
    (tmp_path / "pkg" / "self").symlink_to(tmp_path / "pkg" / "self")  # ELOOP on stat
    result = run_cli("check", str(tmp_path / "pkg"), "-f", "json")
    assert result.exception is None and result.exit_code == 0, result.stderr
    assert [f["path"] for f in result.json()["files"]] == [str(tmp_path / "pkg" / "good.py")]
    named = run_cli("check", str(tmp_path / "pkg" / "self"), "-f", "json")
    assert named.exit_code == 2 and "symbolic link loop" in named.json()["files"][0]["message"]


def test_a_file_over_the_size_cap_is_one_error_and_never_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.py"
    with huge.open("wb") as handle:  # sparse: 17 MiB on paper, nothing on disk; refused from its size
        handle.truncate(17 * 1024 * 1024)
    (tmp_path / "good.py").write_text(GOOD)
    result = run_cli("check", str(tmp_path), "-f", "json")
    assert result.exception is None and result.exit_code == 2
    [bad] = [f for f in result.json()["files"] if f["status"] == "error"]
    assert bad["path"].endswith("huge.py") and "too large (17 MiB; the size cap is 16 MiB" in bad["message"]
    assert [p["name"] for p in result.json()["presses"]] == ["Alg2ModuloPress"]


def test_the_size_cap_is_set_by_flag_or_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.py").write_text(GOOD)  # 848 bytes
    assert run_cli("check", "good.py").exit_code == 0
    small = run_cli("check", "good.py", "--max-file-size", "512", "-f", "json")
    assert small.exit_code == 2 and "the size cap is 512 bytes" in small.json()["files"][0]["message"]
    (tmp_path / "kvaudit.toml").write_text("max-file-size = 100\n")
    assert run_cli("check", "good.py").exit_code == 2
    assert run_cli("check", "good.py", "--max-file-size", "0").exit_code == 0  # 0: no cap; the flag wins
    bad = run_cli("check", "good.py", "--max-file-size", "lots")
    assert bad.exit_code == 2 and "--max-file-size: must be a size" in bad.stderr


@needs_fifo
def test_config_pointing_at_a_fifo_is_a_config_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "kvaudit.toml")
    done = kvaudit("check", str(STATIC_PRESSES / "alg2_modulo.py"), "--config", str(tmp_path / "kvaudit.toml"))
    no_traceback(done)
    assert done.returncode == 2
    assert "cannot read configuration: not a regular file (FIFO)" in done.stderr
    # found by discovery from the working directory: not a config file, never opened
    discovered = kvaudit("check", str(STATIC_PRESSES / "alg2_modulo.py"), cwd=tmp_path)
    assert discovered.returncode == 0, discovered.stderr


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kvaudit.toml"
    path.write_text("select = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
    result = run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"), "--config", str(path))
    assert result.exit_code == 2 and result.exception is None
    (tmp_path / "pyproject.toml").write_text("[tool.kvaudit]\nselect = " + "[" * 100_000 + "\n")
    assert "invalid TOML" in run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"), "--config",
                                     str(tmp_path / "pyproject.toml")).stderr


@pytest.mark.parametrize("text", [
    'select = ["' + "K" * 10_000 + '"]\n',
    'fail-on = "' + "x" * 10_000 + '"\n',
    '"' + "k" * 10_000 + '" = 1\n',
    'per-path-ignores = { "' + "[z-a]" * 2_000 + '" = ["KVA101"] }\n',
])
def test_values_echoed_in_config_errors_are_cut(tmp_path: Path, text: str) -> None:
    (tmp_path / "kvaudit.toml").write_text(text)
    result = run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"), "--config", str(tmp_path / "kvaudit.toml"))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and len(line) < 300 + len(str(tmp_path)), line


def test_a_bad_glob_is_a_config_error_when_loaded(tmp_path: Path) -> None:
    (tmp_path / "kvaudit.toml").write_text('per-path-ignores = { "[z-a].py" = ["KVA101"] }\n')
    with pytest.raises(ConfigError, match=r'per-path-ignores\."\[z-a\]\.py".*invalid glob'):
        load_config(tmp_path / "kvaudit.toml")
    result = run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"), "--config", str(tmp_path / "kvaudit.toml"))
    assert result.exit_code == 2 and result.exception is None and "invalid glob" in result.stderr
    for key, value in (("exclude", '["[z-a]"]'), ("extend-exclude", '["ok", "[z-a]"]')):
        (tmp_path / "kvaudit.toml").write_text(f"{key} = {value}\n")
        with pytest.raises(ConfigError, match=f"{key}: invalid glob"):
            load_config(tmp_path / "kvaudit.toml")
    (tmp_path / "kvaudit.toml").write_text('extend-exclude = ["!keep.py"]\n')
    with pytest.raises(ConfigError, match="re-include"):
        load_config(tmp_path / "kvaudit.toml")
    (tmp_path / "kvaudit.toml").write_text('[[claim-overrides]]\npath = "[z-a]"\nadd = ["layer-index-reuse"]\n')
    with pytest.raises(ConfigError, match=r"claim-overrides\[0\]\.path: invalid glob"):
        load_config(tmp_path / "kvaudit.toml")


def test_a_glob_that_backtracks_exponentially_in_re_finishes(tmp_path: Path) -> None:
    """`*a*a*…*b` against a long name of a's: exponential in a backtracking regex engine."""
    glob = "*a" * 30 + "*b"
    (tmp_path / "kvaudit.toml").write_text(f'per-path-ignores = {{ "{glob}" = ["KVA101"] }}\n'
                                           f'extend-exclude = ["{glob}"]\n')
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / ("a" * 200 + ".py")).write_text(GOOD)
    done = kvaudit("check", str(folder), "-f", "json", cwd=tmp_path)
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)["presses"]] == ["Alg2ModuloPress"]
