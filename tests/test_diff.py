"""`kvaudit diff OLD NEW` (issue 17 §2): every kind of change, its effect on the exit code, the three views,
and bad or mismatched inputs (exit 2, one line, never a traceback).

The documents are written by kvaudit's own writers (kvaudit.reporters.trace_json, json_report), from
hand-built findings models: the diff reads what `kvaudit trace --format json` writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kvaudit.diff import CHECK_SCHEMA, TRACE_SCHEMA
from kvaudit.mechanism import all_mechanisms, mechanism_by_id
from kvaudit.model import (
    AuditResult,
    ClaimCheck,
    Defect,
    Failure,
    ModelInfo,
    PressReport,
    PressTrace,
    TraceRun,
    TraceSummary,
)
from kvaudit.reporters.json_report import SCHEMA as CHECK_WRITER_SCHEMA, render_json
from kvaudit.reporters.trace_json import SCHEMA as TRACE_WRITER_SCHEMA, render_trace_json
from helpers import run_cli

SNAP = "SnapKV (arXiv 2404.14469)"
BASE = "the kvpress BasePress contract"
PLAN = ["512×1", "4096×1", "512×2"]
GRID = "prefills (tokens×rows) 512×1, 4096×1, 512×2 at compression ratios 0.5, 0.8, 0.9, each followed by 8 decoding steps"


def window(verdict: str = "holds", measured: int = 64, **extra) -> ClaimCheck:
    return ClaimCheck("observation-window", SNAP, verdict, f"kept {measured} of the last 64 positions", expected=64,
                      measured=measured, where={"ratio": 0.5, "length": 512, "batch": 1}, runs={verdict: 9}, **extra)


def fraction(verdict: str = "holds", measured: float = 0.5, **extra) -> ClaimCheck:
    return ClaimCheck("kept-fraction", BASE, verdict, f"the layers keep {measured:.1%}", expected=0.5, measured=measured,
                      where={"ratio": 0.5, "length": 512, "batch": 1}, runs={verdict: 9}, **extra)


def press(name: str = "SnapKVPress", *claims: ClaimCheck, defects: tuple[Defect, ...] = (), status: str = "ok",
          failure: Failure | None = None, path: str | None = None) -> PressTrace:
    trace = PressTrace(name, path or f"/venv/lib/python3.11/site-packages/kvpress/presses/{name.lower()}.py", status,
                       claims=list(claims or (window(), fraction())), defects=list(defects),
                       runs=[TraceRun(512, 1, [1, 1], [256, 256], [None, None])])
    if failure is not None:
        trace.failure, trace.message = failure, f"{failure.reason}"
    return trace


def result_of(*traces: PressTrace, arch: str = "llama", layers: int = 8, source: str = "embedded tiny llama",
              plan: list[str] = PLAN, grid: str = GRID) -> AuditResult:
    presses = [PressReport(t.name, t.path, 1, trace=t) for t in traces]
    return AuditResult(presses=presses,
                       traced=TraceSummary(model=ModelInfo(arch, layers, source), plan=list(plan), grid=grid))


def write(path: Path, *traces: PressTrace, **model) -> str:
    path.write_text(render_trace_json(result_of(*traces, **model)), encoding="utf-8")
    return str(path)


def diff(tmp_path: Path, old: list[PressTrace], new: list[PressTrace], *args: str, **model):
    first = write(tmp_path / "old.json", *old)
    second = write(tmp_path / "new.json", *new, **model)
    return run_cli("diff", first, second, *args)


def changes(tmp_path: Path, old: list[PressTrace], new: list[PressTrace], *args: str) -> tuple[int, list[dict]]:
    out = diff(tmp_path, old, new, "--format", "json", *args)
    assert out.exception is None, out.exception
    document = out.json()
    assert document["schema"] == "kvaudit.diff/1" and document["worse"] == (out.exit_code == 1)
    return out.exit_code, document["changes"]


def kinds(found: list[dict]) -> list[tuple[str, str]]:
    return [(c["kind"], c["effect"]) for c in found]


def test_the_schemas_it_reads_are_the_writers() -> None:
    assert TRACE_SCHEMA == TRACE_WRITER_SCHEMA and CHECK_SCHEMA == CHECK_WRITER_SCHEMA


def test_the_same_audit_twice_is_no_change(tmp_path: Path) -> None:
    code, found = changes(tmp_path, [press()], [press()])
    assert (code, found) == (0, [])
    out = diff(tmp_path, [press()], [press()])
    assert out.exit_code == 0 and "Nothing changed" in out.stdout


def test_a_claim_that_became_violated_is_worse(tmp_path: Path) -> None:
    code, found = changes(tmp_path, [press()], [press("SnapKVPress", window("violated", 12), fraction())])
    assert code == 1 and kinds(found) == [("became-violated", "worse")]
    [change] = found
    assert change["press"] == "SnapKVPress" and change["claim"] == "observation-window" and change["paper"] == SNAP
    assert change["old"]["verdict"] == "holds" and change["new"]["verdict"] == "violated"
    assert change["new"]["measured"] == 12 and change["old"]["measured"] == 64


def test_a_violation_that_is_accepted_does_not_fail(tmp_path: Path) -> None:
    accepted = window("violated", 12, accepted="documented by kvpress")
    code, found = changes(tmp_path, [press()], [press("SnapKVPress", accepted, fraction())])
    assert code == 0 and kinds(found) == [("became-violated", "neutral")]


def test_a_claim_that_became_holds_is_better(tmp_path: Path) -> None:
    code, found = changes(tmp_path, [press("SnapKVPress", window("violated", 12), fraction())], [press()])
    assert code == 0 and kinds(found) == [("became-holds", "better")]


def test_new_and_removed_presses(tmp_path: Path) -> None:
    clean, broken = press("KnormPress"), press("TovaPress", window("violated", 3))
    code, found = changes(tmp_path, [press()], [press(), clean])
    assert code == 0 and kinds(found) == [("press-added", "neutral")]
    assert found[0]["new"]["claims"] == {"observation-window": "holds", "kept-fraction": "holds"}
    code, found = changes(tmp_path, [press()], [press(), broken])
    assert code == 1 and kinds(found) == [("press-added", "worse")]
    code, found = changes(tmp_path, [press(), clean], [press()])
    assert code == 0 and kinds(found) == [("press-removed", "neutral")] and found[0]["press"] == "KnormPress"
    assert changes(tmp_path, [press(), clean], [press()], "--ignore-removed") == (0, [])


def test_changed_acceptances(tmp_path: Path) -> None:
    accepted = press("SnapKVPress", window("violated", 12, accepted="on purpose"), fraction())
    open_ = press("SnapKVPress", window("violated", 12), fraction())
    code, found = changes(tmp_path, [accepted], [open_])
    assert code == 1 and kinds(found) == [("acceptance-changed", "worse")]
    assert found[0]["old"]["accepted"] == "on purpose" and found[0]["new"]["accepted"] is None
    code, found = changes(tmp_path, [open_], [accepted])
    assert code == 0 and kinds(found) == [("acceptance-changed", "better")]
    reworded = press("SnapKVPress", window("violated", 12, accepted="on purpose, see the docstring"), fraction())
    assert kinds(changes(tmp_path, [accepted], [reworded])[1]) == [("acceptance-changed", "neutral")]


def test_numbers_change_only_beyond_the_mechanisms_tolerance(tmp_path: Path) -> None:
    tolerance = mechanism_by_id("kept-fraction").diff_tolerance
    assert 0 < tolerance < 0.01 and mechanism_by_id("observation-window").diff_tolerance == 0
    within = press("SnapKVPress", window(), fraction(measured=0.5 + tolerance / 2))
    assert changes(tmp_path, [press()], [within]) == (0, [])
    beyond = press("SnapKVPress", window(), fraction(measured=0.5 + 2 * tolerance))
    code, found = changes(tmp_path, [press()], [beyond])
    assert code == 0 and kinds(found) == [("numbers-changed", "neutral")] and found[0]["claim"] == "kept-fraction"
    # a count has no tolerance: one position is a change, even with the verdict unchanged
    one_less = press("SnapKVPress", window("violated", 12), fraction())
    one_less_more = press("SnapKVPress", window("violated", 11), fraction())
    assert kinds(changes(tmp_path, [one_less], [one_less_more])[1]) == [("numbers-changed", "neutral")]
    # the runs per verdict count too: violated in more runs of the grid
    spread = window("violated", 12)
    spread.runs = {"holds": 5, "violated": 4}
    found = changes(tmp_path, [one_less], [press("SnapKVPress", spread, fraction())])[1]
    assert kinds(found) == [("numbers-changed", "neutral")]
    out = diff(tmp_path, [one_less], [press("SnapKVPress", spread, fraction())], "--format", "markdown")
    assert "runs violated 9 → holds 5, violated 4" in out.stdout


def test_lists_compare_element_by_element_within_the_tolerance(tmp_path: Path) -> None:
    def pyramid(budgets: list[int]) -> PressTrace:
        check = ClaimCheck("pyramid-budget", "PyramidKV", "violated", "flat", expected=[400, 300, 200],
                           measured=budgets, runs={"violated": 3})
        return press("PyramidKVPress", check)

    assert mechanism_by_id("pyramid-budget").diff_tolerance == 1
    assert changes(tmp_path, [pyramid([256, 256, 256])], [pyramid([257, 255, 256])]) == (0, [])
    assert kinds(changes(tmp_path, [pyramid([256, 256, 256])], [pyramid([258, 256, 256])])[1]) == [
        ("numbers-changed", "neutral")]


def test_defects_appeared_and_disappeared(tmp_path: Path) -> None:
    defect = Defect("batch-row-0", "row 1 kept row 0's chunks")
    code, found = changes(tmp_path, [press()], [press("SnapKVPress", defects=(defect,))])
    assert code == 1 and kinds(found) == [("defect-appeared", "worse")] and found[0]["defect"] == "batch-row-0"
    code, found = changes(tmp_path, [press("SnapKVPress", defects=(defect,))], [press()])
    assert code == 0 and kinds(found) == [("defect-disappeared", "better")]


def test_other_changes_are_listed_and_never_fail(tmp_path: Path) -> None:
    not_run = ClaimCheck("observation-window", SNAP, "not-run", "not run: needs the Hub")
    untraced = press("SnapKVPress", not_run, ClaimCheck("kept-fraction", BASE, "not-run", "not run"),
                     status="error", failure=Failure.PRETRAINED)
    code, found = changes(tmp_path, [press()], [untraced])
    assert code == 0 and kinds(found) == [("verdict-changed", "neutral"), ("verdict-changed", "neutral"),
                                          ("status-changed", "neutral")]
    assert found[-1]["old"]["status"] == "ok" and found[-1]["new"]["failure"] == "pretrained"
    code, found = changes(tmp_path, [press("SnapKVPress", window())], [press()])
    assert code == 0 and kinds(found) == [("claim-added", "neutral")] and found[0]["claim"] == "kept-fraction"
    code, found = changes(tmp_path, [press()], [press("SnapKVPress", window())])
    assert code == 0 and kinds(found) == [("claim-removed", "neutral")]
    # a claim added already violated is a new violation
    code, found = changes(tmp_path, [press("SnapKVPress", window())], [press("SnapKVPress", window(), fraction("violated"))])
    assert code == 1 and kinds(found) == [("became-violated", "worse")] and found[0]["old"] is None


def test_presses_are_matched_by_name_whatever_their_path(tmp_path: Path) -> None:
    moved = press()
    moved.path = "/elsewhere/kvpress/presses/snapkv_press.py"
    assert changes(tmp_path, [press()], [moved]) == (0, [])


def test_two_presses_of_one_name_are_told_apart_by_path(tmp_path: Path) -> None:
    a, b = press("MyPress", path="src/a.py"), press("MyPress", window("violated", 1), fraction(), path="src/b.py")
    code, found = changes(tmp_path, [a, press("MyPress", path="src/b.py")], [a, b])
    assert code == 1 and [c["press"] for c in found] == ["MyPress (src/b.py)"]


def test_markdown_is_a_pull_request_comment(tmp_path: Path) -> None:
    message = "kept <b>12</b> of *the* last 64 | positions"
    broken = window("violated", 12)
    broken.message = message
    out = diff(tmp_path, [press()], [press("SnapKVPress", broken, fraction(measured=0.6)), press("KnormPress")],
               "--format", "markdown", "--title", "kvpress 0.5.4 → 0.5.5")
    assert out.exit_code == 1 and out.exception is None
    text = out.stdout
    assert text.startswith("<!-- kvaudit:diff -->\n### kvpress 0.5.4 → 0.5.5\n")
    assert "**Something got worse (1 worse, 0 better, 2 other changes).**" in text
    sections = [line for line in text.splitlines() if line.startswith("#### ")]
    assert sections == ["#### Claims that became violated (1)", "#### New presses (1)",
                        "#### Changed numbers (beyond the claim's tolerance) (1)"]
    assert "- ✗ **SnapKVPress** · observation-window (SnapKV (arXiv 2404.14469)): holds → violated" in text
    assert r"kept \<b\>12\</b\> of \*the\* last 64 \| positions" in text  # escaped: renders as written
    assert "<b>" not in text
    again = diff(tmp_path, [press()], [press("SnapKVPress", broken, fraction(measured=0.6)), press("KnormPress")],
                 "--format", "markdown", "--title", "kvpress 0.5.4 → 0.5.5")
    assert again.stdout == text  # byte-stable


def test_terminal_view_piped_is_plain_and_never_cut(tmp_path: Path) -> None:
    long = window("violated", 12)
    long.message = "[bold red]not markup[/] " + "a very long message " * 40 + "END"
    out = diff(tmp_path, [press()], [press("SnapKVPress", long, fraction())])
    assert out.exit_code == 1 and out.exception is None
    assert "\x1b[" not in out.stdout  # no colour when piped
    lines = out.stdout.splitlines()
    assert any(line.strip().startswith("[bold red]not markup[/] a very long message") and line.endswith("END")
               for line in lines)
    assert any("✗ SnapKVPress · observation-window" in line and "holds → violated" in line for line in lines)
    assert lines[-1] == "Something got worse (1 worse, 0 better, 0 other changes)."


def test_json_and_output_file(tmp_path: Path) -> None:
    first = write(tmp_path / "old.json", press())
    second = write(tmp_path / "new.json", press("SnapKVPress", window("violated", 12), fraction()))
    target = tmp_path / "diff.md"
    out = run_cli("diff", first, second, "-f", "markdown", "-o", str(target))
    assert out.exit_code == 1 and out.stdout == "" and target.read_text(encoding="utf-8").startswith("<!-- kvaudit:diff")
    plain = run_cli("diff", first, second, "-o", str(tmp_path / "diff.txt"))
    text = (tmp_path / "diff.txt").read_text(encoding="utf-8")
    assert plain.exit_code == 1 and plain.stdout == "" and "\x1b[" not in text and "holds → violated" in text
    document = run_cli("diff", first, second, "-f", "json").json()
    assert document["counts"] == {"worse": 1, "better": 0, "neutral": 0}
    assert document["old"] == {"path": first, "schema": TRACE_SCHEMA, "presses": 1, "model": "embedded tiny llama", "grid": GRID}
    assert set(document["changes"][0]) == {"kind", "effect", "press", "claim", "paper", "defect", "old", "new", "message"}


def test_a_check_document_with_traces_is_read_and_one_without_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "check.json"
    old.write_text(render_json(result_of(press())), encoding="utf-8")
    new = write(tmp_path / "new.json", press("SnapKVPress", window("violated", 12), fraction()))
    out = run_cli("diff", str(old), new, "-f", "json")
    assert out.exit_code == 1 and any("records no model or grid" in w for w in out.json()["warnings"])
    assert "records no model or grid" in run_cli("diff", str(old), new).stderr  # said on stderr too
    static = AuditResult(presses=[PressReport("SnapKVPress", "snap.py", 1)])
    old.write_text(render_json(static), encoding="utf-8")
    out = run_cli("diff", str(old), new)
    assert out.exit_code == 2 and "without traces" in out.stderr


def _document(tmp_path: Path) -> dict:
    return json.loads(Path(write(tmp_path / "good.json", press())).read_text(encoding="utf-8"))


BAD_DOCUMENTS = {
    "missing": (None, "no such file or directory"),
    "not-json": ("{not json", "invalid JSON"),
    "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "array": ("[1, 2]", "a JSON list, not an object"),
    "other-schema": ('{"schema": "kvaudit.trace/1", "presses": []}', "schema 'kvaudit.trace/1'"),
    "no-schema": ('{"presses": []}', 'no "schema" key'),
    "check-baseline": ('{"schema": "kvaudit.baseline/1", "findings": []}', "schema 'kvaudit.baseline/1'"),
    "nested": ("[" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_a_bad_document_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    content, reason = BAD_DOCUMENTS[case]
    bad = tmp_path / "bad.json"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content, encoding="utf-8")
    good = write(tmp_path / "good.json", press())
    for args in ((str(bad), good), (good, str(bad))):
        out = run_cli("diff", *args)
        assert out.exit_code == 2 and out.exception is None, (case, out.stderr)
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"error: {bad}") and reason in line and len(line) < 400, line


@pytest.mark.parametrize(("break_it", "reason"), [
    (lambda d: d["presses"][0]["claims"][0].update(verdict=3), "presses[0] is not a press trace"),
    (lambda d: d["presses"][0].pop("name"), "presses[0] is not a press trace"),
    (lambda d: d.update(presses={"a": 1}), '"presses" is not a list'),
    (lambda d: d.update(model="llama"), '"model" is not an object'),
    (lambda d: d["presses"].append("SnapKVPress"), "presses[1] is not a press trace"),
])
def test_a_malformed_trace_document_is_one_line_exit_2(tmp_path: Path, break_it, reason: str) -> None:
    document = _document(tmp_path)
    broken = copy.deepcopy(document)
    break_it(broken)
    (tmp_path / "bad.json").write_text(json.dumps(broken), encoding="utf-8")
    out = run_cli("diff", str(tmp_path / "good.json"), str(tmp_path / "bad.json"))
    assert out.exit_code == 2 and out.exception is None
    [line] = out.stderr.strip().splitlines()
    assert reason in line, line


def test_a_folder_or_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    import os

    good = write(tmp_path / "good.json", press())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in (tmp_path, fifo):
        out = run_cli("diff", good, str(bad))
        assert out.exit_code == 2 and out.exception is None and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("model", "reason"), [
    ({"arch": "qwen2"}, "different models (arch 'llama' → 'qwen2')"),
    ({"layers": 4}, "different models (layers 8 → 4)"),
    ({"plan": ["96×1"], "grid": "prefills 96×1"}, "different grids"),
])
def test_audits_of_another_model_or_grid_are_refused_unless_allowed(tmp_path: Path, model: dict, reason: str) -> None:
    out = diff(tmp_path, [press()], [press()], **model)
    assert out.exit_code == 2 and out.exception is None
    [line] = out.stderr.strip().splitlines()
    assert "not comparable" in line and reason in line and "--allow-mismatch" in line
    allowed = diff(tmp_path, [press()], [press("SnapKVPress", window("violated", 1), fraction())], "--allow-mismatch",
                   **model)
    assert allowed.exit_code == 1 and f"warning: {reason}" in allowed.stderr


def test_another_model_description_is_only_a_warning(tmp_path: Path) -> None:
    out = diff(tmp_path, [press()], [press()], "-f", "json", source="local folder /data/model")
    assert out.exit_code == 0 and any("described differently" in w for w in out.json()["warnings"])


def test_targets_that_could_not_be_traced_are_a_warning(tmp_path: Path) -> None:
    result = result_of(press())
    from kvaudit.model import FileStatus

    result.files = [FileStatus("x.py", "error", "x.py: cannot import x")]
    (tmp_path / "new.json").write_text(render_trace_json(result), encoding="utf-8")
    out = run_cli("diff", write(tmp_path / "old.json", press()), str(tmp_path / "new.json"))
    assert out.exit_code == 0 and "1 target(s) could not be traced: x.py: cannot import x" in out.stderr


def test_every_mechanism_states_a_diff_tolerance() -> None:
    for mechanism in all_mechanisms():
        assert isinstance(mechanism.diff_tolerance, (int, float)) and mechanism.diff_tolerance >= 0, mechanism.id


def test_what_a_prefill_did_per_layer_and_how_the_press_was_built(tmp_path: Path) -> None:
    from kvaudit.model import TraceRun

    def with_runs(*kept: list[int], config: str = "SnapKVPress(compression_ratio=0.5)") -> PressTrace:
        trace = press()
        trace.runs = [TraceRun(512, 1, [1] * len(k), k, [None] * len(k), ratio=0.5) for k in kept]
        trace.config = config
        return trace

    assert changes(tmp_path, [with_runs([3, 2], [1, 0])], [with_runs([3, 2], [1, 0])]) == (0, [])
    code, found = changes(tmp_path, [with_runs([3, 2], [1, 0])], [with_runs([3, 2], [1, 1])])
    assert code == 0 and kinds(found) == [("trace-changed", "neutral")]
    assert found[0]["old"]["kept"] == [1, 0] and found[0]["new"]["kept"] == [1, 1] and found[0]["new"]["changed"] == 1
    assert "score_calls" not in found[0]["new"]  # only the fields that changed
    out = diff(tmp_path, [with_runs([3, 2], [1, 0])], [with_runs([3, 2], [1, 1])], "-f", "markdown")
    assert "1 of 2 prefills differ; the first, 512×1 at ratio 0.5:" in out.stdout and "kept \\[1, 0\\] → \\[1, 1\\]" in out.stdout
    found = changes(tmp_path, [with_runs([3, 2], [1, 0])], [with_runs([3, 2])])[1]
    assert kinds(found) == [("trace-changed", "neutral")] and found[0]["new"]["prefills"] == 1
    found = changes(tmp_path, [with_runs([3, 2])], [with_runs([3, 2], config="SnapKVPress(compression_ratio=0.5, w=1)")])[1]
    assert kinds(found) == [("config-changed", "neutral")]
    assert found[0]["new"]["config"] == "SnapKVPress(compression_ratio=0.5, w=1)"
