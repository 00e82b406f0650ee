"""Verdicts and evidence on hand-written press variants in several coding styles."""

from __future__ import annotations

import pytest

from kvaudit.engine import CheckOptions, run_check
from kvaudit.model import CROSS_LAYER_READ, GUARDED_SCORE, INDEX_CACHE, LAYER_CHECK, LAYER_INDEX_REUSE, REUSE_PARAMETER
from helpers import STATIC_PRESSES

ALL = {GUARDED_SCORE, INDEX_CACHE, LAYER_CHECK, REUSE_PARAMETER}

# file, press, verdict, evidence kinds that must be present, rule ids expected
VARIANTS = [
    ("alg2_modulo.py", "Alg2ModuloPress", "implemented", ALL, set()),
    ("reuse_in_helper.py", "HelperReusePress", "implemented", ALL, set()),
    ("reuse_forward_hook.py", "HookReusePress", "implemented", ALL, set()),
    ("subclass_adds_reuse.py", "SubclassReusePress", "implemented", ALL, set()),
    ("group_dict_cleared.py", "ClearedGroupDictPress", "implemented", ALL, set()),
    ("leader_in_staticmethod.py", "StaticLeaderPress", "implemented", ALL, set()),
    ("stale_group_dict.py", "StaleGroupDictPress", "implemented", ALL, {"KVA104"}),
    ("stale_is_none.py", "StaleIsNonePress", "partial", {INDEX_CACHE}, {"KVA102", "KVA104"}),
    ("decoy_caches_scores_every_layer.py", "CachesButScoresPress", "partial",
     {INDEX_CACHE, LAYER_CHECK, REUSE_PARAMETER}, {"KVA102"}),
    ("decoy_declares_n_reuse.py", "DeclaresReusePress", "partial", {REUSE_PARAMETER}, {"KVA102", "KVA103"}),
    ("decoy_logs_layer.py", "LogsLayerPress", "missing", set(), {"KVA101"}),
    ("decoy_skip_first_layers.py", "SkipFirstLayersPress", "missing", {LAYER_CHECK}, {"KVA101"}),
    ("chunk_base.py", "ChunkBasePress", "missing", set(), {"KVA101"}),
]


@pytest.fixture(scope="module")
def audited() -> dict:
    result = run_check([str(STATIC_PRESSES)])
    assert not result.has_errors, result.files
    return {p.name: p for p in result.presses}


@pytest.mark.parametrize(("filename", "name", "verdict", "kinds", "rules"), VARIANTS, ids=[v[1] for v in VARIANTS])
def test_variant(audited, filename: str, name: str, verdict: str, kinds: set, rules: set) -> None:
    press = audited[name]
    assert press.path.endswith(filename)
    assert press.verdicts == {LAYER_INDEX_REUSE: verdict}
    found = {e.kind for e in press.evidence}
    assert kinds <= found, f"missing evidence {kinds - found}"
    reuse_rules = {f.rule for f in press.findings if f.rule.startswith("KVA1")}
    assert reuse_rules == rules
    for item in press.evidence:  # every piece of evidence points at a real line
        assert item.line >= 1 and item.detail


def test_layer_check_in_decoy_is_not_a_group_test(audited) -> None:
    [check] = [e for e in audited["SkipFirstLayersPress"].evidence if e.kind == LAYER_CHECK]
    assert "not a reuse group" in check.detail
    assert check.line == 15  # `if module.layer_idx < self.first_compressed_layer:`


def test_evidence_lines_of_algorithm_2(audited) -> None:
    press = audited["Alg2ModuloPress"]
    lines = {e.kind: e.line for e in press.evidence}
    assert lines[LAYER_CHECK] == 18 and lines[REUSE_PARAMETER] == 18
    assert lines[GUARDED_SCORE] == 19 and lines[INDEX_CACHE] == 20


def test_names_do_not_matter(audited) -> None:
    """`share_every` (a helper-method press) counts exactly as `n_reuse` does."""
    press = audited["HelperReusePress"]
    assert any("share_every" in e.detail for e in press.evidence if e.kind == REUSE_PARAMETER)


def test_presses_citing_papers_without_reuse_stay_quiet(audited) -> None:
    # SnapKV and PyramidKV claim mechanisms the tracer checks, but none with static evidence or reuse rules.
    from kvaudit.claims import paper_by_key

    expected = {"MySnapKVPress": sorted(paper_by_key("snapkv").claims),
                "MyPyramidKVPress": sorted(paper_by_key("pyramidkv").claims)}
    assert "observation-window" in expected["MySnapKVPress"] and "pyramid-budget" in expected["MyPyramidKVPress"]
    for name, claims in expected.items():
        assert [c.id for c in audited[name].claims] == claims and audited[name].verdicts == {}
        assert not [f for f in audited[name].findings if f.rule.startswith("KVA1")]
    assert "NotAPress" not in audited


def test_forced_claim_applies_only_to_presses_citing_nothing(tmp_path) -> None:
    source = (STATIC_PRESSES / "alg2_modulo.py").read_text().replace(
        '"""ChunkKV with Algorithm 2 written the obvious way (arXiv 2502.00299)."""', '"""No citation."""')
    path = tmp_path / "uncited.py"
    path.write_text(source)
    assert run_check([str(path)]).presses[0].verdicts == {}
    forced = run_check([str(path)], CheckOptions(forced_claims=[LAYER_INDEX_REUSE])).presses[0]
    assert forced.verdicts == {LAYER_INDEX_REUSE: "implemented"}
    assert forced.claims[0].source == "forced by --claim"
    snap = run_check([str(STATIC_PRESSES / "quiet_presses.py")], CheckOptions(forced_claims=[LAYER_INDEX_REUSE]))
    assert all(p.verdicts == {} for p in snap.presses)  # they cite SnapKV / PyramidKV


def test_claim_found_in_comment_and_class_name(tmp_path) -> None:
    body = (STATIC_PRESSES / "decoy_logs_layer.py").read_text().split('"""', 2)[2]
    (tmp_path / "by_comment.py").write_text("# Implements arXiv:2502.00299\n" + body)
    (tmp_path / "by_name.py").write_text(body.replace("class LogsLayerPress", "class MyChunkKVPress"))
    result = run_check([str(tmp_path)])
    sources = {p.name: p.claims[0].source.split(":")[0] for p in result.presses}
    assert sources == {"LogsLayerPress": "comment", "MyChunkKVPress": "class name"}


def test_the_reference_press_passes_its_own_audit() -> None:
    """The static analyzer and the reference press agree on what Algorithm 2 looks like."""
    reference = STATIC_PRESSES.parents[2] / "audit" / "reference"
    [press] = run_check([str(reference)]).presses
    assert press.name == "ChunkKVReusePress"
    assert press.verdicts == {LAYER_INDEX_REUSE: "implemented"}
    # followers read their group leader's entry: the evidence says what is shared, and how
    assert {e.kind for e in press.evidence} == ALL | {CROSS_LAYER_READ}
    assert not [f for f in press.findings if f.severity.value in ("error", "warning")]
