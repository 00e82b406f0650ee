"""The catalogue traced: every mechanism's example presses, kvpress's presses, acceptances and the CI gate.

One worker serves the whole module (one pipeline run with the trace stage): the examples of every
mechanism (``VALID`` must hold, ``INVALID`` must be violated with the numbers of its rule), the
dynamic rules' examples (KVA301, KVA302), and a dozen kvpress presses on a small grid (one ratio,
160 and 240 tokens; SimLayerKV keeps 128 recent tokens instead of 1024 so that it fits).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("kvpress")

from kvaudit.acceptance import add_trace_findings  # noqa: E402
from kvaudit.config import Acceptance, load_config  # noqa: E402
from kvaudit.mechanism import all_mechanisms  # noqa: E402
from kvaudit.model import HOLDS, NOT_RUN, VIOLATED, AuditResult  # noqa: E402
from kvaudit.rule import all_rules  # noqa: E402
from kvaudit.source import display_path  # noqa: E402
from kvaudit.tracer import TraceOptions  # noqa: E402
from conftest import sharing_worker  # noqa: E402
from helpers import run_cli, trace_targets  # noqa: E402

pytestmark = pytest.mark.slow

# --press builds only the class it names (check --trace semantics): every other press keeps its defaults.
GRID = TraceOptions(tokens=160, long_tokens=240, ratios=(0.5,), decode_steps=8,
                    press_expr="SimLayerKVPress(lazy_threshold=0.2, n_recent=128)")
KVPRESS = [
    "streaming_llm_press", "snapkv_press", "adakv_press", "decoding_press", "cam_press", "simlayerkv_press",
    "tova_press", "observed_attention_press", "think_press", "chunkkv_press", "finch_press",
    "key_rerotation_press", "pyramidkv_press", "merging_press", "duo_attention_press",
]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, trace_session) -> dict:
    """Write every example, audit them with kvpress's presses, trace everything in one worker."""
    folder = tmp_path_factory.mktemp("examples")
    cases = []  # (kind, owner id, file, config text)
    for mechanism in all_mechanisms():
        if mechanism.needs_learned_attention:  # learned attention: tests/test_trained_claims.py traces those on the trained model
            continue
        for kind, examples in (("valid", mechanism.VALID), ("invalid", mechanism.INVALID)):
            for number, code in enumerate(examples, start=1):
                path = folder / f"{mechanism.id.replace('-', '_')}_{kind}_{number}.py"
                path.write_text(code.lstrip("\n"), encoding="utf-8")
                cases.append((kind, mechanism.id, path, ""))
    for rule in all_rules():
        if rule.dynamic:
            for kind, examples in (("valid", rule.VALID), ("invalid", rule.INVALID)):
                for number, code in enumerate(examples, start=1):
                    path = folder / f"{rule.id.lower()}_{kind}_{number}.py"
                    path.write_text(code.lstrip("\n"), encoding="utf-8")
                    cases.append((kind, rule.id, path, rule.EXAMPLE_CONFIG))
    targets = [str(case[2]) for case in cases] + [f"kvpress.presses.{name}" for name in KVPRESS]
    with sharing_worker(trace_session):
        result = trace_targets(targets, GRID, static_rules=True).result
    assert not result.has_errors, result.files
    for press in result.presses:  # the traces only: each test applies its own acceptances
        press.findings = [f for f in press.findings if f.rule not in ("KVA301", "KVA302", "KVA303")]
    result.extra_findings = []
    return {"result": result, "cases": cases,
            "kvpress": {p.name: p for p in result.presses if "kvpress" in p.path}}


def _presses(result: AuditResult, path: Path):
    shown = display_path(path)
    return [p for p in result.presses if p.path == shown]


def test_every_mechanism_example_meets_or_breaks_its_claim(catalogue) -> None:
    seen = set()
    for kind, owner, path, _ in catalogue["cases"]:
        if owner.startswith("KVA"):
            continue
        (press,) = _presses(catalogue["result"], path)
        check = press.trace.claim(owner)
        assert check is not None, f"{path.name}: {press.name} does not claim {owner}: {[c.id for c in press.claims]}"
        expected = HOLDS if kind == "valid" else VIOLATED
        assert check.verdict == expected, f"{path.name}: {owner} is {check.verdict}: {check.message}"
        if kind == "invalid":  # the numbers back the verdict: the rule's value and another measured
            assert check.expected is not None and check.measured is not None and check.expected != check.measured
            assert check.where, f"{path.name}: the violation does not say where"  # the run (and place) it is in
        seen.add((owner, kind))
    assert seen == {(m.id, kind) for m in all_mechanisms() if not m.needs_learned_attention for kind in ("valid", "invalid")}


