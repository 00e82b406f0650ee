"""`kvaudit report`: the Markdown report, its figures, its determinism, and the committed kvpress audit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvaudit.engine import run_check
from kvaudit.reporters import figures
from kvaudit.reporters.markdown import ReportContext, render_markdown, static_blocks
from kvaudit.tracer import TraceOptions, TraceStage, trace_presses
from conftest import sharing_worker
from helpers import STATIC_PRESSES, run_cli

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "kvpress-0.5.5.md"


@pytest.fixture(scope="module")
def traced_chunkkv(trace_session):
    """One traced audit of kvpress's ChunkKVPress beside the reference, shared by the tests."""
    result = run_check(["kvpress.presses.chunkkv_press"])
    with sharing_worker(trace_session):
        trace_presses(result, TraceStage(TraceOptions(tokens=256, long_tokens=384, ratios=(0.5,),
                                                      compare_reference=True), progress=False))
    return result


def test_static_report_is_byte_stable_and_complete(tmp_path: Path) -> None:
    for name in ("a.md", "b.md"):
        result = run_cli("report", str(STATIC_PRESSES), "--no-trace", "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.stdout + result.stderr
    text = (tmp_path / "a.md").read_text()
    assert text == (tmp_path / "b.md").read_text()
    assert "| press | claims (paper) | static verdict | reference comparison | findings |" in text
    assert "## Conformance matrix" not in text  # nothing traced, no matrix
    blocks = static_blocks(text)
    assert "StaleGroupDictPress" in blocks and "KVA104" in blocks["StaleGroupDictPress"]
    assert "*What to do:*" in blocks["StaleGroupDictPress"]
    # line links are relative to the report's folder and point at the exact line
    assert "alg2_modulo.py#L18" in blocks["Alg2ModuloPress"]
    assert not list(tmp_path.glob("*.png"))  # no traces: no figures


def test_traced_report_has_matrix_violations_figures_and_reference(traced_chunkkv, tmp_path: Path) -> None:
    figures_by_claim, note = figures.write_figures(traced_chunkkv, tmp_path, "r")
    assert note is None
    files = [name for _, name in figures_by_claim["ChunkKVPress:layer-index-reuse"]]
    assert files == ["r-chunkkvpress-layer-index-reuse-1.png", "r-chunkkvpress-layer-index-reuse-2.png"]
    for name in files:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    text = render_markdown(traced_chunkkv, ReportContext(report_dir=tmp_path, figures=figures_by_claim))
    matrix = text.split("## Conformance matrix", 1)[1].split("\n## ", 1)[0]
    header = "| press | paper | `layer-index-reuse` | `reuse-quality` | `layer-similarity` | `chunk-selection` | `observation-window` |"
    assert header in matrix, matrix
    # reuse-quality and layer-similarity need learned attention: not applicable on random weights
    assert re.search(r"\| ChunkKVPress \| ChunkKV \(arXiv 2502.00299\) \| ✗ \| – \| – \| [✓✗] \| ✓ \|", matrix), matrix
    assert "### ChunkKVPress: `layer-index-reuse` (ChunkKV (arXiv 2502.00299))" in text
    assert "| 4 | 8 | ratio 0.5, length 256, batch 1 |" in text  # 4 scoring layers expected, 8 measured
    assert "(r-chunkkvpress-layer-index-reuse-2.png)" in text and "batch-row-0" in text
    # layer 1: scored by ChunkKVPress; skipped by the reference, which keeps layer 0's indices
    assert re.search(r"\| 1 \| 1 \| (\d+) \| — \| 0 \| \1 \| 0 \|", text)
    assert "**Comparison with the reference press**" in text


def test_report_without_matplotlib_keeps_its_tables(traced_chunkkv, tmp_path: Path, monkeypatch) -> None:
    def no_matplotlib():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(figures, "_pyplot", no_matplotlib)
    figures_by_claim, note = figures.write_figures(traced_chunkkv, tmp_path, "r")
    assert figures_by_claim == {} and "matplotlib is not installed" in note
    text = render_markdown(traced_chunkkv, ReportContext(figures_note=note))
    assert "*Figures:* left out" in text and "**Trace per layer**" in text
    assert not list(tmp_path.glob("*.png"))


def test_report_bad_target_exits_2_but_writes(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path / "missing.py"), str(STATIC_PRESSES / "alg2_modulo.py"), "--no-trace",
                     "-o", str(tmp_path / "r.md"))
    assert result.exit_code == 2 and result.exception is None
    assert "missing.py: no such file or directory" in (tmp_path / "r.md").read_text()


