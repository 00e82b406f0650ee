"""Standalone reproductions (``--repro-dir``): scripts that need no kvaudit, issue drafts, the report's links.

* Every rule kvaudit writes as plain code (each mechanism's ``repro_rule``, each defect's) renders into a
  script that compiles and imports only the standard library, torch, transformers and kvpress.
* The scripts' tiny model and prompts are kvaudit's own, bit for bit.
* kvpress's findings, on a small grid: ChunkKVPress's and one of every other mechanism that has one. Each
  script exits 1 on the installed kvpress, run in a Python where kvaudit cannot be imported (a copy of
  site-packages without it, ``python -S``), and exits 0 with ``--press`` on a press that meets the rule.
* Every mechanism's ``INVALID`` example: its script exits 1; with ``--press`` on the ``VALID`` example, 0.
* The command line: ``--repro-dir`` on ``trace`` and ``report``, the report's links, a bad DIR.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvaudit.mechanism import Claimant, all_mechanisms
from kvaudit.repro import ACCEPTED_KIND, DEFECT_KIND, VIOLATED_KIND, findings, is_expression
from kvaudit.repro.defects import RULES as DEFECT_RULES
from kvaudit.repro.script import Cell, ModelSpec, Script, harness, model_code, render

ALLOWED_IMPORTS = {"argparse", "contextlib", "importlib", "math", "os", "sys", "traceback", "kvpress", "torch",
                   "transformers"}


def _scripts_of_every_rule() -> list[tuple[str, str]]:
    """(label, script text) for every rule kvaudit can write: each mechanism's, per claimant, and each defect's."""
    cell = Cell(512, 2, 2, 0.5, 8, ((512, 1, 0), (4096, 1, 1), (512, 2, 2)), (0.5, 0.8))
    found = []
    for mechanism in all_mechanisms():
        claimants: list[Claimant] = [*mechanism.papers.values(), *mechanism.contracts.values()]
        for claimant in claimants:
            rule = mechanism.repro_rule(dict(claimant.params))
            if rule is not None:
                script = Script(press="SnapKVPress", finding=mechanism.id, title="t", rule_from="r",
                                expression="SnapKVPress()", module=None, ratio_attribute="compression_ratio",
                                cell=cell, rule=rule.code, params=dict(claimant.params))
                found.append((f"{mechanism.id}:{claimant.where[:20]}", render(script)))
    for defect_id, rule in DEFECT_RULES.items():
        script = Script(press="SnapKVPress", finding=defect_id, title="t", rule_from="r", expression="SnapKVPress()",
                        module=None, ratio_attribute="compression_ratio", cell=cell, rule=rule.code)
        found.append((defect_id, render(script)))
    return found


def test_every_rule_renders_a_script_of_plain_imports() -> None:
    scripts = _scripts_of_every_rule()
    written = {label.split(":")[0] for label, _ in scripts}
    # The mechanisms with findings on kvpress 0.5.5 all have one (and the defects).
    assert {"layer-index-reuse", "chunk-selection", "observation-window", "kept-fraction", "batch-independence",
            "deterministic", "decode-compression", "score-formula", "recent-window", "attention-sinks",
            "protected-positions", "layer-budget", "pyramid-budget", "crash", "batch-row-0",
            "stale-indices"} <= written
    for label, text in scripts:
        tree = ast.parse(text, filename=label)
        compile(tree, label, "exec")
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= ALLOWED_IMPORTS, (label, imported - ALLOWED_IMPORTS)
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert "kvaudit" not in names and "__import__" not in names, label
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert {"check", "main", "prefill", "kept_positions", "build_model"} <= defined, label


def test_the_harness_never_names_kvaudit_in_code() -> None:
    tree = ast.parse(harness())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert "kvaudit" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def test_press_expressions_are_plain_calls() -> None:
    assert is_expression("ChunkKVPress(press=SnapKVPress(compression_ratio=0.5, window_size=64), chunk_length=20)")
    assert is_expression("PerLayerCompressionPress(press=SnapKVPress(), compression_ratios=[0.2, -0.3])")
    assert not is_expression("<MyPress: repr() raised ValueError>")
    assert not is_expression("MyPress(x=lambda: 1)")
    assert not is_expression("")


def test_the_scripts_model_and_prompts_are_kvaudits() -> None:
    torch = pytest.importorskip("torch")
    from kvaudit.tinymodel import build_tiny_model, make_input_ids

    namespace: dict = {"__name__": "repro_check"}
    setup = ("import importlib.util, math, os, sys, contextlib, argparse, traceback\n"
             "import torch, transformers, kvpress\nfrom transformers import DynamicCache\n"
             "PRESS = 'SnapKVPress()'; PRESS_MODULE = None; RATIO = 0.5; RATIO_ATTRIBUTE = 'compression_ratio'\n"
             "ATTENTION = 'sdpa'; VOCAB_SIZE = 4096; PROMPT_SEED = 0; DECODE_INSIDE = True\n")
    for arch in ("llama", "qwen3"):
        exec(setup + model_code(ModelSpec(arch=arch, layers=2, seed=3)) + harness(), namespace)  # noqa: S102
        ours, theirs = namespace["build_model"](), build_tiny_model(arch, layers=2, seed=3)
        assert type(ours) is type(theirs) and ours.config.to_dict() == theirs.config.to_dict()
        for (name, mine), (_, kvaudits) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
            assert torch.equal(mine, kvaudits), name
    for tokens, batch, seed in ((512, 2, 2), (5000, 1, 1)):
        assert torch.equal(namespace["make_prompt"](tokens, batch, seed), make_input_ids(tokens, batch, seed))


def test_a_rule_that_does_not_apply_exits_0_not_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A rule returns None when it does not apply to the press (no compression_ratio, no layer compressed...):
    the script says so and exits 0; it used to print "the rule is broken" and exit 1."""
    pytest.importorskip("torch")
    namespace: dict = {"__name__": "repro_check"}
    setup = ("import importlib.util, math, os, sys, contextlib, argparse, traceback\n"
             "import torch, transformers, kvpress\nfrom transformers import DynamicCache\n"
             "PRESS = 'SnapKVPress()'; PRESS_MODULE = None; RATIO = 0.5; RATIO_ATTRIBUTE = 'compression_ratio'\n"
             "ATTENTION = 'sdpa'; VOCAB_SIZE = 4096; PROMPT_SEED = 0; DECODE_INSIDE = True\n"
             "def build_model():\n    return None\n")
    exec(setup + harness(), namespace)  # noqa: S102
    for verdict, code, said in ((None, 0, "the rule does not apply"), (True, 0, "the rule holds"),
                                (False, 1, "the rule is broken")):
        namespace["check"] = lambda model, new_press, verdict=verdict: (verdict, "e", "o")
        monkeypatch.setattr(sys, "argv", ["repro.py"])
        assert namespace["main"]() == code
        assert capsys.readouterr().out.splitlines()[-1] == said


