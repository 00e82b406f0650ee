"""How the tracer reports failures: the exit-code rule whatever the exception, memory, internal errors.

The rule (README, docs/trace.md): whatever the type of what the user's code raises (an Exception,
``SystemExit``, ``KeyboardInterrupt``), a press that cannot be built is reported and is not a
defect (exit 0 on its own), a press that raises in a prefill is a ``crash`` (exit 1), and a module
that cannot be imported is bad input (exit 2). A failure of the tracer itself is exit 2, never 1.
Everything here runs on the suite's shared worker, or without one.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kvaudit.tracer import TraceOptions
from kvaudit.source import display_path
from helpers import run_cli, trace_targets

ROOT = Path(__file__).resolve().parents[1]
# The smallest prompt SnapKV's 64-token window accepts, on a one-ratio grid.
SMALL = TraceOptions(layers=2, tokens=96, long_tokens=144, ratios=(0.5,))

PRESSES = textwrap.dedent('''
    import os
    import sys
    import time
    from dataclasses import dataclass

    from kvpress import KnormPress


    @dataclass
    class ExitsInConstructor(KnormPress):
        def __post_init__(self):
            sys.exit(3)


    @dataclass
    class RaisesInConstructor(KnormPress):
        def __post_init__(self):
            raise ValueError("bad defaults")


    @dataclass
    class InterruptsInConstructor(KnormPress):
        def __post_init__(self):
            raise KeyboardInterrupt


    @dataclass
    class ExitsInPrefill(KnormPress):
        def score(self, *args, **kwargs):
            sys.exit(4)


    @dataclass
    class InterruptsInPrefill(KnormPress):
        def score(self, *args, **kwargs):
            raise KeyboardInterrupt


    @dataclass
    class RaisesInPrefill(KnormPress):
        def score(self, *args, **kwargs):
            raise RuntimeError("boom")


    @dataclass
    class HungryPress(KnormPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            if not hasattr(self, "block"):
                self.block = bytearray(512 << 20)  # more than the test's --memory-limit
            return super().score(module, hidden_states, keys, values, attentions, kwargs)


    @dataclass
    class ForkingHungryPress(KnormPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            if not hasattr(self, "children"):  # three processes, each under the limit, together over it
                self.children = []
                for _ in range(3):
                    pid = os.fork()
                    if pid == 0:
                        block = bytearray(200 << 20)
                        time.sleep(5)
                        os._exit(0)
                    self.children.append(pid)
                for pid in self.children:
                    os.waitpid(pid, 0)
            return super().score(module, hidden_states, keys, values, attentions, kwargs)


    @dataclass
    class NeedsTheTokenizer(KnormPress):  # as KVzipPress: the tokenizer named by the model's name_or_path
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(module.config.name_or_path)
            return super().score(module, hidden_states, keys, values, attentions, kwargs)
''')


@pytest.fixture(scope="module")
def presses(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("failing") / "failing_presses.py"
    path.write_text(PRESSES)
    return path


def trace_one(path: Path, name: str, **options):
    options = TraceOptions(layers=2, tokens=96, long_tokens=144, ratios=(0.5,), **options)
    report = trace_targets([f"{path}::{name}"], options)
    (trace,) = report.traces
    return report, trace


@pytest.mark.parametrize("name", ["ExitsInConstructor", "RaisesInConstructor", "InterruptsInConstructor"])
def test_a_constructor_that_raises_anything_is_the_press_not_the_machine(presses: Path, name: str, shared_worker) -> None:
    report, trace = trace_one(presses, name)
    assert trace.status == "error" and trace.defects == []
    assert trace.message.startswith(f"cannot build {name} with defaults: ")
    # The press's doing, never a crash; but a run that traced nothing is not a clean gate (as for a
    # press that needs constructor arguments): exit 2, one line that says why.
    assert report.error_lines == [f"no press could be traced: {name}: {trace.message}"]
    assert report.exit_code == 2


@pytest.mark.parametrize(("name", "raised"), [
    ("ExitsInPrefill", "SystemExit: 4"),
    ("InterruptsInPrefill", "KeyboardInterrupt"),
    ("RaisesInPrefill", "RuntimeError: boom"),
])
def test_a_prefill_that_raises_anything_is_a_crash(presses: Path, name: str, raised: str, shared_worker) -> None:
    report, trace = trace_one(presses, name)
    assert [(d.id, d.message) for d in trace.defects] == [("crash", f"prefill 1 (96×1, ratio 0.5, sdpa attention) raised: {raised}")]
    assert report.error_lines == [] and report.exit_code == 1


def test_a_press_that_needs_the_model_tokenizer_says_so_in_plain_words(presses: Path, shared_worker) -> None:
    """KVzipPress and KVgradPress load the tokenizer named by the model; the tiny model has no name."""
    report, trace = trace_one(presses, "NeedsTheTokenizer")
    assert trace.status == "error" and trace.defects == [] and report.exit_code == 2  # not run, not a crash
    reason = "needs files made for a named pretrained model"
    assert trace.message.startswith(f"{reason} (a download from the Hugging Face Hub; kvaudit runs offline, "
                                    "HF_HUB_OFFLINE=1): needs the model's tokenizer from the Hugging Face Hub "
                                    "(AutoTokenizer.from_pretrained(''), named after the model; the tiny model is "
                                    "built locally and has no name): "), trace.message
    original = trace.message.rsplit("has no name): ", 1)[1]
    assert original.split(":", 1)[0].endswith("Error") and len(original) <= 100  # the error itself, short
    assert all(c.verdict == "not-run" for c in trace.claims)


def test_a_hub_explanation_comes_from_the_loader_the_press_called() -> None:
    from kvaudit.model import Failure
    from kvaudit.tracer.errors import hub_failure, press_failure

    class KVzapModel:  # a loader named after its weights, as huggingface_hub's mixin gives
        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None):
            raise OSError(f"Repo id must use alphanumeric chars: {pretrained_model_name_or_path!r}.")

    def post_init(name: str) -> None:
        KVzapModel.from_pretrained(f"nvidia/KVzap-mlp-{name}")

    try:
        post_init("")
    except OSError as error:
        said = hub_failure(error, f"OSError: {error}", model_name="")
        kind = press_failure(error, first_run=True)
    assert said == ("needs KVzapModel files from the Hugging Face Hub (KVzapModel.from_pretrained('nvidia/KVzap-mlp-'), "
                    "named after the model; the tiny model is built locally and has no name): "
                    "OSError: Repo id must use alphanumeric chars: 'nvidia/KVzap-mlp-'.")
    assert kind is Failure.PRETRAINED  # read from the frames, not from the words of the message
    # a bare hf_hub_download (RestoreKVPress): huggingface_hub refuses the id before any frame of ours names it
    import huggingface_hub

    try:
        huggingface_hub.hf_hub_download("higokri/RestoreKV-", "restore_embeddings.safetensors")
    except Exception as error:  # noqa: BLE001 - HFValidationError, raised before any network access
        said = hub_failure(error, f"{type(error).__name__}: {error}", model_name="")
        kind = press_failure(error, first_run=True)
    assert said.startswith("needs files from the Hugging Face Hub (repo 'higokri/RestoreKV-', named after the model; "
                           "the tiny model is built locally and has no name): HFValidationError: Repo id must")
    assert kind is Failure.PRETRAINED
    try:
        raise ValueError("Checkpoint not in the Hub's list; not released; Repo id must use alphanumeric chars")
    except ValueError as error:  # the words of a Hub failure, from code that never reached for the Hub
        assert hub_failure(error, str(error), model_name="") is None
        assert press_failure(error, first_run=True) is Failure.CRASH
    try:
        raise OSError("disk full")
    except OSError as error:  # no Hub loader in the traceback: nothing to explain
        assert hub_failure(error, "OSError: disk full", model_name="") is None


def test_a_press_that_looks_the_model_up_by_name_needs_a_pretrained_model() -> None:
    from kvaudit.model import Failure
    from kvaudit.tracer.errors import press_failure

    class Config:
        name_or_path = ""

    def load_budget_curve(config: Config) -> None:  # LUKVPress, DuoAttentionPress: a table keyed by model name
        curves = {"meta-llama/Llama-3.1-8B-Instruct": [0.5]}
        return curves[config.name_or_path]

    try:
        load_budget_curve(Config())
    except KeyError as error:
        assert press_failure(error, first_run=True) is Failure.PRETRAINED
    try:
        raise NotImplementedError
    except NotImplementedError as error:
        assert press_failure(error, first_run=True) is Failure.ABSTRACT
        assert press_failure(error, first_run=False) is Failure.CRASH


def test_a_local_load_that_fails_for_another_reason_stays_a_crash() -> None:
    from kvaudit.model import Failure
    from kvaudit.tracer.errors import hub_failure, press_failure

    class Scorer:
        @classmethod
        def from_pretrained(cls, path):
            raise RuntimeError("size mismatch for weight: copying a param with shape [4, 4]")

    try:
        Scorer.from_pretrained("/opt/checkpoints/scorer")
    except RuntimeError as error:
        line = f"RuntimeError: {error}"
        assert hub_failure(error, line, model_name="") is None  # no Hub sign, a real path: the press's crash
        assert press_failure(error, first_run=True) is Failure.CRASH

    class Long:
        @classmethod
        def from_pretrained(cls, path):
            raise OSError(f"Repo id must use alphanumeric chars: {path[:20]!r}")

    try:
        Long.from_pretrained("x" * 5000 + "-")
    except OSError as error:  # the repo id is cut like every echoed value
        assert len(hub_failure(error, f"OSError: {error}", model_name="")) < 400


def test_sys_exit_at_import_is_bad_input_like_any_import_error(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "exits_on_import.py"
    path.write_text("import sys\nsys.exit(5)\n\nclass Helper:\n    pass\n")
    report = trace_targets([str(path)], SMALL)
    assert report.exit_code == 2
    assert report.error_lines == [f"cannot import {display_path(path)}: SystemExit: 5"]


# ---------------------------------------------------------------------------------------------
# --memory-limit
# ---------------------------------------------------------------------------------------------


def test_a_press_past_the_memory_limit_is_a_crash(presses: Path, shared_worker) -> None:
    report, trace = trace_one(presses, "HungryPress", memory_limit=128 << 20)
    assert [d.id for d in trace.defects] == ["crash"], trace
    assert "MemoryError" in trace.message
    assert report.exit_code == 1
    # without a limit the same press allocates its 512 MiB and passes: the limit made the difference
    report, trace = trace_one(presses, "HungryPress", memory_limit=0)
    assert trace.status == "ok" and trace.defects == []


def test_the_memory_limit_covers_every_process_the_press_starts(presses: Path, shared_worker) -> None:
    report, trace = trace_one(presses, "ForkingHungryPress", memory_limit=256 << 20)
    (defect,) = trace.defects
    assert defect.id == "crash" and "past --memory-limit 256.0 MiB; killed" in defect.message, defect
    assert defect.message.startswith("memory: the press and the processes it started held ")
    assert report.exit_code == 1


@pytest.mark.parametrize("value", ["banana", "-3G", "12X"])
def test_a_bad_memory_limit_is_one_line_and_exit_2(value: str) -> None:
    out = run_cli("trace", "tests/presses/dynamic/algorithm2_press.py", f"--memory-limit={value}")
    assert out.exit_code == 2 and out.exception is None
    assert out.stderr.strip().splitlines() == [
        f"error: --memory-limit {value!r}: give a size such as 4G, 512M or 25% (of RAM), or 0 for no limit"
    ]


def test_memory_limit_sizes() -> None:
    from kvaudit.tracer.options import parse_memory_limit, physical_memory

    assert parse_memory_limit("4G") == 4 << 30 and parse_memory_limit("512MiB") == 512 << 20
    assert parse_memory_limit("0") == 0 and parse_memory_limit("none") == 0
    assert parse_memory_limit("50%") == physical_memory() // 2
    assert TraceOptions().memory_limit == physical_memory() // 2  # the default


# ---------------------------------------------------------------------------------------------
# Internal errors: one line naming the target, exit 2, the traceback only under --debug
# ---------------------------------------------------------------------------------------------

# Simulates a bug in the tracer's own code in the child: the module (imported in the forked child
# only) breaks a function the tracer calls after the import.
SABOTAGE = textwrap.dedent('''
    import kvaudit.tracer.child.jobs as jobs
    from kvpress import KnormPress


    def broken(*args):
        raise ZeroDivisionError("simulated tracer bug")


    jobs.claims_to_check = broken


    class SabotagedPress(KnormPress):
        pass
''')


@pytest.fixture
def sabotaged(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    Path("sabotaged.py").write_text(SABOTAGE)
    return "sabotaged.py"


def test_a_tracer_bug_in_the_child_is_one_line_exit_2(sabotaged: str, shared_worker) -> None:
    report = trace_targets([sabotaged], SMALL)
    assert report.error_lines == [
        "sabotaged.py::SabotagedPress: internal error in the tracer: ZeroDivisionError: simulated tracer bug"
    ]
    assert report.exit_code == 2
    (traceback,) = report.tracebacks
    assert "Traceback" in traceback and "jobs.py" in traceback


@pytest.mark.parametrize("command", ["trace", "check --trace"])
def test_cli_shows_the_traceback_of_a_tracer_bug_only_under_debug(command: str, sabotaged: str, shared_worker) -> None:
    args = [*command.split(), sabotaged, "--layers", "2", "--tokens", "96", "--long-tokens", "144", "--ratios", "0.5"]
    out = run_cli(*args)
    assert out.exit_code == 2 and out.exception is None
    line = "error: sabotaged.py::SabotagedPress: internal error in the tracer: ZeroDivisionError: simulated tracer bug"
    assert line in (out.stdout + out.stderr).splitlines()
    assert "Traceback" not in out.stdout + out.stderr
    out = run_cli(*args, "--debug")
    assert out.exit_code == 2 and "Traceback (most recent call last)" in out.stderr


def test_a_bug_in_the_parent_is_one_line_exit_2_never_1(monkeypatch, shared_worker) -> None:
    import kvaudit.tracer.parent.client as client

    def broken(raw, kind):
        raise KeyError("simulated parent-side bug")

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(client.codec, "decode", broken)
    target = "tests/presses/dynamic/algorithm2_press.py"
    for extra in ([], ["--debug"]):
        out = run_cli("trace", target, "--layers", "2", "--tokens", "96", "--long-tokens", "144", "--ratios", "0.5", *extra)
        assert out.exit_code == 2 and out.exception is None
        first = out.stderr.splitlines()[0]
        assert first.startswith(f"error: {target}: internal error in kvaudit: KeyError: 'simulated parent-side bug'")
        assert ("Traceback" in out.stderr) == bool(extra)


# ---------------------------------------------------------------------------------------------
# check --trace and report follow trace's exit rule: defects are KVA303 findings; what is not the
# press's doing (import, options, the machine, nothing traced) is exit 2, never a clean gate
# ---------------------------------------------------------------------------------------------

GRID = ("--layers", "2", "--tokens", "96", "--long-tokens", "144", "--ratios", "0.5", "--decode-steps", "0")


def _only(tmp_path: Path, *names: str) -> Path:
    """A module with only the presses ``names`` of PRESSES (the class bodies as written there)."""
    blocks = PRESSES.split("@dataclass\n")
    kept = [block for block in blocks[1:] if any(block.startswith(f"class {name}(") for name in names)]
    path = tmp_path / "some_presses.py"
    path.write_text(blocks[0] + "".join("@dataclass\n" + block for block in kept))
    return path


def test_check_trace_reports_crashes_as_kva303_at_the_class(tmp_path: Path, shared_worker) -> None:
    import json

    names = ["ExitsInPrefill", "InterruptsInPrefill", "RaisesInPrefill"]
    path = _only(tmp_path, *names)
    lines = path.read_text().splitlines()
    out = run_cli("check", str(path), "--trace", *GRID, "--format", "sarif", "--select", "KVA303")
    assert out.exception is None and out.exit_code == 1, out.stdout + out.stderr
    results = json.loads(out.stdout)["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["KVA303"] * 3
    for name, result in zip(names, results):
        assert f"{name} on the tiny model: crash: prefill 1 (96×1, ratio 0.5, sdpa attention) raised" in result["message"]["text"]
        region = result["locations"][0]["physicalLocation"]["region"]
        line = lines.index(f"class {name}(KnormPress):") + 1
        assert (region["startLine"], region["startColumn"]) == (line, 1)
        assert region["endLine"] == line + 2 and region["endColumn"] > 1  # the class's whole range
    # the gate follows --fail-on and --select, like any finding
    assert run_cli("check", str(path), "--trace", *GRID, "--select", "KVA303", "--fail-on", "never").exit_code == 0
    assert run_cli("check", str(path), "--trace", *GRID, "--select", "KVA1").exit_code == 0


def test_check_trace_on_a_module_that_fails_at_import_exits_2(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "fails_on_import.py"
    path.write_text("from kvpress import KnormPress\n\n\nclass GpuOnlyPress(KnormPress):\n    pass\n\n\n"
                    "raise RuntimeError('needs a GPU at import')\n")
    out = run_cli("check", str(path), "--trace", *GRID, "--format", "json")
    assert out.exit_code == 2 and out.exception is None, out.stdout + out.stderr
    assert f"error: cannot import {display_path(path)}: RuntimeError: needs a GPU at import" in out.stderr.splitlines()
    (press,) = out.json()["presses"]
    assert "trace" not in press  # never filed as a press failure


@pytest.mark.parametrize(("options", "says"), [
    (["--device", "cuda:99"], "cannot build the model on cuda:99: "),
    (["--device", "banana"], "the trace worker failed to start: --device banana: "),
    (["--press", "PlainPress("], "bad --press expression 'PlainPress(': syntax error"),
    (["--press", "NoSuchPress()"], "bad --press expression 'NoSuchPress()': NameError"),
])
def test_check_trace_that_cannot_trace_exits_2(options: list[str], says: str, tmp_path: Path, monkeypatch,
                                               shared_worker) -> None:
    monkeypatch.chdir(ROOT)
    out = run_cli("check", "tests/presses/dynamic/algorithm2_press.py", "--trace", *GRID, *options)
    assert out.exit_code == 2 and out.exception is None, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], errors


def test_check_trace_with_no_press_traced_exits_2(tmp_path: Path, shared_worker) -> None:
    out = run_cli("check", str(_only(tmp_path, "ExitsInConstructor")), "--trace", *GRID)
    assert out.exit_code == 2 and out.exception is None, out.stdout + out.stderr
    assert any(line.startswith("error: no press could be traced: ExitsInConstructor: cannot build")
               for line in out.stderr.splitlines()), out.stderr


def test_report_files_an_import_failure_as_bad_input_not_a_press_failure(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "fails_on_import.py"
    path.write_text("from kvpress import KnormPress\n\n\nclass GpuOnlyPress(KnormPress):\n    pass\n\n\n"
                    "raise RuntimeError('needs a GPU at import')\n")
    out = run_cli("report", str(path), *GRID, "--no-config", "-o", str(tmp_path / "r.md"))
    assert out.exit_code == 2 and out.exception is None, out.stdout + out.stderr
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "Targets that could not be audited or traced:" in text and "needs a GPU at import" in text
    assert "raised on the tiny model" not in text


# ---------------------------------------------------------------------------------------------
# A press that writes its own frame on the result pipe: a malformed one is the press's crash
# ---------------------------------------------------------------------------------------------

FORGER = textwrap.dedent('''
    import json
    import os
    import struct
    from dataclasses import dataclass

    from kvpress import KnormPress


    def forge(payload):
        data = json.dumps({"ok": True, "payload": payload}).encode()
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                    os.write(int(fd), struct.pack(">Q", len(data)) + data)
            except OSError:
                pass
        os._exit(0)


    @dataclass
    class NumberForgerPress(KnormPress):
        def score(self, *args, **kwargs):
            forge(5)


    @dataclass
    class ShapeForgerPress(KnormPress):
        def score(self, *args, **kwargs):
            forge({"trace": {"name": "X", "path": "x", "status": "ok", "runs": [{"tokens": "many", "batch": 1,
                   "score_calls": [], "kept": [], "reused_from": []}]}})
''')


@pytest.mark.parametrize("name", ["NumberForgerPress", "ShapeForgerPress"])
def test_a_malformed_result_on_the_pipe_is_a_crash_of_the_press(name: str, tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "forgers.py"
    path.write_text(FORGER)
    report, trace = trace_one(path, name)
    assert not any('internal error' in line for line in report.error_lines) and report.exit_code == 1
    (defect,) = trace.defects
    assert defect.id == "crash" and defect.message.startswith("the press wrote a malformed result on the tracer's result pipe")


def test_a_module_that_forges_the_class_list_cannot_be_imported(tmp_path: Path, shared_worker) -> None:
    path = tmp_path / "forges_at_import.py"
    path.write_text(FORGER + '\n\nforge({"module": 5})\n')
    report = trace_targets([str(path)], SMALL)
    assert not any('internal error' in line for line in report.error_lines) and report.exit_code == 2
    (line,) = report.error_lines
    assert line.startswith(f"cannot import {display_path(path)}: the press wrote a malformed result")
