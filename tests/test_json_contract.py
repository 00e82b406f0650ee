"""`kvaudit check --format json` follows the kvaudit.check/1 contract and is byte-stable."""

from __future__ import annotations

from kvaudit.model import EVIDENCE_KINDS
from helpers import STATIC_PRESSES, run_cli

from kvaudit.claims import known_claims
from kvaudit.mechanism import Mechanism, all_mechanisms

CLAIMS = known_claims()
STATIC = {m.id for m in all_mechanisms() if type(m).static_evidence is not Mechanism.static_evidence}

VERDICTS = {"implemented", "partial", "missing"}
KINDS = set(EVIDENCE_KINDS)
ORIGINS = {"citation", "config", "option"}
SEVERITIES = {"error", "warning", "info"}


def _check_shape(payload: dict) -> None:
    assert payload["schema"] == "kvaudit.check/1"
    for entry in payload["files"]:
        assert isinstance(entry["path"], str) and entry["status"] in {"ok", "error"}
        assert entry["message"] is None or isinstance(entry["message"], str)
    for press in payload["presses"]:
        assert isinstance(press["name"], str) and isinstance(press["path"], str) and isinstance(press["line"], int)
        for claim in press["claims"]:
            assert claim["id"] in CLAIMS
            assert isinstance(claim["source"], str) and isinstance(claim["line"], int)
        # Static verdicts exist for the mechanisms with static evidence only.
        assert set(press["verdicts"]) <= STATIC
        assert set(press["verdicts"].values()) <= VERDICTS
        assert ("layer-index-reuse" in {c["id"] for c in press["claims"]}) == bool(press["verdicts"])
        items = [tuple(sorted(item.items())) for item in press["evidence"]]
        assert len(items) == len(set(items)), f"{press['name']}: evidence listed twice"
        for item in press["evidence"]:
            assert item["kind"] in KINDS and isinstance(item["line"], int) and isinstance(item["detail"], str)
        for finding in press["findings"]:
            assert isinstance(finding["rule"], str) and finding["severity"] in SEVERITIES
            assert isinstance(finding["line"], int) and isinstance(finding["message"], str)


def test_kvpress_chunkkv_is_missing_and_cites_the_paper() -> None:
    result = run_cli("check", "kvpress.presses.chunkkv_press", "-f", "json")
    assert result.exit_code == 1
    payload = result.json()
    _check_shape(payload)
    [press] = [p for p in payload["presses"] if p["name"] == "ChunkKVPress"]
    assert press["verdicts"] == {"layer-index-reuse": "missing"}
    assert "2502.00299" in press["claims"][0]["source"]
    [finding] = [f for f in press["findings"] if f["rule"] == "KVA101"]
    assert finding["severity"] == "error" and "self.press.score" in finding["message"]


def test_default_target_is_kvpress_chunkkv() -> None:
    assert run_cli("check", "-f", "json").json() == run_cli("check", "kvpress.presses.chunkkv_press", "-f", "json").json()


def test_output_is_byte_identical_across_runs() -> None:
    first = run_cli("check", str(STATIC_PRESSES), "-f", "json")
    second = run_cli("check", str(STATIC_PRESSES), "-f", "json")
    _check_shape(first.json())
    assert first.stdout == second.stdout


def test_fail_on_threshold() -> None:
    target = str(STATIC_PRESSES / "stale_group_dict.py")  # implemented, one warning
    assert run_cli("check", target).exit_code == 0
    assert run_cli("check", target, "--fail-on", "warning").exit_code == 1
    assert run_cli("check", "kvpress.presses.chunkkv_press", "--fail-on", "never").exit_code == 0
