"""Stand-ins for Hub files: kvpress's presses that load learned parts run on seeded stand-ins (issue 16, part 3).

The nine presses of kvpress 0.5.5 that load a learned part made for a named model (Q-filters, head
patterns, a surrogate, gates, a budget curve, statistics, restore embeddings, a tokenizer) run on the
tiny model with seeded stand-ins of the right shapes (:mod:`kvaudit.tracer.child.standins`); the trace
says so, and a load no stand-in covers still gets the plain Hub reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kvpress")

from kvaudit.codec import to_data  # noqa: E402
from kvaudit.engine import CheckOptions  # noqa: E402
from kvaudit.mechanism import mechanism_by_id  # noqa: E402
from kvaudit.model import NOT_CHECKABLE, NOT_RUN, Failure  # noqa: E402
from kvaudit.tracer import TraceOptions  # noqa: E402
from kvaudit.tracer.child import standins  # noqa: E402
from kvaudit.tracer.child.settings import load_settings, stand_in_for  # noqa: E402
from helpers import run_cli, trace_targets  # noqa: E402

pytestmark = pytest.mark.slow

# Every press of kvpress 0.5.5 that loads a learned part from the Hub, with its module.
HUB_PRESSES = {
    "QFilterPress": "qfilter_press", "DuoAttentionPress": "duo_attention_press", "KVzapPress": "kvzap_press",
    "FastKVzipPress": "fastkvzip_press", "RestoreKVPress": "restorekv_press",
    "ExpectedAttentionStatsPress": "expected_attention_with_stats", "KVzipPress": "kvzip_press",
    "KVgradPress": "kvgrad_press", "LUKVPress": "lukv_press",
}
# 512 tokens: DuoAttention's streaming heads keep the released sink 128 + recent 256, and mask the rest.
GRID = TraceOptions(layers=2, tokens=512, long_tokens=576, ratios=(0.5,), decode_steps=2)
SHAPES = standins.Shapes(layers=2, heads=4, kv_heads=2, head_dim=32, hidden=128, vocab=4096, dtype=torch.float32,
                         device=torch.device("cpu"))


@pytest.fixture(scope="module")
def hub_traces(trace_session) -> dict:
    from conftest import sharing_worker

    targets = [f"kvpress.presses.{module}" for module in dict.fromkeys(HUB_PRESSES.values())]
    with sharing_worker(trace_session):
        report = trace_targets(targets, GRID)
    return {trace.name: trace for trace in report.traces if trace.name in HUB_PRESSES}


# ---------------------------------------------------------------------------------------------
# The declarations and the factories
# ---------------------------------------------------------------------------------------------


def test_every_hub_press_has_a_stand_in_and_every_declaration_is_known() -> None:
    import kvpress

    table = load_settings()
    for name in HUB_PRESSES:
        settings = stand_in_for(getattr(kvpress, name))
        assert settings is not None and settings.stand_in in standins.FACTORIES, name
        assert settings.why and "stand" in settings.why, name  # the report says why it ran so
    for name, settings in table.items():
        assert settings.stand_in is None or settings.stand_in in standins.FACTORIES, name
        assert all(mechanism_by_id(claim) is not None for claim in settings.not_checkable), name


def test_a_subclass_inherits_its_kvpress_base_stand_in_and_others_get_none() -> None:
    from kvpress import KnormPress, QFilterPress

    class MyFilters(QFilterPress):
        pass

    assert stand_in_for(MyFilters).stand_in == "q-filters"
    assert stand_in_for(KnormPress) is None


@pytest.mark.parametrize("factory", [standins.random_q_filters, standins.random_budget_curve,
                                     lambda shapes, seed: standins.random_head_pattern(shapes, seed)[2],
                                     lambda shapes, seed: standins.random_query_stats(shapes, seed).query_cov.data,
                                     lambda shapes, seed: standins.random_fastkvzip_gates(shapes, seed)[1].k_base.data,
                                     lambda shapes, seed: standins.random_kvzap_surrogate(shapes, "mlp", seed)
                                     .layers[1][0].weight.data])
def test_stand_ins_are_seeded(factory) -> None:
    first, again, other = (torch.as_tensor(factory(SHAPES, seed)) for seed in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_stand_ins_have_the_shapes_the_presses_read() -> None:
    assert standins.random_q_filters(SHAPES).shape == (2, 2, 32)
    assert torch.allclose(standins.random_q_filters(SHAPES).norm(dim=-1), torch.ones(2, 2))
    sink, recent, gates = standins.random_head_pattern(SHAPES)
    assert (sink, recent) == (128, 256) and gates.shape == (2, 2) and ((0 <= gates) & (gates < 1)).all()
    curve = standins.random_budget_curve(SHAPES)  # one row per target ratio 0.01 .. 0.99, as LU-KV's files
    assert curve.shape == (99, 2, 2) and (curve >= 0).all() and (curve <= 1).all()
    assert [round(float(row.mean()), 9) for row in curve] == [round((t + 1) / 100, 9) for t in range(99)]
    stats = standins.random_query_stats(SHAPES)
    assert stats.query_mean.shape == (2, 4, 32) and bool((torch.linalg.eigvalsh(stats.query_cov.data) > 0).all())
    hidden = torch.randn(1, 10, 128)
    assert standins.random_kvzap_surrogate(SHAPES, "linear").layers[0](hidden).shape == (1, 10, 2)
    assert standins.random_fastkvzip_gates(SHAPES)[0](hidden).shape == (1, 2, 10)


def test_the_same_seed_gives_the_same_selection_and_another_seed_another() -> None:
    from kvpress import QFilterPress

    from kvaudit.tinymodel import build_tiny_model
    from kvaudit.tracer.child.runner import RunSetup, observe_run
    from kvaudit.tracer.child.settings import PressSettings
    from kvaudit.tracer.options import RunSpec

    model = build_tiny_model("llama", layers=2, seed=0)
    spec, setup = RunSpec(tokens=128, batch=1, seed=3), RunSetup(PressSettings("QFilterPress"))

    def kept(seed: int | None) -> list:
        press = QFilterPress(compression_ratio=0.5)
        with standins.StandIns(model) as stand_ins:
            assert [a.kind for a in stand_ins.put_into(press)] == ["q-filters"]
            if seed is not None:
                filters = standins.random_q_filters(stand_ins.shapes, seed)
                press.load_q_filters = lambda name: filters
            observation = observe_run(model, press, spec, setup, ratio=0.5)
        assert observation.ok, observation.error
        return [layer.kept for layer in observation.layers]

    assert kept(None) == kept(None) == kept(standins.SEED)
    assert kept(1) != kept(None)


# ---------------------------------------------------------------------------------------------
# The presses run, and their traces say so
# ---------------------------------------------------------------------------------------------


def test_every_hub_press_runs_on_its_stand_in_and_its_claims_are_checked(hub_traces) -> None:
    assert set(hub_traces) == set(HUB_PRESSES)
    for name, trace in hub_traces.items():
        assert trace.status == "ok" and trace.defects == [], (name, trace.message, trace.defects)
        assert trace.stand_in and "seed" in trace.stand_in or "tokenizer" in trace.stand_in, name
        assert trace.runs and trace.claims, name
        for check in trace.claims:
            assert check.verdict != NOT_RUN, (name, check.id, check.message)
            assert check.stand_in is True or check.verdict == NOT_CHECKABLE, (name, check.id)


def test_duoattention_streams_the_heads_its_stand_in_gates_rank_lowest(hub_traces) -> None:
    """Recomputed here from the stand-in's gate values: the share of heads with the lowest gates keeps
    sink 128 + recent 256 of 512 positions, the other heads keep everything."""
    import numpy as np

    sink, recent, gates = standins.random_head_pattern(SHAPES)
    streaming = np.zeros(gates.shape, dtype=bool)
    streaming.flat[np.argsort(gates, axis=None)[:round(gates.size * 0.5)]] = True
    first = hub_traces["DuoAttentionPress"].runs[0]
    assert (first.tokens, first.ratio) == (512, 0.5)
    expected = [512 - (512 - sink - recent) * int(row.sum()) / gates.shape[1] for row in streaming]
    assert first.kept == [round(value) for value in expected] and min(first.kept) < 512


def test_lukv_keeps_what_its_stand_in_curve_allots(hub_traces) -> None:
    """Per layer, the heads keep round((1 - curve[ratio, layer, head]) · L) positions between them."""
    curve = standins.random_budget_curve(SHAPES)[49]  # ratio 0.5
    first = hub_traces["LUKVPress"].runs[0]
    expected = [round(float((1 - row).sum()) * first.tokens / len(row)) for row in curve]
    assert [abs(kept - want) <= 1 for kept, want in zip(first.kept, expected)] == [True, True], (first.kept, expected)


def test_the_json_and_the_report_mark_stand_in_runs(hub_traces, shared_worker, tmp_path: Path) -> None:
    result = run_cli("trace", "kvpress.presses.qfilter_press", "--layers", "2", "--tokens", "128",
                     "--long-tokens", "160", "--ratios", "0.5", "--decode-steps", "1", "--format", "json")
    (press,) = result.json()["presses"]
    assert press["stand_in"].startswith("random unit Q-filters (2 layers × 2 KV heads × 32 channels), seed 0")
    assert list(press).index("stand_in") == list(press).index("settings") + 1  # additive, after settings
    assert press["claims"] and all(claim["stand_in"] is True for claim in press["claims"])
    terminal = run_cli("trace", "kvpress.presses.qfilter_press", "--layers", "2", "--tokens", "128",
                       "--long-tokens", "160", "--ratios", "0.5", "--decode-steps", "1")
    assert "  stand-in: random unit Q-filters" in terminal.stdout and "holds (stand-in)" in terminal.stdout
    report = tmp_path / "report.md"
    run_cli("report", "kvpress.presses.qfilter_press", "--layers", "2", "--tokens", "128", "--long-tokens", "160",
            "--ratios", "0.5", "--decode-steps", "1", "-o", str(report))
    text = report.read_text(encoding="utf-8")
    matrix = text.split("## Conformance matrix", 1)[1].split("\n## ", 1)[0]
    assert "| QFilterPress |" in matrix and "✓ stand-in" in matrix and "`stand-in`: checked on a press" in matrix
    assert "*Ran with stand-ins for its Hub files:* random unit Q-filters" in text


def test_a_claim_that_judges_the_learned_values_is_not_checkable(shared_worker) -> None:
    """ExpectedAttentionStatsPress cites no paper: --claim gives it score-formula, which its statistics decide."""
    options = TraceOptions(layers=2, tokens=128, long_tokens=160, ratios=(0.5,), decode_steps=1)
    report = trace_targets(["kvpress.presses.expected_attention_with_stats"], options,
                           check=CheckOptions(forced_claims=["score-formula"], static_rules=False))
    (trace,) = [t for t in report.traces if t.name == "ExpectedAttentionStatsPress"]
    formula = trace.claim("score-formula")
    assert formula.verdict == NOT_CHECKABLE and formula.stand_in is not True
    assert "query statistics measured on a dataset" in formula.message and "stand-in" in formula.message
    assert trace.claim("kept-fraction").stand_in is True  # the mechanism around them is checked
    claims = {claim["id"]: claim for claim in json.loads(json.dumps(to_data(trace)))["claims"]}
    assert claims["score-formula"]["verdict"] == "not-checkable" and "stand_in" not in claims["score-formula"]


# ---------------------------------------------------------------------------------------------
# What no stand-in covers keeps the plain Hub reason
# ---------------------------------------------------------------------------------------------

UNCOVERED = '''
from dataclasses import dataclass

from huggingface_hub import hf_hub_download
from kvpress import KnormPress, QFilterPress


@dataclass
class OwnFilters(QFilterPress):  # loads its own file: QFilterPress's stand-in does not feed this load
    def post_init_from_model(self, model):
        hf_hub_download("someone/filters", "filters.pt")


@dataclass
class SharedFilters(QFilterPress):  # keeps QFilterPress's loading: the stand-in feeds it
    pass


@dataclass
class Downloads(KnormPress):  # no kvpress base with a stand-in
    def post_init_from_model(self, model):
        hf_hub_download("someone/scorer", "scorer.pt")
'''


@pytest.mark.parametrize("expression", [None, "DuoAttentionPress(head_compression_ratio=0.5, on_the_fly_scoring=True)"])
def test_a_load_no_stand_in_covers_gets_the_plain_hub_reason(tmp_path: Path, shared_worker, expression) -> None:
    path = tmp_path / "uncovered.py"
    path.write_text(UNCOVERED, encoding="utf-8")
    options = TraceOptions(layers=2, tokens=96, long_tokens=128, ratios=(0.5,), decode_steps=0, press_expr=expression)
    targets = ["kvpress.presses.duo_attention_press"] if expression else [f"{path}::OwnFilters", f"{path}::Downloads",
                                                                           f"{path}::SharedFilters"]
    traces = {t.name: t for t in trace_targets(targets, options).traces}
    for name in ("DuoAttentionPress",) if expression else ("OwnFilters", "Downloads"):
        trace = traces[name]
        assert trace.status == "error" and trace.failure is Failure.PRETRAINED and trace.defects == [], name
        assert trace.message.startswith("needs files made for a named pretrained model (a download from the Hugging "
                                        "Face Hub; kvaudit runs offline, HF_HUB_OFFLINE=1): needs "), trace.message
        assert not trace.stand_in and all(c.verdict == NOT_RUN and c.stand_in is not True for c in trace.claims)
    if not expression:  # the subclass that keeps kvpress's loading runs on the inherited stand-in
        shared = traces["SharedFilters"]
        assert shared.status == "ok" and shared.stand_in.startswith("random unit Q-filters"), shared.message