# -----------------------------------------------------------------------------------------------
# Running the scripts where kvaudit cannot be imported
# -----------------------------------------------------------------------------------------------

RUNNER = r"""
import contextlib, importlib.util, io, json, os, runpy, sys
assert importlib.util.find_spec("kvaudit") is None, "kvaudit is importable"
results = []
for script, args in json.loads(sys.argv[1]):
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code
    sys.path.pop(0)
    results.append([os.path.basename(script), args, code, out.getvalue(), "kvaudit" in sys.modules])
print(json.dumps(results))
"""


def site_without_kvaudit(folder: Path) -> Path:
    """A folder of links to every entry of torch's site-packages except kvaudit's (its package, its editable
    finder and its .pth): on PYTHONPATH under ``python -S``, kvaudit cannot be imported."""
    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.submodule_search_locations
    site = Path(list(spec.submodule_search_locations)[0]).parent
    folder.mkdir()
    for entry in site.iterdir():
        if "kvaudit" not in entry.name.lower():
            (folder / entry.name).symlink_to(entry)
    return folder


def run_isolated(jobs: list[tuple[Path, list[str]]], tmp: Path) -> dict[tuple[str, tuple[str, ...]], tuple[int, str]]:
    """Run each script (``runpy``, as ``__main__``) in one ``python -S`` process without kvaudit."""
    site = site_without_kvaudit(tmp / "site")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HOME": str(tmp)}
    done = subprocess.run([sys.executable, "-S", "-c", RUNNER, json.dumps([[str(s), a] for s, a in jobs])],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for name, args, code, out, imported in json.loads(done.stdout.strip().splitlines()[-1]):
        assert not imported, f"{name} imported kvaudit"
        results[(name, tuple(args))] = (code, out)
    return results


def test_a_press_on_stand_ins_gets_a_draft_that_says_why_and_no_script(tmp_path: Path) -> None:
    """A script without kvaudit cannot rebuild the seeded stand-ins of a press's Hub files: it would only stop
    where the press asks the Hub (kvpress 0.5.5's KVzipPress and five more did, exit 2)."""
    from kvaudit.codec import UNSET
    from kvaudit.model import VIOLATED, AuditResult, ClaimCheck, PressReport, PressTrace
    from kvaudit.repro import plan_reproductions
    from kvaudit.reporters.draft import render_draft
    from kvaudit.tracer import TraceOptions

    def report(stand_in) -> PressReport:
        check = ClaimCheck("kept-fraction", "the kvpress BasePress contract", VIOLATED, "the cache still holds it all",
                           accepted="masks entries")
        return PressReport("KVzipPress", "kvpress/presses/kvzip_press.py", 23,
                           trace=PressTrace("KVzipPress", "kvpress/presses/kvzip_press.py", "ok", stand_in=stand_in,
                                            claims=[check]))

    (on_stand_ins,) = plan_reproductions(AuditResult(presses=[report("a local byte-level tokenizer")]), tmp_path,
                                         TraceOptions())
    assert on_stand_ins.script is None
    draft = render_draft(on_stand_ins, on_stand_ins.report, "versions")
    assert ("No standalone reproduction: KVzipPress loads learned files from the Hugging Face Hub, and kvaudit ran it "
            "on seeded stand-ins for them (a local byte-level tokenizer)") in draft
    (plain,) = plan_reproductions(AuditResult(presses=[report(UNSET)]), tmp_path, TraceOptions())
    assert plain.script == tmp_path / "KVzipPress-kept-fraction.py"


def test_a_python_without_kvaudit_cannot_import_it(tmp_path: Path) -> None:
    site = site_without_kvaudit(tmp_path / "site")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)}
    # find_spec answers without importing torch (seconds), which the scripts' own runs do anyway.
    probe = ("from importlib.util import find_spec as f; print(*(f(m) is not None for m in ('torch', 'kvpress')));"
             "import kvaudit")
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.stdout.split() == ["True", "True"]
    assert done.returncode == 1 and "No module named 'kvaudit'" in done.stderr


