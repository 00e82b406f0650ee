"""The tracer's facts, defects and the layer-index-reuse check on hand-made observations (pure Python, fast)."""

from __future__ import annotations

import pytest

from kvaudit.model import (  # noqa: E402
    HOLDS,
    IMPLEMENTED,
    LAYER_INDEX_REUSE,
    MISSING,
    NOT_OBSERVED,
    OBSERVED,
    PARTIAL,
    VIOLATED,
    AuditResult,
    ClaimCheck,
    Defect,
    PressReport,
    PressTrace,
    TraceRun,
)
from kvaudit.rules.claim_layer_index_reuse import STATIC_TO_OBSERVED, reuse_observation  # noqa: E402
from kvaudit.tracer import verdicts  # noqa: E402
from kvaudit.tracer.compare import disagreements, verdict_pairs  # noqa: E402
from kvaudit.tracer.observations import LayerObservation, RunObservation  # noqa: E402
from kvaudit.codec import CodecError, from_data, to_data  # noqa: E402

LENGTH = 20


def layer(positions, calls: int = 1, rows: int = 1, heads: int = 2, row_positions=None) -> LayerObservation:
    """A layer that kept ``positions`` on every head of every row (or ``row_positions[r]`` on row r)."""
    per_row = row_positions or [positions] * rows
    kept = tuple(tuple(tuple(sorted(p)) for _ in range(heads)) for p in per_row)
    return LayerObservation(score_calls=calls, kept=kept, original_length=LENGTH)


def run(layers, tokens: int = LENGTH, batch: int = 1, seed: int = 0) -> RunObservation:
    return RunObservation(tokens=tokens, batch=batch, seed=seed, layers=list(layers))


ALL = range(LENGTH)
A, B, C, D = (0, 1, 2, 18, 19), (3, 4, 5, 18, 19), (6, 7, 8, 18, 19), (9, 10, 11, 18, 19)


def test_format_layers_compacts_runs() -> None:
    from kvaudit.mechanism import format_layers

    assert format_layers([0, 1, 2, 3, 5]) == "0–3, 5"
    assert format_layers([1, 3, 5, 7]) == "1, 3, 5, 7"
    assert format_layers([4, 5]) == "4, 5"
    assert format_layers([]) == ""


def test_position_spans_join_pairs_and_cut_long_lists() -> None:
    from kvaudit.mechanism import spans

    assert spans([0, 1, 2, 3, 9]) == "0–3, 9"
    assert spans([4, 5]) == "4–5"
    assert spans(range(0, 20, 2)) == "0, 2, 4, 6, … (6 more spans)"


def test_uncompressed_layer_is_not_compressed_and_keeps_everything() -> None:
    full = layer(ALL, calls=0)
    assert not full.compressed
    assert full.kept_count == LENGTH
    assert layer(A).compressed and layer(A).kept_count == len(A)


def test_reused_from_points_at_the_earliest_identical_compressed_layer() -> None:
    observation = run([layer(ALL, 0), layer(ALL, 0), layer(A), layer(A, 0), layer(B), layer(A, 0)])
    assert verdicts.reused_from(observation) == [None, None, None, 2, None, 2]


def test_algorithm_2_pattern_is_observed() -> None:
    runs = [run([layer(A), layer(A, 0), layer(B), layer(B, 0)]), run([layer(C), layer(C, 0), layer(D), layer(D, 0)])]
    verdict, reason = reuse_observation(runs)
    assert verdict == OBSERVED
    assert "layers 1, 3" in reason and "0, 2" in reason


def test_skipping_score_on_uncompressed_layers_is_not_reuse() -> None:
    # The "leaves its first layers uncompressed" press: layers 0-1 skip score() and keep everything.
    runs = [run([layer(ALL, 0), layer(ALL, 0), layer(A), layer(B)]), run([layer(ALL, 0), layer(ALL, 0), layer(C), layer(D)])]
    verdict, reason = reuse_observation(runs)
    assert verdict == NOT_OBSERVED
    assert "uncompressed" in reason


def test_sharing_with_score_on_every_layer_is_partial() -> None:
    runs = [run([layer(A), layer(A), layer(B), layer(B)]), run([layer(C), layer(C), layer(D), layer(D)])]
    verdict, reason = reuse_observation(runs)
    assert verdict == PARTIAL
    assert "although score() also runs" in reason


def test_one_coincidence_is_not_sharing() -> None:
    # Layers 0 and 1 match in the first prefill only: random weights, not a mechanism.
    runs = [run([layer(A), layer(A), layer(B)]), run([layer(C), layer(D), layer(B)])]
    assert reuse_observation(runs)[0] == NOT_OBSERVED