def test_breaking_examples_give_the_right_numbers(catalogue) -> None:
    result = catalogue["result"]
    checks = {}
    for kind, owner, path, _ in catalogue["cases"]:
        if kind == "invalid" and not owner.startswith("KVA"):
            (press,) = _presses(result, path)
            checks[owner] = press.trace.claim(owner)
    assert (checks["layer-index-reuse"].expected, checks["layer-index-reuse"].measured) == (4, 8)
    window = checks["observation-window"]
    assert window.expected == 16 and window.measured == 0  # its 16-token window scores lowest: all dropped
    sinks = checks["attention-sinks"]
    assert sinks.expected[0] == 4 and sinks.measured[0] == 0  # no sink kept
    assert checks["recent-window"].measured == 0
    flat = checks["pyramid-budget"]
    assert len(set(flat.measured)) == 1 and flat.expected[0] > flat.expected[-1]  # flat against the pyramid
    assert checks["head-budget"].measured[0] == checks["head-budget"].measured[1]  # equal heads
    assert checks["score-topk"].measured == 0  # none of the kept is among the top
    assert (checks["kept-fraction"].expected, checks["kept-fraction"].measured) == (0.5, 1.0)
    grown = checks["decode-compression"]
    assert grown.measured == grown.expected + 8  # one entry more per decoding step, 8 steps
    assert "chunks only in part" in checks["chunk-selection"].message


def test_dynamic_rules_examples_fire_as_documented(catalogue) -> None:
    for kind, owner, path, config_text in catalogue["cases"]:
        if not owner.startswith("KVA"):
            continue
        sub = AuditResult(presses=copy.deepcopy(_presses(catalogue["result"], path)))
        add_trace_findings(sub, _load(config_text, path.parent) if config_text else [])
        fired = [f for f in sub.findings if f.rule == owner]
        if kind == "invalid":
            assert fired, f"{owner} should fire on {path.name}"
        else:
            assert not fired, f"{owner} fired on {path.name}: {fired}"


def _load(text: str, folder: Path) -> list[Acceptance]:
    path = folder / "example_config" / "kvaudit.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load_config(path).acceptances


def test_kvpress_presses_that_meet_a_claim_hold(catalogue) -> None:
    kv = catalogue["kvpress"]
    assert kv["StreamingLLMPress"].trace.verdicts["attention-sinks"] == HOLDS
    assert set(kv["SnapKVPress"].trace.verdicts.values()) == {HOLDS}  # every claim of SnapKV and of the contracts
    assert {"observation-window", "score-formula", "score-topk", "kept-fraction"} <= set(kv["SnapKVPress"].trace.verdicts)
    assert kv["AdaKVPress"].trace.verdicts["head-budget"] == HOLDS
    assert kv["DecodingPress"].trace.verdicts["decode-compression"] == HOLDS  # compresses at steps 4 and 8
    assert kv["CAMPress"].trace.verdicts["decode-compression"] == HOLDS  # per-step CaM holds 128 entries
    # "used in several ... methods, such as" a list naming FINCH: a passing mention, so no FINCH window
    # claim; its kvpress contract holds with re-rotated keys, matched on their values (the window itself:
    # tests/test_tracer_runs.py, test_re_rotated_keys_map_to_the_same_positions_as_their_scorer)
    rerotation = kv["KeyRerotationPress"].trace.verdicts
    assert "observation-window" not in rerotation and rerotation["kept-fraction"] == HOLDS, rerotation
    assert kv["FinchPress"].trace.verdicts["observation-window"] == HOLDS  # the delimiter set up from rules/presses.toml
    assert kv["MergingPress"].trace.verdicts["kept-fraction"] == HOLDS  # merged values: matched on keys
    assert kv["ChunkKVPress"].trace.verdicts["observation-window"] == HOLDS
    # On this grid PyramidKV builds its pyramid (its budget clamps to L − window = 96 at the bottom).
    pyramid = kv["PyramidKVPress"].trace.claim("pyramid-budget")
    assert pyramid.verdict == HOLDS and pyramid.measured[0] > pyramid.measured[-1]


def test_kvpress_departures_from_their_papers_with_numbers(catalogue) -> None:
    kv = catalogue["kvpress"]
    # SimLayerKV keeps 4 sinks and the last n_recent − n_last = 127 prompt tokens: the authors' code trims at
    # the first decoding step with the new token among the recent ones (was a false violation, issue 16).
    sinks = kv["SimLayerKVPress"].trace.claim("attention-sinks")
    assert sinks.verdict == HOLDS and "the last 127" in sinks.message, sinks.message
    for name in ("TOVAPress", "StreamingLLMPress"):
        decode = kv[name].trace.claim("decode-compression")
        assert decode.verdict == VIOLATED and decode.measured == decode.expected + 8, (name, decode.message)
    assert kv["ObservedAttentionPress"].trace.status == "ok"  # ran on eager attention (rules/presses.toml)
    # "Related to H2O": a passing mention, so it is held to ScorerPress's contract, not to H2O's claims.
    assert kv["ObservedAttentionPress"].trace.claim("decode-compression") is None
    assert kv["ObservedAttentionPress"].trace.claim("recent-window") is None
    memory = kv["AdaKVPress"].trace.claim("kept-fraction")
    assert memory.verdict == VIOLATED and memory.measured == 1.0  # masked, not freed
    think = kv["ThinKPress"].trace.claim("kept-fraction")
    assert think.verdict == VIOLATED and (think.expected, think.measured) == (0.75, 1.0)
    reuse = kv["ChunkKVPress"].trace.claim("layer-index-reuse")
    assert reuse.verdict == VIOLATED and (reuse.expected, reuse.measured) == (4, 8)