# kvpress's findings on a small grid: (press, finding) -> a press that meets the rule. "VALID:<mechanism>" is
# the mechanism's VALID example (written beside the scripts), built as the tracer builds a press with defaults.
KVPRESS_FINDINGS = {
    ("ChunkKVPress", "layer-index-reuse"): "VALID:layer-index-reuse",
    ("ChunkKVPress", "chunk-selection"): "VALID:chunk-selection",
    ("ChunkKVPress", "batch-independence"): "SnapKVPress(compression_ratio=0.5)",
    ("ChunkKVPress", "batch-row-0"): "SnapKVPress(compression_ratio=0.5)",
    ("AdaKVPress", "kept-fraction"): "KnormPress(compression_ratio=0.5)",
    ("TOVAPress", "decode-compression"): "VALID:decode-compression",
    ("RandomPress", "deterministic"): "KnormPress(compression_ratio=0.5)",
    ("CompactorPress", "score-formula"): "LeverageScorePress(compression_ratio=0.5)",
    ("KVComposePress", "crash"): "SnapKVPress(compression_ratio=0.5)",
    ("PyramidKVPress", "pyramid-budget"): "PyramidKVPress(compression_ratio=0.5)",
    ("EntropyGatedChunkKVPress", "observation-window"): "SnapKVPress(compression_ratio=0.5)",
    ("ThinKPress", "channel-pruning"): "VALID:channel-pruning",
}
# (recent-window, protected-positions and layer-budget have no finding on kvpress 0.5.5: ObservedAttentionPress
# names H2O only in passing, Compactor's scorer presses are not held to the positions its method protects, and
# KVComposePress's budget holds where it keeps every batch row. Their reproductions are tested on the
# mechanisms' INVALID examples.)
KVPRESS_MODULES = ["chunkkv_press", "adakv_press", "tova_press", "random_press",
                   "compactor_press", "kvcompose_press", "pyramidkv_press",
                   "entropy_gated_chunkkv_press", "think_press"]