def test_skipping_score_without_sharing_is_partial() -> None:
    runs = [run([layer(A), layer(B, 0), layer(C), layer(D, 0)])]
    verdict, reason = reuse_observation(runs)
    assert verdict == PARTIAL
    assert "no sharing" in reason


def test_position_only_selection_is_not_sharing() -> None:
    # StreamingLLM-like: every layer keeps the same positions, for every prompt.
    same = [layer(A) for _ in range(3)]
    runs = [run(same), run([layer(A, rows=2) for _ in range(3)], batch=2, seed=2)]
    verdict, reason = reuse_observation(runs)
    assert verdict == NOT_OBSERVED
    assert "whatever the prompt" in reason


def test_no_completed_prefill_is_not_observed() -> None:
    failed = RunObservation(tokens=LENGTH, batch=1, seed=0, error="RuntimeError: boom")
    assert reuse_observation([failed])[0] == NOT_OBSERVED


def test_batch_row_0_when_rows_match_but_selection_reads_the_prompt() -> None:
    single = run([layer(A), layer(B)])
    batch = run([layer(C, rows=2), layer(D, rows=2)], batch=2, seed=2)
    defect = verdicts.batch_row_0([single, batch])
    assert defect is not None and defect.id == verdicts.BATCH_ROW_0
    assert "all 2 compressed layers" in defect.message


def test_no_batch_row_0_when_rows_differ_on_one_layer() -> None:
    single = run([layer(A), layer(B)])
    batch = run([layer(C, rows=2), layer(None, row_positions=[C, D])], batch=2, seed=2)
    assert verdicts.batch_row_0([single, batch]) is None


def test_no_batch_row_0_for_prompt_independent_selection() -> None:
    single = run([layer(A), layer(B)])
    batch = run([layer(A, rows=2), layer(B, rows=2)], batch=2, seed=2)
    assert verdicts.batch_row_0([single, batch]) is None


def test_stale_indices_when_a_fresh_press_keeps_others() -> None:
    first = run([layer(A), layer(A, 0)])
    # The longer second prompt keeps exactly the first prompt's positions, without scoring.
    second = run([LayerObservation(0, layer(A).kept, 30), LayerObservation(0, layer(A).kept, 30)], tokens=30)
    matches = verdicts.layers_matching_earlier(second, [first])
    assert matches == {0: f"1 ({first.label})", 1: f"1 ({first.label})"}
    fresh = run([LayerObservation(1, layer(C).kept, 30), LayerObservation(0, layer(C).kept, 30)], tokens=30)
    defect = verdicts.stale_defect(2, second, matches, fresh)
    assert defect is not None and defect.id == verdicts.STALE_INDICES and "layers 0, 1" in defect.message
    # A fresh press that keeps the very same indices: nothing stale.
    assert verdicts.stale_defect(2, second, matches, second) is None


def test_stale_failure_only_when_the_fresh_press_passes() -> None:
    failed = RunObservation(tokens=30, batch=1, seed=1, error="IndexError: mask")
    passes = run([layer(A)], tokens=30)
    assert verdicts.stale_failure_defect(2, failed, passes).id == verdicts.STALE_INDICES
    also_failed = RunObservation(tokens=30, batch=1, seed=1, error="IndexError: mask")
    assert verdicts.stale_failure_defect(2, failed, also_failed) is None


def test_jaccard_adjacent_and_matrix() -> None:
    observation = run([layer((0, 1, 2, 3)), layer((2, 3, 4, 5)), layer((2, 3, 4, 5))])
    assert verdicts.adjacent_jaccard(observation) == [None, 2 / 6, 1.0]
    matrix = verdicts.jaccard_matrix(observation)
    assert matrix[0][0] == 1.0 and matrix[0][1] == round(2 / 6, 4) and matrix[1][2] == 1.0


def _report(static: str | None, dynamic: str | None) -> PressReport:
    report = PressReport(name="P", path="p.py", line=1, verdicts={LAYER_INDEX_REUSE: static} if static else {})
    if dynamic is not None:
        check = ClaimCheck(LAYER_INDEX_REUSE, "ChunkKV", HOLDS if dynamic == OBSERVED else VIOLATED, f"{dynamic}: why")
        report.trace = PressTrace("P", "p.py", "ok", claims=[check])
    return report