def test_a_press_that_needs_a_download_runs_on_its_stand_in(catalogue) -> None:
    # Offline, its head pattern is a seeded stand-in (rules/presses.toml); a load no stand-in covers
    # keeps the plain Hub reason (tests/test_trace_standins.py).
    trace = catalogue["kvpress"]["DuoAttentionPress"].trace
    assert trace.status == "ok" and trace.defects == [] and trace.stand_in.startswith("random DuoAttention gate values")
    assert trace.claims and all(c.verdict != NOT_RUN and c.stand_in is True for c in trace.claims)


def test_acceptances_cover_violations_and_unused_ones_are_reported(catalogue) -> None:
    presses = copy.deepcopy([catalogue["kvpress"][n] for n in ("TOVAPress", "SnapKVPress")])
    result = AuditResult(presses=presses)
    accept = [
        Acceptance("TOVAPress", "decode-compression", "kvpress compresses at prefill only", "kvaudit.toml accept[0]",
                   "kvaudit.toml", 2),
        Acceptance("Snap*", "observation-window", "stale", "kvaudit.toml accept[1]", "kvaudit.toml", 7),
    ]
    add_trace_findings(result, accept)
    tova = result.presses[[p.name for p in result.presses].index("TOVAPress")]
    assert tova.trace.claim("decode-compression").accepted == "kvpress compresses at prefill only"
    assert not [f for f in tova.findings if f.rule == "KVA301"]
    (unused,) = [f for f in result.findings if f.rule == "KVA302"]
    assert (unused.path, unused.line) == ("kvaudit.toml", 7)
    assert "the claim is holds, not violated" in unused.message


# ---------------------------------------------------------------------------------------------
# The CI gate end to end (on the shared worker): check --trace, --fail-on, SARIF and GitHub output
# ---------------------------------------------------------------------------------------------

VIOLATING = '''
from dataclasses import dataclass
from kvpress import ScorerPress


@dataclass
class SinklessStreamingPress(ScorerPress):
    """StreamingLLM (arXiv 2309.17453) in name only: the sinks are evicted with the middle."""

    n_sink: int = 4

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        import torch

        return torch.arange(keys.shape[2], dtype=keys.dtype).expand(keys.shape[0], keys.shape[1], -1).clone()
'''
SMALL = ("--tokens", "96", "--long-tokens", "144", "--ratios", "0.5", "--layers", "2")


def test_check_trace_gates_on_violated_claims_with_sarif_and_github(tmp_path: Path, monkeypatch, shared_worker) -> None:
    monkeypatch.chdir(tmp_path)
    Path("press.py").write_text(VIOLATING.lstrip(), encoding="utf-8")
    Path("kvaudit.toml").write_text(
        '[[accept]]\npress = "SinklessStreamingPress"\nclaim = "decode-compression"\n'
        'reason = "prefill-only, like kvpress"\n\n'
        '[[accept]]\npress = "NoSuchPress"\nclaim = "attention-sinks"\nreason = "left over"\n', encoding="utf-8")
    out = run_cli("check", "press.py", "--trace", *SMALL, "--format", "sarif", "--output-github", "gh.txt",
                  "--fail-on", "error")
    assert out.exception is None and out.exit_code == 1, out.stdout + out.stderr
    results = json.loads(out.stdout)["runs"][0]["results"]
    violated = [r for r in results if r["ruleId"] == "KVA301"]
    assert len(violated) == 1  # attention-sinks; decode-compression is accepted
    region = violated[0]["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"] == "press.py" and region["region"]["startLine"] == 6  # the class line
    last = VIOLATING.lstrip().splitlines()
    # the class's whole range, as static rules give their node's: SARIF viewers highlight it
    assert (region["region"]["endLine"], region["region"]["endColumn"]) == (len(last), len(last[-1]) + 1)
    assert "attention-sinks" in violated[0]["message"]["text"] and "the paper's rule gives 4 sinks" in violated[0]["message"]["text"]
    (unused,) = [r for r in results if r["ruleId"] == "KVA302"]
    assert unused["locations"][0]["physicalLocation"]["region"]["startLine"] == 6  # its [[accept]] table
    github = Path("gh.txt").read_text(encoding="utf-8")
    # lines only: the Actions runner drops an annotation spanning lines that also sets columns
    assert f"::error file=press.py,line=6,endLine={len(last)},title=KVA301 claim-violated::" in github
    assert "::warning file=kvaudit.toml,line=6" in github
    # --fail-on never: the same findings, a passing gate
    out = run_cli("check", "press.py", "--trace", *SMALL, "--format", "json", "--fail-on", "never")
    assert out.exit_code == 0 and any(f["rule"] == "KVA301" for p in out.json()["presses"] for f in p["findings"])
