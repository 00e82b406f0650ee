"""When kvpress's installed source cannot be found or read, say so once, on stderr and in the
JSON (issue 8 §4): a subclass of kvpress's ChunkKVPress otherwise silently loses the findings
of the methods it inherits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import run_cli

SUBCLASS = textwrap.dedent('''
    """A press that only renames kvpress's ChunkKV (arXiv 2502.00299)."""
    from dataclasses import dataclass

    import kvpress


    @dataclass
    class RenamedChunkKV(kvpress.ChunkKVPress):
        pass


    @dataclass
    class AnotherChunkKV(kvpress.ChunkKVPress):
        pass
''')

@pytest.fixture
def press_file(tmp_path: Path) -> Path:
    path = tmp_path / "renamed.py"
    path.write_text(SUBCLASS, encoding="utf-8")
    return path


def _check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("kvaudit")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_with_kvpress_installed_the_inherited_code_is_audited_and_nothing_is_said(press_file: Path) -> None:
    result = run_cli("check", str(press_file), "-f", "json")
    payload = result.json()
    assert "warnings" not in payload and "warning:" not in result.stderr
    rules = {f["rule"] for p in payload["presses"] for f in p["findings"]}
    assert {"KVA101", "KVA202"} <= rules  # KVA202: chunk_length = 20, declared in kvpress's ChunkKVPress


def test_kvpress_not_on_sys_path_is_said_once_on_stderr_and_in_the_json(press_file: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("check", str(press_file), "-f", "json")  # everything kvaudit imports lazily is loaded now
    # kvpress is found on the file system through sys.path (never imported): take its folder away
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "kvpress").is_dir()])
    result = run_cli("check", str(press_file), "-f", "json")
    assert result.exception is None, result.exception
    payload = result.json()
    [warning] = payload["warnings"]
    assert warning.startswith("kvpress is not installed for this Python")
    assert "RenamedChunkKV" in warning and "AnotherChunkKV" in warning and "kvpress.ChunkKVPress" in warning
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert lines == [f"warning: {warning}"]  # once, for both presses
    # the presses are still recognised; what they inherit is missing, and the note says so
    assert sorted(p["name"] for p in payload["presses"]) == ["AnotherChunkKV", "RenamedChunkKV"]
    assert "KVA202" not in {f["rule"] for p in payload["presses"] for f in p["findings"]}


def test_a_kvpress_whose_presses_cannot_be_read_is_said_too(press_file: Path, tmp_path: Path) -> None:
    """In a fresh interpreter, a kvpress first on PYTHONPATH whose chunkkv_press.py cannot be read."""
    shadow = tmp_path / "shadow" / "kvpress"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("from kvpress.presses.chunkkv_press import ChunkKVPress\n")
    (shadow / "presses").mkdir()
    (shadow / "presses" / "__init__.py").write_text("")
    (shadow / "presses" / "chunkkv_press.py").write_bytes(b"class ChunkKVPress:\x00\n")  # there, but binary
    done = _check("check", str(press_file), "-f", "concise", env={"PYTHONPATH": str(tmp_path / "shadow")})
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith(f"warning: kvpress's source could not be read ({shadow / 'presses' / 'chunkkv_press.py'}: "
                                  "binary file"), warnings
    assert "RenamedChunkKV, AnotherChunkKV" in warnings[0] or "AnotherChunkKV, RenamedChunkKV" in warnings[0]
    sarif = json.loads(_check("check", str(press_file), "-f", "sarif",
                              env={"PYTHONPATH": str(tmp_path / "shadow")}).stdout)
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["level"] for n in notes] == ["warning"] and "could not be read" in notes[0]["message"]["text"]