def test_static_dynamic_mapping_and_disagreements() -> None:
    assert STATIC_TO_OBSERVED == {IMPLEMENTED: OBSERVED, PARTIAL: PARTIAL, MISSING: NOT_OBSERVED}
    result = AuditResult(
        presses=[
            _report(IMPLEMENTED, OBSERVED),
            _report(IMPLEMENTED, NOT_OBSERVED),
            _report(MISSING, OBSERVED),
            _report(PARTIAL, PARTIAL),
            _report(MISSING, None),
        ]
    )
    result.presses[4].trace = PressTrace("P", "p.py", "error", "could not build")
    pairs = verdict_pairs(result)
    assert [pair.agrees for pair in pairs] == [True, False, False, True, True]
    assert len(disagreements(result)) == 2
    assert "DISAGREE" in pairs[1].explanation and pairs[4].explanation == "not traced"


def test_codec_round_trip_keeps_contract_and_reference() -> None:
    from kvaudit.model import RunTimings

    trace = PressTrace(
        "P", "p.py", "ok",
        runs=[TraceRun(tokens=8, batch=1, score_calls=[1, 0], kept=[4, 4], reused_from=[None, 0],
                       timings=RunTimings(prefill_s=0.1))],
        claims=[ClaimCheck(LAYER_INDEX_REUSE, "ChunkKV", HOLDS, f"{OBSERVED}: why", expected=4, measured=4,
                           where={"ratio": 0.5}, runs={HOLDS: 1},
                           figures=[{"kind": "bar", "x": [0, 1], "series": {"measured": [1, 0]}}])],
        defects=[Defect("crash", "x")],
        reference=PressTrace("R", "r.py", "ok"),
    )
    data = to_data(trace)
    # The kvaudit.trace/2 contract's keys, in its order; optional keys only when set.
    assert list(data) == ["name", "path", "status", "message", "config", "settings", "claims", "runs", "defects",
                          "reference"]
    assert list(data["claims"][0]) == ["id", "paper", "verdict", "expected", "measured", "where", "accepted",
                                       "message", "runs", "figures"]
    assert "prefill_s" in data["runs"][0]["timings"] and "prefill_time_s" not in data["runs"][0]
    assert "repeat_prefill_s" not in data["runs"][0]["timings"] and "figures" not in data["reference"]
    assert from_data(data, PressTrace) == trace


@pytest.mark.parametrize(("where", "value"), [("status", 5), ("runs", [{"tokens": "many"}]), ("claims", "x")])
def test_codec_refuses_a_malformed_trace_in_one_line(where: str, value: object) -> None:
    data = to_data(PressTrace("P", "p.py", "ok"))
    data[where] = value
    with pytest.raises(CodecError) as info:
        from_data(data, PressTrace)
    assert "\n" not in str(info.value) and where in str(info.value)


def _reuse_check(runs, facts=None):
    from kvaudit.mechanism import CheckContext
    from kvaudit.rules.claim_layer_index_reuse import LayerIndexReuse

    for item in runs:
        item.ratio, item.facts = 0.5, dict(facts or {})
    return LayerIndexReuse().check(CheckContext(runs, params={"n_reuse": 2}), "ChunkKV")


def test_one_reusing_layer_is_not_algorithm_2_the_verdict_follows_the_numbers() -> None:
    # 8 layers, the last one reuses layer 6's indices: 7 scoring layers where groups of 2 give 4.
    kept = [A, B, C, D, A, B, C, C]
    runs = [run([layer(k, 0 if i == 7 else 1) for i, k in enumerate(kept)])]
    verdict, reason = reuse_observation(runs, 2)
    assert verdict == PARTIAL and "7 of 8 layers" in reason and "ceil(8/2) = 4" in reason
    check = _reuse_check(runs)
    assert (check.verdict, check.expected, check.measured) == (VIOLATED, 4, 7)
    assert check.message.startswith("partial: layer 7 skipped score()")


def test_the_press_reuse_parameter_sets_the_groups() -> None:
    # groups of 4 on 8 layers: layers 0 and 4 score, the others reuse their leader's indices
    kept = [A, A, A, A, B, B, B, B]
    runs = [run([layer(k, 1 if i % 4 == 0 else 0) for i, k in enumerate(kept)])]
    check = _reuse_check(runs, {"n_reuse": 4})
    assert (check.verdict, check.expected, check.measured) == (HOLDS, 2, 2)
    check = _reuse_check(runs)  # no parameter: the paper's N_reuse = 2 expects 4 scoring layers
    assert (check.verdict, check.expected, check.measured) == (VIOLATED, 4, 2)
    assert "N_reuse = 2 (the paper's)" in check.message