def test_committed_kvpress_audit_static_part_regenerates_identically(kvpress_presses_dir: Path) -> None:
    committed = static_blocks(COMMITTED.read_text(encoding="utf-8"))
    fresh = static_blocks(render_markdown(run_check(["kvpress.presses"]), ReportContext(report_dir=COMMITTED.parent)))
    assert len(fresh) >= 45
    assert fresh == committed


def test_committed_kvpress_audit_answers_the_seed_question() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "**ChunkKVPress has no layer-wise index reuse**" in summary
    assert "`score()` ran on 8 of 8 layers" in summary
    # a timed comparison with the reference, in medians of repeated runs (a saving or "no measurable difference")
    assert "(medians of 5 runs); the reference press with reuse scored on 4 layers" in summary
    assert "**Claims not met**" in summary and "**ChunkKV (arXiv 2502.00299)**" in summary
    matrix = text.split("## Conformance matrix", 1)[1].split("\n## ", 1)[0]
    # Presses that load learned files from the Hub run on seeded stand-ins; only the abstract base stays untraced.
    assert "`stand-in`: checked on a press that ran with seeded stand-ins" in matrix
    untraced = matrix.split("Presses that were not traced:", 1)[1]
    assert [line.strip() for line in untraced.strip().splitlines()] == [
        "- abstract press, not traced:", "- ScorerPress: NotImplementedError"]
    # every press of kvpress has a row, and every claim a verdict or a not-run reason
    rows = [line for line in matrix.splitlines() if line.startswith("| ") and not line.startswith(("| press", "| ---"))]
    assert len(rows) >= 45 and all(any(f"| {mark}" in row for mark in ("✓", "✗", "–", "not-run")) for row in rows)


# ---------------------------------------------------------------------------------------------
# Report polish: how each press was built, the Jaccard figure, timing noise
# ---------------------------------------------------------------------------------------------


def test_report_says_how_each_press_was_built(traced_chunkkv, tmp_path: Path) -> None:
    text = render_markdown(traced_chunkkv, ReportContext(report_dir=tmp_path))
    assert ("**Built as:** `ChunkKVPress(press=SnapKVPress(compression_ratio=0.5, window_size=64, kernel_size=5), "
            "chunk_length=20)`; the reference as `ChunkKVReusePress(press=SnapKVPress(") in text


def test_compared_presses_are_timed_several_times(traced_chunkkv) -> None:
    from kvaudit.tracer.child.timing import TIMING_REPEATS

    (press,) = [p for p in traced_chunkkv.presses if p.name == "ChunkKVPress"]
    for run in (press.trace.runs[0], press.trace.reference.runs[0]):
        assert len(run.timings.repeat_prefill_s) == len(run.timings.repeat_score_s) == TIMING_REPEATS
        assert all(t > 0 for t in run.timings.repeat_prefill_s)


def _timed_run(score_ms: list[float], prefill_ms: list[float]):
    from kvaudit.model import RunTimings, TraceRun

    return TraceRun(tokens=512, batch=1, score_calls=[1], kept=[256], reused_from=[None],
                    timings=RunTimings(score_s=score_ms[0] / 1000, prefill_s=prefill_ms[0] / 1000,
                                       repeat_score_s=[t / 1000 for t in score_ms],
                                       repeat_prefill_s=[t / 1000 for t in prefill_ms]))


