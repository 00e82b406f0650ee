"""kvaudit trace end to end: kvpress's ChunkKVPress, the reference press, and the dynamic variants.

Every cold worker start costs the torch/transformers/kvpress imports (≈5 s here), so all traces but
one run on the test session's shared worker (``shared_worker`` in conftest.py), in-process CLI runs
included. The one cold ``kvaudit`` process (ChunkKVPress with the reference) checks that a separate
process gives the very same trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("torch")
pytest.importorskip("kvpress")

from rich.console import Console  # noqa: E402

from kvaudit.mechanism import mechanism_by_id  # noqa: E402
from kvaudit.model import (  # noqa: E402
    HOLDS,
    IMPLEMENTED,
    LAYER_INDEX_REUSE,
    NOT_OBSERVED,
    OBSERVED,
    PARTIAL,
    VIOLATED,
    AuditResult,
    PressReport,
)
from kvaudit.reporters.trace_terminal import render_trace_panel, render_trace_report  # noqa: E402
from kvaudit.source import display_path  # noqa: E402
from kvaudit.targets import resolve_module  # noqa: E402
from kvaudit.codec import to_data  # noqa: E402
from kvaudit.tracer import TraceOptions, TraceStage, trace_presses  # noqa: E402
from kvaudit.tracer.compare import disagreements  # noqa: E402
from conftest import sharing_worker  # noqa: E402
from helpers import run_cli, trace_targets  # noqa: E402

DYNAMIC = ROOT / "tests" / "presses" / "dynamic"
CHUNKKV = "kvpress.presses.chunkkv_press"
HANG_TIMEOUT_S = 4.0
LAYERS = 8
# A small grid keeps the suite fast: one ratio, 512 and 768 tokens, two decoding steps (the report
# runs the full grid; tests/test_claims_catalogue.py checks the decoding steps).
GRID = {"ratios": (0.5,), "long_tokens": 768, "decode_steps": 2}
GRID_ARGS = ("--ratios", "0.5", "--long-tokens", "768", "--decode-steps", "2")
REUSE = mechanism_by_id(LAYER_INDEX_REUSE)


def reuse_seen(trace) -> str:
    """observed / partial / not-observed: what the tracer saw of layer-index-reuse."""
    check = trace.claim(LAYER_INDEX_REUSE)
    return REUSE.observation(check)


def reuse_seen_json(press: dict) -> tuple[str, str]:
    (check,) = [c for c in press["claims"] if c["id"] == LAYER_INDEX_REUSE]
    return check["verdict"], check["message"].split(":", 1)[0]

SCHEMA = {
    "type": "object",
    "required": ["schema", "model", "presses"],
    "properties": {
        "schema": {"const": "kvaudit.trace/2"},
        "model": {
            "type": "object",
            "required": ["arch", "layers", "source"],
            "properties": {"arch": {"type": "string"}, "layers": {"type": "integer"}, "source": {"type": "string"}},
        },
        "presses": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "path", "status", "message", "claims", "runs", "defects"],
                "properties": {
                    "name": {"type": "string"},
                    "path": {"type": "string"},
                    "status": {"enum": ["ok", "error"]},
                    "message": {"type": ["string", "null"]},
                    "runs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["tokens", "batch", "score_calls", "kept", "reused_from"],
                            "properties": {
                                "tokens": {"type": "integer"},
                                "batch": {"type": "integer"},
                                "score_calls": {"type": "array", "items": {"type": "integer"}},
                                "kept": {"type": "array", "items": {"type": "integer"}},
                                "reused_from": {"type": "array", "items": {"type": ["integer", "null"]}},
                            },
                        },
                    },
                    "claims": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "paper", "verdict", "expected", "measured", "where", "accepted"],
                            "properties": {
                                "id": {"type": "string"},
                                "paper": {"type": "string"},
                                "verdict": {"enum": ["holds", "violated", "not-applicable", "not-run"]},
                                "where": {"type": "object"},
                                "accepted": {"type": ["string", "null"]},
                            },
                        },
                    },
                    "defects": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "message"],
                            "properties": {
                                "id": {"enum": ["stale-indices", "batch-row-0", "crash"]},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def kvaudit(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "kvaudit", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def without_timings(data):
    """The document minus every ``timings`` key (the only non-deterministic part)."""
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k != "timings"}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data


def layers_with_calls(run: dict) -> list[int]:
    return [layer for layer, calls in enumerate(run["score_calls"]) if calls]


# ---------------------------------------------------------------------------------------------
# kvaudit trace kvpress.presses.chunkkv_press --compare-reference --format json (the CLI, cold)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunkkv_cli() -> tuple[int, dict]:
    # A cold process on purpose: its trace must equal the shared worker's (test_..._across_processes).
    out = kvaudit("trace", CHUNKKV, "--compare-reference", "--format", "json", *GRID_ARGS)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


@pytest.mark.slow
def test_chunkkv_json_matches_the_schema(chunkkv_cli) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    _, doc = chunkkv_cli
    jsonschema.validate(doc, SCHEMA)
    assert doc["model"] == {
        "arch": "llama",
        "layers": LAYERS,
        "source": doc["model"]["source"],
        "offline": True,
    }
    assert "HF_HUB_OFFLINE=1" in doc["model"]["source"]


@pytest.mark.slow
def test_chunkkv_scores_every_layer_and_reads_row_0(chunkkv_cli) -> None:
    code, doc = chunkkv_cli
    assert code == 1  # a defect
    (press,) = doc["presses"]
    assert press["name"] == "ChunkKVPress" and press["status"] == "ok"
    assert press["path"] == display_path(resolve_module(CHUNKKV))  # shown as `kvaudit check` shows it
    runs = press["runs"]
    assert (runs[0]["batch"], runs[1]["batch"]) == (1, 1) and runs[1]["tokens"] > runs[0]["tokens"]
    assert any(run["batch"] == 2 for run in runs)
    for run in runs:
        assert run["score_calls"] == [1] * LAYERS
        assert run["reused_from"] == [None] * LAYERS
        assert all(0 < kept < run["tokens"] for kept in run["kept"])
    assert reuse_seen_json(press) == (VIOLATED, NOT_OBSERVED)
    assert [d["id"] for d in press["defects"]] == ["batch-row-0"]


@pytest.mark.slow
def test_reference_reuses_on_odd_layers(chunkkv_cli) -> None:
    _, doc = chunkkv_cli
    reference = doc["presses"][0]["reference"]
    assert reference["name"] == "ChunkKVReusePress" and reference["status"] == "ok"
    assert reuse_seen_json(reference) == (HOLDS, OBSERVED)
    assert reference["defects"] == []
    assert "chunk_length=20" in reference["config"]  # same chunk length as the traced press
    for run in reference["runs"]:
        assert layers_with_calls(run) == [0, 2, 4, 6]
        assert run["reused_from"] == [None, 0, None, 2, None, 4, None, 6]
        assert run["timings"]["score_s"] > 0 and run["timings"]["compress_s"] >= run["timings"]["score_s"]


# ---------------------------------------------------------------------------------------------
# Every dynamic variant, plus two non-press targets, in one session
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants(tmp_path_factory, trace_session):
    not_a_press = tmp_path_factory.mktemp("nopress") / "not_a_press.py"
    not_a_press.write_text("class Helper:\n    pass\n")
    targets = sorted(str(p) for p in DYNAMIC.glob("*.py")) + [CHUNKKV, str(not_a_press), f"{not_a_press}::Helper"]
    with sharing_worker(trace_session):
        report = trace_targets(targets, TraceOptions(timeout=HANG_TIMEOUT_S, **GRID))
    return report, {trace.name: trace for trace in report.traces}


def test_algorithm_2_press_is_observed(variants) -> None:
    _, traces = variants
    trace = traces["Algorithm2ChunkPress"]
    assert trace.status == "ok" and trace.defects == []
    assert reuse_seen(trace) == OBSERVED and trace.claim(LAYER_INDEX_REUSE).verdict == HOLDS
    assert trace.runs[0].score_calls == [1, 0] * (LAYERS // 2)
    assert trace.runs[0].reused_from == [None, 0, None, 2, None, 4, None, 6]


def test_never_refreshed_cache_is_stale(variants) -> None:
    _, traces = variants
    trace = traces["StaleReusePress"]
    assert {d.id for d in trace.defects} == {"stale-indices"}
    assert "prefill 2" in trace.defects[0].message
    assert trace.runs[1].score_calls == [0] * LAYERS  # nothing was scored for the second prompt


def test_stale_mask_that_fails_is_stale_not_crash(variants) -> None:
    _, traces = variants
    trace = traces["StaleMaskPress"]
    assert trace.status == "error" and "IndexError" in trace.message
    assert [d.id for d in trace.defects] == ["stale-indices"]
    assert "a fresh press passes it" in trace.defects[0].message


def test_uncompressed_first_layers_are_not_reuse(variants) -> None:
    _, traces = variants
    trace = traces["LateStartPress"]
    assert reuse_seen(trace) == NOT_OBSERVED and trace.defects == []
    assert trace.runs[0].compressed == [False] * 4 + [True] * 4
    assert trace.runs[0].score_calls == [0] * 4 + [1] * 4
    assert trace.runs[0].kept[:4] == [trace.runs[0].tokens] * 4


def test_cache_and_reuse_with_score_everywhere_is_partial(variants) -> None:
    _, traces = variants
    trace = traces["ScoreEveryLayerReusePress"]
    assert reuse_seen(trace) == PARTIAL and trace.defects == []
    assert trace.runs[0].score_calls == [1] * LAYERS
    assert trace.runs[0].reused_from == [None, 0, None, 2, None, 4, None, 6]


def test_skipping_score_without_sharing_is_partial(variants) -> None:
    _, traces = variants
    trace = traces["SkipScoreOddLayersPress"]
    assert reuse_seen(trace) == PARTIAL and trace.defects == []
    assert "no sharing" in trace.claim(LAYER_INDEX_REUSE).message
    assert trace.runs[0].reused_from == [None] * LAYERS


def test_raising_press_is_a_crash_with_the_last_line(variants) -> None:
    _, traces = variants
    trace = traces["RaisingPress"]
    assert trace.status == "error"
    assert [(d.id, d.message) for d in trace.defects] == [("crash", "prefill 1 (512×1, sdpa attention) raised: RuntimeError: boom on layer 0")]
    # Its claims (every press's contracts: kept-fraction, batch-independence, …) are not-run, with the reason.
    assert "kept-fraction" in {c.id for c in trace.claims} and {c.verdict for c in trace.claims} == {"not-run"}
    assert all("boom on layer 0" in c.message for c in trace.claims)


def test_hanging_press_times_out_and_the_next_press_still_runs(variants) -> None:
    report, traces = variants
    hang = traces["HangingPress"]
    assert hang.status == "error" and hang.message.startswith("timeout")
    assert [d.id for d in hang.defects] == ["crash"]
    names = [trace.name for trace in report.traces]
    assert names.index("WellBehavedKnormPress") > names.index("HangingPress")
    assert traces["WellBehavedKnormPress"].status == "ok"
    # A ScorerPress that cites no paper: held to kvpress's contracts only, and it meets them.
    verdicts = traces["WellBehavedKnormPress"].verdicts
    assert set(verdicts.values()) == {HOLDS} and {"score-topk", "kept-fraction", "deterministic"} <= set(verdicts)


def test_non_press_targets_are_bad_input(variants) -> None:
    report, _ = variants
    assert report.exit_code == 2
    assert any("no kvpress press classes (classes defined there: Helper)" in e for e in report.error_lines)
    assert any("Helper is not a kvpress press" in e for e in report.error_lines)


@pytest.mark.slow
def test_trace_output_is_deterministic_across_processes(variants, chunkkv_cli) -> None:
    _, traces = variants
    _, doc = chunkkv_cli
    cli = {k: v for k, v in doc["presses"][0].items() if k != "reference"}
    assert without_timings(to_data(traces["ChunkKVPress"])) == without_timings(cli)


def test_terminal_view_says_what_happened(variants) -> None:
    report, _ = variants
    console = Console(record=True, width=200)
    render_trace_report(report.result, console)
    text = console.export_text()
    assert "HF_HUB_OFFLINE=1" in text and "8 layers" in text
    assert "defect batch-row-0" in text and "defect stale-indices" in text
    assert "layer-index-reuse (ChunkKV (arXiv 2502.00299)): violated — not-observed:" in text
    assert "layer-index-reuse (ChunkKV (arXiv 2502.00299)): holds — observed:" in text


# ---------------------------------------------------------------------------------------------
# Model options and bad --press expressions (one worker each)
# ---------------------------------------------------------------------------------------------


def test_local_model_folder(tmp_path: Path, shared_worker) -> None:
    from kvaudit.tinymodel import build_tiny_model

    folder = tmp_path / "tiny-mistral"
    build_tiny_model("mistral", layers=4, seed=1).save_pretrained(folder)
    out = run_cli("trace", "kvpress.presses.knorm_press", "--model", str(folder), "--tokens", "64", "--format", "json",
                  "--ratios", "0.5", "--long-tokens", "96")
    assert out.exit_code == 0, out.stderr
    doc = out.json()
    assert doc["model"]["arch"] == "mistral" and doc["model"]["layers"] == 4
    assert str(folder) in doc["model"]["source"]
    (press,) = doc["presses"]
    assert press["runs"][0]["tokens"] == 64 and press["runs"][0]["score_calls"] == [1] * 4


def test_bad_press_expression_is_one_line_exit_2_and_arch_option(shared_worker) -> None:
    out = run_cli(
        "trace", str(DYNAMIC / "algorithm2_press.py"), "--press", "NoSuchPress(1)",
        "--arch", "qwen3", "--layers", "4", "--tokens", "96", "--format", "json",
    )
    assert out.exit_code == 2 and out.exception is None
    assert out.stderr.strip().splitlines() == [
        "error: bad --press expression 'NoSuchPress(1)': NameError: name 'NoSuchPress' is not defined"
    ]
    doc = out.json()
    assert doc["model"]["arch"] == "qwen3" and doc["model"]["layers"] == 4


# ---------------------------------------------------------------------------------------------
# kvaudit check --trace: the trace stage on a static result, and the side-by-side panel
# ---------------------------------------------------------------------------------------------


def test_trace_stage_sets_traces_and_flags_disagreements(shared_worker) -> None:
    chunkkv_path = str(resolve_module(CHUNKKV))
    algorithm2 = str(DYNAMIC / "algorithm2_press.py")
    result = AuditResult(
        presses=[
            # Deliberately wrong static verdict: the tracer must contradict it.
            PressReport("ChunkKVPress", chunkkv_path, 15, verdicts={LAYER_INDEX_REUSE: IMPLEMENTED}),
            PressReport("Algorithm2ChunkPress", algorithm2, 40, verdicts={LAYER_INDEX_REUSE: IMPLEMENTED}),
            PressReport("chunk_select", algorithm2, 20),  # not a press at run time
        ]
    )
    # The static claims (here none: PressReports made by hand) decide which papers' claims are checked;
    # every press is still held to its kvpress contracts.
    from kvaudit.model import OPTION, Claim, ClaimOrigin

    for press in result.presses:
        press.claims = [Claim(LAYER_INDEX_REUSE, press.line, ClaimOrigin(OPTION, "the test", "chunkkv",
                                                                       "ChunkKV (arXiv 2502.00299)"))]
    trace_presses(result, TraceStage(TraceOptions(compare_reference=True, tokens=256, ratios=(0.5,), long_tokens=384),
                                     progress=False))
    by_name = {press.name: press for press in result.presses}
    chunkkv, algo2, bogus = (by_name[name] for name in ("ChunkKVPress", "Algorithm2ChunkPress", "chunk_select"))
    assert reuse_seen(chunkkv.trace) == NOT_OBSERVED
    assert reuse_seen(chunkkv.trace.reference) == OBSERVED
    assert chunkkv.trace.path == chunkkv_path
    assert reuse_seen(algo2.trace) == OBSERVED
    assert bogus.trace.status == "error" and "not a kvpress press" in bogus.trace.message
    assert bogus.trace.claims[0].verdict == "not-run"  # every claim answers, even for a press that never ran
    assert [pair.press for pair in disagreements(result)] == ["ChunkKVPress"]
    console = Console(record=True, width=200)
    render_trace_panel(console, result)
    text = console.export_text()
    assert "DISAGREE: static implemented expects dynamic observed, saw not-observed" in text
    assert "1 disagreement(s)" in text and "ref score()" in text


# ---------------------------------------------------------------------------------------------
# Review fixes: nothing traced, bad targets beside good ones, paths as `check` shows them,
# and traces attached by `check --trace` and `report` (one cold worker each)
# ---------------------------------------------------------------------------------------------

SMALL = ("--layers", "4", "--tokens", "96", "--long-tokens", "144", "--ratios", "0.5")  # SnapKV's window needs > 64
ALGORITHM2 = "tests/presses/dynamic/algorithm2_press.py"


@pytest.fixture
def at_root(monkeypatch, shared_worker):
    """In-process CLI runs on the shared worker, from the repository root (paths are shown relative to it)."""
    monkeypatch.chdir(ROOT)
    return shared_worker


def test_nothing_traced_because_of_the_device_exits_2(at_root) -> None:
    # No machine here has a 100th GPU: the model cannot be built, so no press can run.
    out = run_cli("trace", ALGORITHM2, "--device", "cuda:99", *SMALL, "--format", "json")
    assert out.exit_code == 2 and out.exception is None, out.stdout + out.stderr
    doc = out.json()
    (press,) = doc["presses"]
    assert press["status"] == "error" and press["defects"] == []
    assert press["message"].startswith("cannot build the model on cuda:99: ")
    # the line names the press it is about
    assert doc["errors"] == [f"no press could be traced: {ALGORITHM2}::Algorithm2ChunkPress: {press['message']}"]
    assert out.stderr.strip().splitlines() == [f"error: {doc['errors'][0]}"]


def test_unknown_device_name_is_bad_input_before_any_press(at_root) -> None:
    out = run_cli("trace", ALGORITHM2, "--device", "banana", *SMALL)
    assert out.exit_code == 2 and out.exception is None
    (line,) = out.stdout.strip().splitlines()
    assert line.startswith("error: the trace worker failed to start: --device banana: RuntimeError: ")


def test_bad_target_does_not_stop_the_good_ones_and_paths_are_relative(at_root) -> None:
    out = run_cli("trace", ALGORITHM2, "tests/presses/dynamic/nonexist.py", *SMALL, "--format", "json")
    assert out.exit_code == 2, out.stdout + out.stderr
    doc = out.json()
    assert doc["errors"] == ["tests/presses/dynamic/nonexist.py: no such file or directory"]
    (press,) = doc["presses"]
    assert press["name"] == "Algorithm2ChunkPress" and press["status"] == "ok"
    assert press["path"] == ALGORITHM2  # relative to the working directory, as `kvaudit check` shows it
    assert reuse_seen_json(press) == (HOLDS, OBSERVED)
    # the terminal view shows the trace and the error line
    out = run_cli("trace", ALGORITHM2, "nonexist.py", *SMALL, "--format", "terminal")
    assert out.exit_code == 2
    assert f"Algorithm2ChunkPress  {ALGORITHM2}" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "error: nonexist.py: no such file or directory"


def test_check_trace_attaches_traces_by_display_path(at_root) -> None:
    out = run_cli("check", ALGORITHM2, "--trace", *SMALL, "--format", "json")
    assert out.exception is None, out.stderr
    doc = out.json()
    (press,) = [p for p in doc["presses"] if p["name"] == "Algorithm2ChunkPress"]
    assert press["path"] == ALGORITHM2
    assert press["trace"]["status"] == "ok", press["trace"]
    assert press["trace"]["path"] == ALGORITHM2
    assert reuse_seen_json(press["trace"]) == (HOLDS, OBSERVED)


def test_report_attaches_traces(tmp_path: Path, at_root) -> None:
    out = run_cli("report", ALGORITHM2, "-o", str(tmp_path / "r.md"), *SMALL)
    assert out.exit_code == 0 and out.exception is None, out.stdout + out.stderr
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "- `layer-index-reuse` (ChunkKV (arXiv 2502.00299)): **holds**. observed:" in text
    assert "## Conformance matrix" in text and "not traced" not in text


# ---------------------------------------------------------------------------------------------
# One pipeline: --press builds the class it instantiates, ::Class selects, in every command
# ---------------------------------------------------------------------------------------------

TWO_PRESSES = '''
from dataclasses import dataclass

from kvpress import KnormPress


@dataclass
class FirstPress(KnormPress):
    pass


@dataclass
class SecondPress(KnormPress):
    pass
'''
TINY = {"layers": 2, "tokens": 96, "long_tokens": 144, "ratios": (0.5,), "decode_steps": 0}


def test_press_expression_builds_the_class_it_instantiates(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "two_presses.py"
    path.write_text(TWO_PRESSES)
    traced = trace_targets([str(path)], TraceOptions(press_expr="FirstPress(compression_ratio=0.25)", **TINY))
    configs = {trace.name: trace.config for trace in traced.traces}
    assert set(configs) == {"FirstPress", "SecondPress"}, traced.error_lines
    assert "compression_ratio=0.25" in configs["FirstPress"] and "compression_ratio=0.5" in configs["SecondPress"]
    # A class the run does not define is traced too, filed under its own file, with its own paper's claims.
    traced = trace_targets([str(path)], TraceOptions(press_expr="SnapKVPress(compression_ratio=0.25)", **TINY))
    by_name = {trace.name: trace for trace in traced.traces}
    assert set(by_name) == {"FirstPress", "SecondPress", "SnapKVPress"}
    assert by_name["SnapKVPress"].path.endswith("kvpress/presses/snapkv_press.py")
    assert by_name["SnapKVPress"].claim("observation-window") is not None  # SnapKV's own claim, decided statically
    assert traced.exit_code == 0, traced.error_lines


def test_class_selector_keeps_one_press_in_trace_and_check(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "two_presses.py"
    path.write_text(TWO_PRESSES)
    traced = trace_targets([f"{path}::SecondPress"], TraceOptions(**TINY))
    assert [trace.name for trace in traced.traces] == ["SecondPress"]
    out = run_cli("check", f"{path}::SecondPress", "-f", "json")
    assert [press["name"] for press in out.json()["presses"]] == ["SecondPress"]


def test_trace_and_check_agree_that_basepress_is_the_root_not_a_press(shared_worker, kvpress_presses_dir: Path) -> None:
    """One set of presses: the traced report of kvpress once had a `## BasePress` section its static part lacked."""
    from kvaudit.engine import run_check

    path = kvpress_presses_dir / "base_press.py"
    shared_worker.use(TraceOptions())
    listed = shared_worker.list_classes(str(path), str(path), None)
    assert {c.name: c.is_press for c in listed.classes}.get("BasePress") is False
    scorer = kvpress_presses_dir / "scorer_press.py"
    assert [c.name for c in shared_worker.list_classes(str(scorer), str(scorer), None).classes if c.is_press] \
        == ["ScorerPress"]
    assert [p.name for p in run_check([str(path), str(scorer)]).presses] == ["ScorerPress"]
