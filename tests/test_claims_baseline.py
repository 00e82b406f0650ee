"""`kvaudit trace … --baseline FILE` / `--write-baseline` (issue 17 §3): today's claim verdicts and defects in a
committed, byte-stable file; afterwards only claims and defects that get worse fail the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvaudit.claims_baseline import SCHEMA, apply_baseline, load_claims_baseline, write_claims_baseline
from kvaudit.mechanism import mechanism_by_id
from kvaudit.model import AuditResult, ClaimCheck, Defect, FileStatus, ModelInfo, PressReport, PressTrace, TraceSummary
from helpers import run_cli

GRID = ("--layers", "2", "--tokens", "96", "--long-tokens", "144", "--ratios", "0.5", "--decode-steps", "0")
KEPT = mechanism_by_id("kept-fraction")
MEETS = KEPT.VALID[0]  # PlainNormPress: keeps 1 − ratio
BREAKS = KEPT.INVALID[0].replace("OverKeepingPress", "PlainNormPress")  # the same press, keeping twice its budget


def result_of(*traces: PressTrace, errors: int = 0) -> AuditResult:
    result = AuditResult(presses=[PressReport(t.name, t.path, 1, trace=t) for t in traces],
                         traced=TraceSummary(model=ModelInfo("llama", 8, "embedded"), plan=["512×1"], grid="g"))
    result.files = [FileStatus(f"bad{n}.py", "error", "cannot import") for n in range(errors)]
    return result


def trace(name: str, *verdicts: tuple[str, str], defects: tuple[str, ...] = (), accepted: str | None = None) -> PressTrace:
    claims = [ClaimCheck(claim, "a paper", verdict, f"{claim} {verdict}", accepted=accepted if verdict == "violated" else None)
              for claim, verdict in verdicts]
    return PressTrace(name, f"/x/{name}.py", "ok", claims=claims, defects=[Defect(d, f"{d}!") for d in defects])


def gate(tmp_path: Path, before: AuditResult, after: AuditResult) -> tuple[int, list[str]]:
    path = tmp_path / "claims.json"
    write_claims_baseline(before, path)
    return apply_baseline(after, path, load_claims_baseline(path))


def test_the_file_is_sorted_byte_stable_and_holds_verdicts_only(tmp_path: Path) -> None:
    result = result_of(trace("ZPress", ("observation-window", "holds"), ("kept-fraction", "violated"),
                             defects=("crash", "batch-row-0")),
                       trace("APress", ("kept-fraction", "violated")))
    result.presses[0].trace.claims[0].measured = 4321  # numbers never reach the file
    path = tmp_path / "claims.json"
    assert write_claims_baseline(result, path) == 2
    first = path.read_bytes()
    document = json.loads(first)
    assert document["schema"] == SCHEMA and document["model"] == {"arch": "llama", "layers": 8}
    assert [p["name"] for p in document["presses"]] == ["APress", "ZPress"]
    z = document["presses"][1]
    assert [c["id"] for c in z["claims"]] == ["kept-fraction", "observation-window"]
    assert z["defects"] == ["batch-row-0", "crash"] and set(z["claims"][0]) == {"id", "paper", "verdict", "accepted"}
    assert "4321" not in first.decode() and "/x/" not in first.decode()  # no numbers, no machine paths
    result.presses.reverse()
    write_claims_baseline(result, path)
    assert path.read_bytes() == first


def test_only_what_got_worse_fails(tmp_path: Path) -> None:
    known = result_of(trace("P", ("observation-window", "violated"), ("kept-fraction", "holds"), defects=("crash",)))
    assert gate(tmp_path, known, known)[0] == 0  # today's violation and defect are held
    code, lines = gate(tmp_path, known, result_of(trace("P", ("observation-window", "violated"),
                                                        ("kept-fraction", "violated"), defects=("crash",))))
    assert code == 1 and any("P kept-fraction (a paper): holds → violated" in line for line in lines)
    code, lines = gate(tmp_path, known, result_of(trace("P", ("observation-window", "violated"),
                                                        ("kept-fraction", "holds"), defects=("crash", "stale-indices"))))
    assert code == 1 and any("defect stale-indices: appeared" in line for line in lines)
    code, lines = gate(tmp_path, known, result_of(trace("P", ("observation-window", "holds"), ("kept-fraction", "holds"))))
    assert code == 0 and any("2 change(s) for the better (rewrite it with --write-baseline)" in line for line in lines)


def test_acceptances_and_new_presses(tmp_path: Path) -> None:
    accepted = result_of(trace("P", ("kept-fraction", "violated"), accepted="on purpose"))
    code, lines = gate(tmp_path, accepted, result_of(trace("P", ("kept-fraction", "violated"))))
    assert code == 1 and any("accepted (on purpose) → not accepted" in line for line in lines)
    base = result_of(trace("P", ("kept-fraction", "holds")))
    assert gate(tmp_path, base, result_of(trace("P", ("kept-fraction", "holds")),
                                          trace("Q", ("kept-fraction", "holds"))))[0] == 0
    code, lines = gate(tmp_path, base, result_of(trace("P", ("kept-fraction", "holds")),
                                                 trace("Q", ("kept-fraction", "violated"))))
    assert code == 1 and any("Q: new press (traced; 1 claim(s): violated kept-fraction)" in line for line in lines)
    # a run of some presses only (a pull request's changed ones): the others are not "worse"
    assert gate(tmp_path, result_of(trace("P", ("kept-fraction", "holds")), trace("Q", ("kept-fraction", "violated"))),
                result_of(trace("P", ("kept-fraction", "holds"))))[0] == 0


def test_a_target_that_could_not_be_traced_still_exits_2(tmp_path: Path) -> None:
    base = result_of(trace("P", ("kept-fraction", "holds")))
    assert gate(tmp_path, base, result_of(trace("P", ("kept-fraction", "holds")), errors=1))[0] == 2
    code, lines = apply_baseline(result_of(trace("P", ("kept-fraction", "holds")), errors=1), tmp_path / "w.json", None)
    assert code == 2 and (tmp_path / "w.json").exists()


def test_diff_reads_a_claims_baseline_as_either_side(tmp_path: Path) -> None:
    from kvaudit.reporters.trace_json import render_trace_json

    base = result_of(trace("P", ("kept-fraction", "holds")))
    write_claims_baseline(base, tmp_path / "claims.json")
    later = result_of(trace("P", ("kept-fraction", "violated")))
    later.presses[0].trace.claims[0].measured = 0.9
    (tmp_path / "new.json").write_text(render_trace_json(later), encoding="utf-8")
    out = run_cli("diff", str(tmp_path / "claims.json"), str(tmp_path / "new.json"), "-f", "json")
    assert out.exit_code == 1 and [c["kind"] for c in out.json()["changes"]] == ["became-violated"]
    assert "measured" not in out.json()["changes"][0]["old"]  # a baseline has no numbers to show
    same = run_cli("diff", str(tmp_path / "claims.json"), str(tmp_path / "claims.json"))
    assert same.exit_code == 0
    (tmp_path / "base.json").write_text(render_trace_json(base), encoding="utf-8")
    alike = run_cli("diff", str(tmp_path / "claims.json"), str(tmp_path / "base.json"))
    assert alike.exit_code == 0 and alike.stderr == "" and "Nothing changed" in alike.stdout  # no model-source warning


# -- the command line, with the tracer -----------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "norm_press.py").write_text(MEETS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_write_then_gate_on_a_real_trace(project: Path, shared_worker) -> None:
    written = run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json", "--write-baseline")
    assert written.exit_code == 0 and "wrote the claims of 1 press(es)" in written.stderr
    first = (project / "claims.json").read_bytes()
    [press] = json.loads(first)["presses"]
    assert press["name"] == "PlainNormPress" and {c["id"]: c["verdict"] for c in press["claims"]}["kept-fraction"] == "holds"
    assert run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json", "--write-baseline").exit_code == 0
    assert (project / "claims.json").read_bytes() == first  # the same code, the same bytes

    (project / "norm_press.py").write_text(BREAKS, encoding="utf-8")
    assert run_cli("trace", "norm_press.py", *GRID).exit_code == 1
    worse = run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json", "-f", "json")
    assert worse.exit_code == 1 and worse.exception is None
    assert "worse than the baseline claims.json: PlainNormPress kept-fraction" in worse.stderr
    assert worse.json()["schema"] == "kvaudit.trace/2"  # the view itself is unchanged

    # record the violation: from now on it no longer fails, but it is still shown
    assert run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json", "--write-baseline").exit_code == 0
    held = run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json", "-f", "json")
    assert held.exit_code == 0 and "1 violated claim(s) and defect(s) the baseline claims.json holds not counted" in held.stderr
    assert {c["id"]: c["verdict"] for c in held.json()["presses"][0]["claims"]}["kept-fraction"] == "violated"


def _no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvaudit.tracer

    def refuse(options):
        raise AssertionError("a bad baseline must stop the run before any worker starts")

    monkeypatch.setattr(kvaudit.tracer, "open_session", refuse)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "baseline file not found"),
    ("{not json", "invalid JSON"),
    ('{"schema": "kvaudit.baseline/1", "findings": []}', "not a kvaudit claims baseline"),
    (f'{{"schema": "{SCHEMA}", "kvaudit": "0", "model": {{}}, "plan": [], "grid": "", "presses": [{{"name": 1}}]}}',
     "not a valid kvaudit.claims-baseline/1 file"),
    (f'{{"schema": "{SCHEMA}", "kvaudit": "0", "model": {{}}, "plan": [], "grid": "", "presses": [{{"name": "P", '
     f'"status": "ok", "claims": [{{"id": "x", "paper": "p", "verdict": "broken"}}]}}]}}', "not a valid"),
    (f'{{"schema": "{SCHEMA}", "kvaudit": "0", "model": {{}}, "plan": ["512×1"], "grid": "other", "presses": []}}',
     "written for another grid"),
])
def test_a_bad_baseline_is_one_line_exit_2_before_tracing(project: Path, monkeypatch, content: str | None,
                                                          reason: str) -> None:
    _no_worker(monkeypatch)
    if content is not None:
        (project / "claims.json").write_text(content, encoding="utf-8")
    out = run_cli("trace", "norm_press.py", *GRID, "--baseline", "claims.json")
    assert out.exit_code == 2 and out.exception is None
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and reason in line and len(line) < 400, line


def test_write_baseline_needs_a_file(project: Path, monkeypatch) -> None:
    _no_worker(monkeypatch)
    out = run_cli("trace", "norm_press.py", *GRID, "--write-baseline")
    assert out.exit_code == 2 and out.stderr.strip() == "error: --write-baseline needs --baseline FILE (the file to write)"


def test_the_committed_kvpress_baseline_reads_back_to_the_same_bytes() -> None:
    """reports/kvpress-0.5.5.claims-baseline.json (make kvpress-diff) is a valid baseline, in the writer's own layout."""
    from kvaudit.claims_baseline import ClaimsBaseline
    from kvaudit.codec import from_data, to_data

    path = Path(__file__).resolve().parents[1] / "reports" / "kvpress-0.5.5.claims-baseline.json"
    raw = path.read_text(encoding="utf-8")
    baseline = from_data(json.loads(raw), ClaimsBaseline)
    assert json.dumps(to_data(baseline), indent=2, ensure_ascii=False) + "\n" == raw
    names = [press.name for press in baseline.presses]
    assert names == sorted(names) and "ChunkKVPress" in names
    chunkkv = next(press for press in baseline.presses if press.name == "ChunkKVPress")
    assert {c.id: c.verdict for c in chunkkv.claims}["layer-index-reuse"] == "violated"  # the flagship finding
    assert load_claims_baseline(path).presses["ChunkKVPress"].defects[0].id == "batch-row-0"
    # every verdict kind reads back, not-checkable included (a baseline holding one was once refused)
    assert {c.verdict for press in baseline.presses for c in press.claims} >= {"holds", "violated", "not-checkable"}