def test_a_difference_within_the_spread_is_no_measurable_difference() -> None:
    from kvaudit.reporters.markdown import compare_times, prefill_time, score_time

    press = _timed_run([4.0, 4.2, 3.9, 4.1, 9.0], [40, 41, 39, 40, 80])
    noisy = _timed_run([3.8, 4.3, 3.7, 4.0, 4.1], [39, 42, 38, 40, 41])
    saves = _timed_run([2.0, 2.1, 2.0, 1.9, 2.2], [37, 38, 37, 36, 38])
    whole = prefill_time(press).value
    assert compare_times(score_time(press), score_time(noisy), whole).startswith("no measurable difference")
    assert compare_times(score_time(press), score_time(saves), whole) == "2.1 ms less (5% of the prefill)"
    assert compare_times(score_time(saves), score_time(press), whole).startswith("2.1 ms more")
    single = _timed_run([4.0], [40])
    assert "cannot tell" in compare_times(score_time(single), score_time(saves), whole)


def test_summary_never_turns_noise_into_a_saving() -> None:
    from kvaudit.model import CITATION, LAYER_INDEX_REUSE, AuditResult, Claim, ClaimOrigin, PressReport, PressTrace
    from kvaudit.reporters.markdown import reference_statements

    trace = PressTrace("P", "p.py", "ok", runs=[_timed_run([4.0, 4.2, 3.9, 4.1, 4.0], [40, 41, 39, 40, 40])])
    trace.reference = PressTrace("R", "r.py", "ok", runs=[_timed_run([3.9, 4.3, 3.8, 4.0, 4.1], [40, 40, 41, 39, 40])])
    press = PressReport("P", "p.py", 1, claims=[Claim(LAYER_INDEX_REUSE, 1, ClaimOrigin(CITATION, "class docstring", "chunkkv",
                                                                         "ChunkKV (arXiv 2502.00299)"))],
                        verdicts={LAYER_INDEX_REUSE: "missing"}, trace=trace)
    (line,) = reference_statements(AuditResult(presses=[press]))
    assert "no measurable difference" in line and " less (" not in line


def test_jaccard_figure_names_press_and_prefill_and_labels_everything(traced_chunkkv, tmp_path: Path, monkeypatch) -> None:
    drawn = []
    plt = figures._pyplot()
    monkeypatch.setattr(figures, "_pyplot", lambda: plt)
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figures to look at them
    figures.write_figures(traced_chunkkv, tmp_path, "r")
    heatmaps = [f for f in drawn if "Jaccard" in f.axes[0].get_title()]
    assert heatmaps
    for figure in heatmaps:
        heatmap, colorbar = figure.axes
        title = " ".join(heatmap.get_title().split())  # wrapped onto lines
        assert title.startswith("ChunkKVPress:") and "(256×1 at ratio 0.5; random weights: noise" in title
        assert "Jaccard" in colorbar.get_ylabel()
        layers = len(heatmap.get_images()[0].get_array())
        assert list(heatmap.get_xticks()) == list(range(layers)) == list(heatmap.get_yticks())
        assert [t.get_text() for t in heatmap.get_xticklabels()] == [str(n) for n in range(layers)]
    monkeypatch.undo()
    for figure in drawn:
        plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Figures keep their whole title
# ---------------------------------------------------------------------------------------------

LONG_TITLE = ("ChunkKVPress: Jaccard similarity of the indices kept by each pair of layers (512×1 at ratio 0.5), "
              "a title longer than any figure is wide")