KVPRESS_GRID = dict(tokens=512, long_tokens=2048, ratios=(0.5, 0.9), decode_steps=8)  # EntropyGated: 2048


def _valid_presses(folder: Path) -> dict[str, str]:
    """Each mechanism's first VALID example as a module beside the scripts, and the expression that builds it as
    the tracer builds a press with defaults (a nested scorer, the grid's first ratio)."""
    built = {}
    for mechanism in all_mechanisms():
        if not mechanism.VALID:
            continue
        code = mechanism.VALID[0].lstrip("\n")
        module = "valid_" + mechanism.id.replace("-", "_")
        (folder / f"{module}.py").write_text(code, encoding="utf-8")
        name = re.search(r"^class (\w+)", code, re.M).group(1)
        arguments = "press=SnapKVPress(compression_ratio=0.5)" if re.search(r"^    press: ", code, re.M) else \
            "compression_ratio=0.5"
        built[mechanism.id] = f"__import__({module!r}).{name}({arguments})"
    return built


@pytest.fixture(scope="module")
def kvpress_reproductions(tmp_path_factory, trace_session) -> tuple[list, Path]:
    """kvpress's presses with findings traced on a small grid, and their reproductions written."""
    pytest.importorskip("torch")
    pytest.importorskip("kvpress")
    from conftest import ROOT, sharing_worker

    from kvaudit.config import load_config
    from kvaudit.engine import CheckOptions
    from kvaudit.pipeline import RunSettings, Stages, run
    from kvaudit.repro import write_reproductions
    from kvaudit.tracer import TraceOptions

    options = TraceOptions(**KVPRESS_GRID)
    # As `kvaudit trace --config reports/kvpress-0.5.5.toml`: the static rules off, the acceptances on.
    settings = RunSettings([f"kvpress.presses.{name}" for name in KVPRESS_MODULES], CheckOptions(),
                           Stages(static_rules=False, trace=options),
                           load_config(ROOT / "reports" / "kvpress-0.5.5.toml").acceptances, progress=False)
    with sharing_worker(trace_session):
        result = run(settings).result
    folder = tmp_path_factory.mktemp("repro")
    return write_reproductions(result, folder / "repro", options, CheckOptions()), folder


@pytest.mark.slow
def test_kvpress_findings_reproduce_without_kvaudit(kvpress_reproductions) -> None:
    written, folder = kvpress_reproductions
    scripts = {(item.press, item.finding): item for item in written}
    missing = sorted(set(KVPRESS_FINDINGS) - set(scripts))
    assert not missing, f"no reproduction written for {missing}; written: {sorted(scripts)}"
    for item in written:  # every finding has a draft; these have a script too
        assert item.draft.is_file()
    valid = _valid_presses(folder / "repro")
    jobs = []
    for key, fixed in KVPRESS_FINDINGS.items():
        script = scripts[key].script
        assert script is not None and script.is_file(), key
        fixed = valid[fixed.split(":", 1)[1]] if fixed.startswith("VALID:") else fixed
        jobs += [(script, []), (script, ["--press", fixed])]
    results = run_isolated(jobs, folder)
    for (press, finding), fixed in KVPRESS_FINDINGS.items():
        name = f"{press}-{finding}.py"
        code, out = results[(name, ())]
        assert code == 1 and "expected: " in out and "observed: " in out and "the rule is broken" in out, (name, out)
        expression = valid[fixed.split(":", 1)[1]] if fixed.startswith("VALID:") else fixed
        code, out = results[(name, ("--press", expression))]
        assert code == 0 and "the rule holds" in out, (name, expression, out)


