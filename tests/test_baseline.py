"""--baseline FILE / --write-baseline: record today's findings, fail only on new ones (issue 8 §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvaudit.baseline import SCHEMA
from helpers import STATIC_PRESSES, run_cli

DECOY = (STATIC_PRESSES / "decoy_logs_layer.py").read_text(encoding="utf-8")  # one KVA101


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "decoy.py").write_text(DECOY, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_write_then_check_against_the_baseline(project: Path) -> None:
    assert run_cli("check", "src").exit_code == 1
    written = run_cli("check", "src", "--baseline", "kvaudit-baseline.json", "--write-baseline")
    assert written.exit_code == 0 and "wrote 1 finding(s)" in written.stderr
    document = json.loads((project / "kvaudit-baseline.json").read_text(encoding="utf-8"))
    assert document["schema"] == SCHEMA
    [entry] = document["findings"]
    assert entry["rule"] == "KVA101" and entry["press"] == "LogsLayerPress" and entry["path"] == "src/decoy.py"
    assert len(entry["fingerprint"]) == 32 and isinstance(entry["line"], int)

    result = run_cli("check", "src", "--baseline", "kvaudit-baseline.json", "-f", "concise")
    assert result.exit_code == 0 and result.stdout == "No findings.\n"
    assert "1 finding(s) in the baseline" in result.stderr


def test_findings_survive_line_shifts_and_new_ones_fail(project: Path) -> None:
    run_cli("check", "src", "--baseline", "base.json", "--write-baseline")
    (project / "src" / "decoy.py").write_text("# a new header\n\n\n" + DECOY, encoding="utf-8")
    assert run_cli("check", "src", "--baseline", "base.json").exit_code == 0  # moved, not new
    (project / "src" / "second.py").write_text(DECOY.replace("class LogsLayerPress", "class SecondPress"), encoding="utf-8")
    result = run_cli("check", "src", "--baseline", "base.json", "-f", "json")
    assert result.exit_code == 1
    assert [(p["name"], [f["rule"] for f in p["findings"]]) for p in result.json()["presses"]] == [
        ("LogsLayerPress", []), ("SecondPress", ["KVA101"])]
    # the baselined finding's own line edited: it is new again
    edited = DECOY.replace("self.press.score(module, hidden_states, keys, values, attentions, kwargs)",
                           "self.press.score(module, hidden_states, keys, values, attentions, kwargs)  # edited")
    assert edited != DECOY
    (project / "src" / "second.py").unlink()
    (project / "src" / "decoy.py").write_text(edited, encoding="utf-8")
    assert run_cli("check", "src", "--baseline", "base.json").exit_code == 1


def test_the_baseline_is_byte_stable_and_works_from_a_subfolder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("check", "src", "--baseline", "base.json", "--write-baseline")
    first = (project / "base.json").read_bytes()
    run_cli("check", "src", "--baseline", "base.json", "--write-baseline")
    assert (project / "base.json").read_bytes() == first
    monkeypatch.chdir(project / "src")
    assert run_cli("check", ".", "--baseline", "../base.json").exit_code == 0


@pytest.mark.parametrize(("content", "reason"), [
    (None, "baseline file not found"),
    ("{not json", "invalid JSON"),
    ('{"schema": "something/1", "findings": []}', "not a kvaudit baseline"),
    (f'{{"schema": "{SCHEMA}", "findings": [{{"rule": 1}}]}}', "findings[0]"),
    ("[" * 100_000, "not a kvaudit baseline"),
])
def test_a_bad_baseline_is_a_one_line_usage_error(project: Path, content: str | None, reason: str) -> None:
    if content is not None:
        (project / "base.json").write_text(content, encoding="utf-8")
    result = run_cli("check", "src", "--baseline", "base.json")
    assert result.exit_code == 2 and result.exception is None
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and reason in line and len(line) < 400


def test_write_baseline_needs_a_file(project: Path) -> None:
    result = run_cli("check", "src", "--write-baseline")
    assert result.exit_code == 2 and "--write-baseline needs --baseline FILE" in result.stderr