@pytest.mark.parametrize("spec", [
    {"kind": "heatmap", "matrix": [[1.0, 0.5], [0.5, 1.0]], "x_label": "layer", "y_label": "layer",
     "value_label": "Jaccard similarity"},
    {"kind": "line", "x": [0, 1, 2], "series": {"measured": [3, 2, 1]}, "x_label": "layer", "y_label": "kept"},
], ids=["heatmap", "line"])
def test_a_long_figure_title_is_wrapped_inside_the_saved_figure(spec: dict, tmp_path: Path, monkeypatch) -> None:
    drawn = []
    plt = figures._pyplot()
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figure to measure it
    figures._draw(plt, {**spec, "title": LONG_TITLE}, tmp_path / "f.png")
    (figure,) = drawn
    title = figure.axes[0].title
    assert " ".join(title.get_text().split()) == LONG_TITLE  # wrapped, never shortened
    extent = title.get_window_extent(figure.canvas.get_renderer())
    inside = figure.bbox
    assert inside.x0 <= extent.x0 and extent.x1 <= inside.x1 and inside.y0 <= extent.y0 and extent.y1 <= inside.y1, \
        (extent, inside)
    monkeypatch.undo()
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# The summary: always says something; the reference comparison only where reuse is claimed
# ---------------------------------------------------------------------------------------------


def _press(name: str, claims: list[str], trace_claims=(), reference: bool = True, verdicts=None):
    from kvaudit.model import CITATION, Claim, ClaimOrigin, PressReport, PressTrace

    origin = ClaimOrigin(CITATION, "class docstring", "chunkkv", "ChunkKV (arXiv 2502.00299)")
    trace = PressTrace(name, "p.py", "ok", runs=[_timed_run([4.0, 4.2, 3.9, 4.1, 4.0], [40, 41, 39, 40, 40])],
                       claims=list(trace_claims))
    if reference:
        trace.reference = PressTrace("ChunkKVReusePress", "r.py", "ok",
                                     runs=[_timed_run([2.0, 2.1, 2.0, 1.9, 2.2], [37, 38, 37, 36, 38])])
    return PressReport(name, "p.py", 1, claims=[Claim(c, 1, origin) for c in claims], verdicts=dict(verdicts or {}),
                       trace=trace)


def test_the_reference_comparison_is_shown_only_for_presses_that_claim_reuse() -> None:
    from kvaudit.model import LAYER_INDEX_REUSE, AuditResult, ClaimCheck
    from kvaudit.reporters.markdown import reference_statements, summary_table

    claimer = _press("ChunkyPress", [LAYER_INDEX_REUSE], verdicts={LAYER_INDEX_REUSE: "missing"})
    plain = _press("NormPress", [], [ClaimCheck("kept-fraction", "the kvpress BasePress contract", "holds", "ok")])
    result = AuditResult(presses=[claimer, plain])
    lines = reference_statements(result)
    assert len(lines) == 1 and lines[0].startswith("- ChunkyPress:")
    rows = {row.split(" | ")[0].lstrip("| "): row for row in summary_table(result)[2:]}
    assert "score() 1 vs 1 calls" in rows["ChunkyPress"] and " | — | none |" in rows["NormPress"]
    text = render_markdown(result, ReportContext())
    sections = text.split("\n## NormPress", 1)
    assert "**Comparison with the reference press**" in sections[0]  # ChunkyPress's own section
    assert "reference" not in sections[1]  # NormPress's: no comparison, no reference columns
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "- ChunkyPress:" in summary and "NormPress" not in summary


def test_a_difference_that_rounds_to_zero_is_no_measurable_difference() -> None:
    from kvaudit.reporters.markdown import compare_times, prefill_time, score_time

    fast = _timed_run([0.10, 0.10, 0.10, 0.10, 0.10], [29, 29, 29, 29, 29])
    faster = _timed_run([0.06, 0.06, 0.06, 0.06, 0.06], [29, 29, 29, 29, 29])  # 0.04 ms apart, no spread
    said = compare_times(score_time(fast), score_time(faster), prefill_time(fast).value)
    assert said.startswith("no measurable difference") and "0.0 ms less" not in said
    single = _timed_run([0.10], [29])
    assert compare_times(score_time(single), score_time(_timed_run([0.08], [29])), 0.029).startswith(
        "no measurable difference")
    # a real but small saving is never a "0%" share
    small = _timed_run([0.60, 0.60, 0.60, 0.60, 0.60], [290, 290, 290, 290, 290])
    said = compare_times(score_time(small), score_time(faster), prefill_time(small).value)
    assert said == "0.5 ms less (<1% of the prefill)"


