"""Claims that need learned attention, traced on kvaudit's tiny trained model (`--model trained`).

One worker serves the module: every example of a mechanism that reads learned attention (``VALID`` must
hold, ``INVALID`` must be violated) and kvpress's ChunkKVPress and KVzipPress, on a small grid of the
trained model's held-out text. The same claim on random weights is not applicable, never a verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvaudit.mechanism import all_mechanisms
from kvaudit.model import HOLDS, NOT_APPLICABLE, VIOLATED
from kvaudit.tracer import TraceOptions
from conftest import sharing_worker
from helpers import trace_targets

pytestmark = pytest.mark.slow

GRID = {"tokens": 512, "long_tokens": 640, "ratios": (0.8,), "decode_steps": 0}  # the default first prompt
LEARNED = [m for m in all_mechanisms() if m.needs_learned_attention]


@pytest.fixture(scope="module")
def traced(tmp_path_factory, trace_session) -> dict:
    folder = tmp_path_factory.mktemp("learned")
    cases = []
    for mechanism in LEARNED:
        for kind, examples in (("valid", mechanism.VALID), ("invalid", mechanism.INVALID)):
            for number, code in enumerate(examples, start=1):
                path = folder / f"{mechanism.id.replace('-', '_')}_{kind}_{number}.py"
                path.write_text(code.lstrip("\n"), encoding="utf-8")
                cases.append((kind, mechanism.id, path))
    targets = [str(case[2]) for case in cases] + ["kvpress.presses.chunkkv_press", "kvpress.presses.kvzip_press"]
    with sharing_worker(trace_session):
        run = trace_targets(targets, TraceOptions(model_path="trained", **GRID))
    return {"run": run, "cases": cases, "traces": {t.name: t for t in run.traces}}


def test_the_trained_model_and_its_prompts_are_used(traced) -> None:
    run = traced["run"]
    assert "trained model" in run.model.source and run.model.layers == 6
    assert not run.error_lines, run.error_lines


def test_every_learned_mechanism_example_meets_or_breaks_its_claim(traced) -> None:
    from kvaudit.source import display_path

    by_path = {t.path: t for t in traced["run"].traces}
    for kind, owner, path in traced["cases"]:
        check = by_path[display_path(path)].claim(owner)
        assert check is not None and check.verdict == (HOLDS if kind == "valid" else VIOLATED), (path.name, check)


def test_chunkkv_keeps_adjacent_layers_more_alike_than_its_scorer_with_chance_beside(traced) -> None:
    check = traced["traces"]["ChunkKVPress"].claim("layer-similarity")
    assert check.verdict == HOLDS, check.message
    assert check.measured > check.expected  # the press's Jaccard above its token-level scorer's
    assert "chance" in check.message and "held-out prompts" in check.message


def test_kvzip_runs_on_the_trained_model_with_its_own_tokenizer(traced) -> None:
    trace = traced["traces"]["KVzipPress"]
    assert trace.status == "ok" and trace.runs, trace.message


def test_on_random_weights_the_claim_is_not_applicable(trace_session, tmp_path: Path) -> None:
    path = tmp_path / "steady.py"
    similarity = next(m for m in LEARNED if m.needs_similarity)
    path.write_text(similarity.VALID[0].lstrip("\n"), encoding="utf-8")
    with sharing_worker(trace_session):
        run = trace_targets([str(path)], TraceOptions(layers=2, **GRID))
    (trace,) = run.traces
    check = trace.claim(similarity.id)
    assert check.verdict == NOT_APPLICABLE and "random weights" in check.message


def test_reuse_quality_is_measured_at_no_reuse_as_built_and_twice_the_reuse(traced) -> None:
    """Issue 18: the reference press's loss at n_reuse 1, 2 and 4 (its VALID example reuses in pairs), beside the
    whole prefix's, kept in the check's figure and shown by the report's reuse-quality table."""
    from kvaudit.model import AuditResult, PressReport
    from kvaudit.reporters.markdown import reuse_quality_lines
    from kvaudit.source import display_path

    by_path = {t.path: t for t in traced["run"].traces}
    (valid,) = [path for kind, owner, path in traced["cases"] if owner == "reuse-quality" and kind == "valid"]
    trace = by_path[display_path(valid)]
    (figure,) = trace.claim("reuse-quality").figures
    assert figure["x"] == [1, 2, 4]
    means, spreads = figure["series"]["ratio 0.8"], figure["spread"]["ratio 0.8"]
    assert all(isinstance(v, float) and 0 < v < 10 for v in [*means, *spreads[:1], figure["whole"]["ratio 0.8"]])
    assert len(set(means)) == 3  # three presses measured, not one number copied
    lines = reuse_quality_lines(AuditResult(presses=[PressReport(trace.name, trace.path, 1, trace=trace)]))
    (row,) = [line for line in lines if line.startswith(f"| {trace.name} | ratio 0.8 |")]
    assert f"| 1 / 2 / 4 | {means[0]:.3f} ± {spreads[0]:.3f} |" in row