@pytest.mark.slow
def test_a_script_runs_alone_as_python_script_py(kvpress_reproductions, tmp_path: Path) -> None:
    """The issue's own example: batch independence, run as a plain script; 0 on SnapKV, 2 on a bad --press."""
    written, _ = kvpress_reproductions
    (item,) = [i for i in written if (i.press, i.finding) == ("ChunkKVPress", "batch-independence")]
    site = site_without_kvaudit(tmp_path / "site")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-S", str(item.script), "--press", "SnapKVPress(compression_ratio=0.5)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert re.search(r"^expected: .*\nobserved: .*\nthe rule holds$", done.stdout.strip(), re.M), done.stdout
    bad = subprocess.run([sys.executable, "-S", str(item.script), "--press", "NoSuchPress()"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: bad --press expression 'NoSuchPress()'")
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_kvpress_drafts_say_what_a_maintainer_needs(kvpress_reproductions) -> None:
    written, _ = kvpress_reproductions
    by_key = {(item.press, item.finding): item for item in written}
    kinds = {item.kind for item in written}
    assert {VIOLATED_KIND, ACCEPTED_KIND, DEFECT_KIND} <= kinds
    for item in written:
        text = item.draft.read_text(encoding="utf-8")
        assert text.startswith(f"# {item.press} ")
        assert "kvpress 0.5.5" in text and "transformers " in text and "torch " in text
        assert "## The rule" in text and "## What the press does" in text and "## Source lines responsible" in text
        if item.script is not None:
            assert f"python {item.script.name}" in text
        if item.kind == ACCEPTED_KIND:
            assert f"> {item.check.accepted}" in text
    chunkkv = by_key[("ChunkKVPress", "layer-index-reuse")].draft.read_text(encoding="utf-8")
    assert "Algorithm 2" in chunkkv  # the paper's rule, with where the paper states it
    # The static index's lines responsible: KVA101 at the score() call, with its excerpt.
    assert re.search(r"`kvpress/presses/chunkkv_press\.py:\d+` \(KVA101\)", chunkkv) and "self.press.score(" in chunkkv
    batch = by_key[("ChunkKVPress", "batch-row-0")].draft.read_text(encoding="utf-8")
    assert "(KVA201)" in batch and "indices[0]" in batch
    adakv = by_key[("AdaKVPress", "kept-fraction")].draft.read_text(encoding="utf-8")
    assert "## Documented deviation" in adakv and "attention_patch.py" in adakv  # the documentation it quotes


@pytest.mark.slow
def test_every_mechanisms_examples_reproduce_without_kvaudit(tmp_path: Path, shared_worker) -> None:
    """Each mechanism that writes its rule as plain code: the script of its INVALID example exits 1, and 0 with
    --press on its VALID example (both presses are user modules: the script loads the press's own file)."""
    pytest.importorskip("kvpress")
    from helpers import trace_targets

    from kvaudit.repro import write_reproductions
    from kvaudit.tracer import TraceOptions

    options = TraceOptions(tokens=160, long_tokens=240, ratios=(0.5,), decode_steps=8)
    examples = tmp_path / "examples"
    examples.mkdir()
    owners = {}
    for mechanism in all_mechanisms():
        claimant = next(iter(mechanism.papers.values()), None) or next(iter(mechanism.contracts.values()))
        if mechanism.INVALID and mechanism.VALID and mechanism.repro_rule(dict(claimant.params)) is not None:
            path = examples / f"invalid_{mechanism.id.replace('-', '_')}.py"
            path.write_text(mechanism.INVALID[0].lstrip("\n"), encoding="utf-8")
            owners[str(path)] = mechanism.id
    result = trace_targets(sorted(owners), options).result
    written = write_reproductions(result, tmp_path / "repro", options)
    valid = _valid_presses(tmp_path / "repro")
    jobs, expected = [], {}
    for item in written:
        if item.report is not None and owners.get(str(Path(item.report.path).resolve())) == item.finding:
            assert item.script is not None, item.finding
            jobs += [(item.script, []), (item.script, ["--press", valid[item.finding]])]
            expected[item.finding] = item.script.name
    assert set(expected) == set(owners.values())
    results = run_isolated(jobs, tmp_path)
    for finding, name in expected.items():
        code, out = results[(name, ())]
        assert code == 1 and "the rule is broken" in out, (name, out)
        code, out = results[(name, ("--press", valid[finding]))]
        assert code == 0 and "the rule holds" in out, (name, valid[finding], out)


# -----------------------------------------------------------------------------------------------
# The command line
# -----------------------------------------------------------------------------------------------

SMALL_GRID = ["--ratios", "0.5", "--tokens", "160", "--long-tokens", "240"]


def _invalid_example(folder: Path, mechanism_id: str) -> Path:
    (mechanism,) = [m for m in all_mechanisms() if m.id == mechanism_id]
    path = folder / "press.py"
    path.write_text(mechanism.INVALID[0].lstrip("\n"), encoding="utf-8")
    return path


@pytest.mark.slow
def test_trace_and_report_write_reproductions_and_the_report_links_them(tmp_path: Path, shared_worker) -> None:
    pytest.importorskip("kvpress")
    from helpers import run_cli

    press = _invalid_example(tmp_path, "recent-window")
    plain = run_cli("trace", str(press), *SMALL_GRID, "--format", "json")
    traced = run_cli("trace", str(press), *SMALL_GRID, "--format", "json", "--repro-dir", str(tmp_path / "t"))
    assert traced.exception is None and traced.exit_code == plain.exit_code == 1
    assert traced.json()["presses"][0]["claims"] == plain.json()["presses"][0]["claims"]  # the output is unchanged
    assert f"reproduction(s) (a script and an issue draft each) to {tmp_path / 't'}" in traced.stderr
    written = sorted(path.name for path in (tmp_path / "t").iterdir())
    assert "HeavyHittersOnlyPress-recent-window.py" in written and "HeavyHittersOnlyPress-recent-window.md" in written
    script = (tmp_path / "t" / "HeavyHittersOnlyPress-recent-window.py").read_text(encoding="utf-8")
    assert f"PRESS_MODULE = {str(press.resolve())!r}" in script and "TOKENS = 160" in script

    output = tmp_path / "report" / "r.md"
    report = run_cli("report", str(press), *SMALL_GRID, "-o", str(output),
                     "--repro-dir", str(tmp_path / "report" / "repro"))
    assert report.exception is None and report.exit_code == 0, report.stderr
    text = output.read_text(encoding="utf-8")
    stem = "repro/HeavyHittersOnlyPress-recent-window"
    assert f"*Reproduce:* [reproduction]({stem}.py) · [issue draft]({stem}.md)" in text
    for link in re.findall(r"\]\((repro/[^)]+)\)", text):
        assert (output.parent / link).is_file(), link
    without = tmp_path / "plain" / "r.md"
    assert run_cli("report", str(press), *SMALL_GRID, "-o", str(without)).exit_code == 0
    assert "*Reproduce:*" not in without.read_text(encoding="utf-8")


def test_a_repro_dir_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path, shared_worker) -> None:
    pytest.importorskip("kvpress")
    from helpers import run_cli

    press = _invalid_example(tmp_path, "recent-window")
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    result = run_cli("trace", str(press), *SMALL_GRID, "--repro-dir", str(blocker / "repro"))
    assert result.exception is None and result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --repro-dir {blocker / 'repro'}: cannot write: ")


@pytest.mark.parametrize("command", ["trace", "report"])
def test_repro_dir_with_the_trained_model_is_refused_before_any_trace(tmp_path: Path, command: str) -> None:
    """The scripts rebuild the random tiny model: they would not reproduce what the trained model showed."""
    from helpers import run_cli

    press = _invalid_example(tmp_path, "recent-window")
    extra = ["-o", str(tmp_path / "r.md")] if command == "report" else []
    result = run_cli(command, str(press), "--model", "trained", "--repro-dir", str(tmp_path / "repro"), *extra)
    assert result.exception is None and result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --repro-dir: the scripts rebuild kvaudit's random tiny model")
    assert not (tmp_path / "repro").exists() and not (tmp_path / "r.md").exists()