def _summary(result) -> str:
    return render_markdown(result, ReportContext()).split("## Summary\n", 1)[1].split("\n## ", 1)[0].strip()


def test_the_summary_always_says_something() -> None:
    from kvaudit.model import NOT_RUN, AuditResult, ClaimCheck, PressReport, PressTrace

    assert _summary(AuditResult()) == "No press class was found in the targets."
    static_only = _summary(AuditResult(presses=[PressReport("PlainPress", "base.py", 7)]))
    assert static_only.startswith("No press was traced: static audit only. 1 press(es) audited")
    not_run = PressReport("PlainPress", "base.py", 7, trace=PressTrace(
        "PlainPress", "base.py", "error", "raised", claims=[ClaimCheck("kept-fraction", "contract", NOT_RUN, "no")]))
    assert "No claim was checked on the tiny model" in _summary(AuditResult(presses=[not_run]))
    holds = _press("NormPress", [], [ClaimCheck("kept-fraction", "contract", "holds", "ok")], reference=False)
    assert _summary(AuditResult(presses=[holds])).endswith("Every checked claim holds.")


def test_the_summary_names_defects_even_when_every_claim_holds() -> None:
    from kvaudit.model import AuditResult, ClaimCheck, Defect

    press = _press("RowZeroPress", [], [ClaimCheck("kept-fraction", "contract", "holds", "ok")], reference=False)
    press.trace.defects.append(Defect("batch-row-0", "row 1 kept row 0's indices"))
    summary = _summary(AuditResult(presses=[press]))
    assert summary.startswith("1 of 1 press(es) ran on the tiny model.")
    assert "Every checked claim holds. 1 defect(s) were seen on the tiny model (listed below)." in summary
    defects = summary.split("**Defects on the tiny model**", 1)[1]
    assert "- RowZeroPress `batch-row-0`: row 1 kept row 0's indices" in defects


def test_static_verdicts_have_their_own_label_after_the_accepted_deviations() -> None:
    from kvaudit.model import LAYER_INDEX_REUSE, AuditResult, ClaimCheck

    accepted = ClaimCheck("kept-fraction", "contract", "violated", "too much kept; details", accepted="documented")
    reuse = ClaimCheck(LAYER_INDEX_REUSE, "ChunkKV (arXiv 2502.00299)", "violated", "not-observed: 8 of 8; more")
    press = _press("ChunkyPress", [LAYER_INDEX_REUSE], [reuse, accepted], verdicts={LAYER_INDEX_REUSE: "missing"})
    summary = _summary(AuditResult(presses=[press]))
    order = [summary.index(label) for label in ("**Claims not met**", "**Accepted deviations**", "**Static verdicts**",
                                                "**Time in `score()` beside the reference press**")]
    assert order == sorted(order)
    static_part = summary.split("**Static verdicts**", 1)[1].split("**Time in", 1)[0]
    assert "**ChunkyPress has no layer-wise index reuse**" in static_part
    accepted_part = summary.split("**Accepted deviations**", 1)[1].split("**Static verdicts**", 1)[0]
    assert "has no layer-wise index reuse" not in accepted_part


def test_the_summary_shortens_a_message_at_its_first_clause_outside_parentheses() -> None:
    from kvaudit.reporters.markdown import _short

    assert _short("Jaccard 0.692 against 0.684 (chance 0.035; 4 prompts, spread 0.158) (512×1); 2 of 3 runs") \
        == "Jaccard 0.692 against 0.684 (chance 0.035; 4 prompts, spread 0.158) (512×1)"
    assert _short("layer 0 keeps 408 of 4096; more.") == "layer 0 keeps 408 of 4096"
    assert _short("no clause at all.") == "no clause at all"
