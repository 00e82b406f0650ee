"""kvaudit trace on bad input, and the light import path (no torch needed, each case well under a second).

Bad input that the parent can see (missing path, syntax error, unknown ::ClassName, a class-less
file, a --press that is not Python) must give one line and exit code 2 without starting the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from kvaudit.model import AuditResult, FileStatus, PressReport  # noqa: E402
from kvaudit.tracer import TraceOptions  # noqa: E402
from kvaudit.tracer.options import run_plan  # noqa: E402
from helpers import trace_targets  # noqa: E402

DYNAMIC = ROOT / "tests" / "presses" / "dynamic"


def kvaudit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "kvaudit", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def test_tracer_imports_stay_light() -> None:
    code = (
        "import sys; import kvaudit.tracer, kvaudit.cli.trace, kvaudit.reporters.trace_terminal, kvaudit.pipeline, "
        "kvaudit.reporters.trace_json, kvaudit.tracer.parent.session, kvaudit.tracer.compare, kvaudit.tracer.wire; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'kvpress') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_plan_has_a_longer_second_prefill_and_a_batch_of_two() -> None:
    plan = run_plan(TraceOptions(tokens=100))
    assert [(s.tokens, s.batch) for s in plan] == [(100, 1), (800, 1), (100, 2)]  # 512 and 4096 by default
    assert len({s.seed for s in plan}) == 3  # three different prompts
    assert [s.tokens for s in run_plan(TraceOptions(tokens=100, long_tokens=150))] == [100, 150, 100]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (TraceOptions(tokens=100, long_tokens=100), "--long-tokens (100) must exceed --tokens (100)"),
        (TraceOptions(ratios=(0.5, 1.0)), "--ratios must be compression ratios in [0, 1)"),
        (TraceOptions(ratios=()), "--ratios must be compression ratios in [0, 1)"),
        (TraceOptions(decode_steps=-1), "--decode-steps must be 0 or more"),
    ],
    ids=["long-not-longer", "ratio-1", "no-ratio", "negative-steps"],
)
def test_bad_grid_options_are_one_line(options: TraceOptions, expected: str) -> None:
    assert options.validate().startswith(expected)


def test_class_selector_resolves_a_module_name_without_import() -> None:
    from kvaudit.pipeline import select_classes

    targets, selected, errors = select_classes(["kvpress.presses.chunkkv_press::ChunkKVPress"])
    assert targets == ["kvpress.presses.chunkkv_press"] and not errors
    ((path, names),) = selected.items()
    assert path.name == "chunkkv_press.py" and names == {"ChunkKVPress"}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "missing.py"), "no such file"),
        (lambda tmp: "no_such_package_kvaudit.sub", "no such file, directory or importable module"),
        (lambda tmp: _write(tmp / "broken.py", "class A(\n"), "syntax error"),
        (lambda tmp: _write(tmp / "plain.py", "x = 1\n"), "defines no classes"),
        (lambda tmp: str(DYNAMIC / "algorithm2_press.py") + "::NoSuchPress", "no class 'NoSuchPress'"),
        (lambda tmp: str(tmp) + "::P", "is a directory"),
    ],
    ids=["missing-path", "missing-module", "syntax-error", "no-classes", "unknown-class", "directory-with-class"],
)
def test_bad_targets_are_one_line_each_without_a_worker(tmp_path: Path, make, expected: str) -> None:
    traced = trace_targets([make(tmp_path)], TraceOptions(worker_env={"KVAUDIT_NO_WORKER": "1"}))
    (line,) = traced.error_lines
    assert expected in line and "\n" not in line
    assert traced.exit_code == 2 and traced.model is None  # said before any worker started


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_bad_input_is_reported_without_starting_a_worker(tmp_path: Path) -> None:
    report = trace_targets([str(tmp_path / "nope.py")], TraceOptions())
    assert report.exit_code == 2 and not report.traces and not report.model
    report = trace_targets([str(DYNAMIC / "algorithm2_press.py")], TraceOptions(press_expr="SnapKVPress("))
    assert report.exit_code == 2 and "bad --press expression" in report.error_lines[0] and not report.model
    report = trace_targets([str(DYNAMIC / "algorithm2_press.py")], TraceOptions(arch="gpt2"))
    assert report.exit_code == 2 and "unknown --arch" in report.error_lines[0] and not report.model


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "tests/presses/dynamic/does_not_exist.py"],
        ["trace", "tests/presses/dynamic/algorithm2_press.py::Nope"],
        ["trace", "tests/presses/dynamic/algorithm2_press.py", "--press", "Algorithm2ChunkPress("],
        ["trace", "tests/data", "--format", "json"],
        ["trace", "tests/presses/dynamic/algorithm2_press.py", "--ratios", "0.5,x"],
    ],
    ids=["missing", "unknown-class", "press-syntax", "directory-without-python-json", "bad-ratios"],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    out = kvaudit(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    text = (out.stdout if "--format" not in args else out.stderr).strip()
    assert text.startswith("error: ") and len(text.splitlines()) == 1, text
    assert "Traceback" not in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# Review fixes that need no worker
# ---------------------------------------------------------------------------------------------


def _trace(status: str, message: str | None = None, defects: tuple[str, ...] = ()):
    from kvaudit.model import Defect, PressTrace

    return PressTrace("P", "p.py", status, message, defects=[Defect(d, "why") for d in defects])


SETUP = "cannot build the model on cuda:7: AssertionError: Torch not compiled with CUDA enabled"


@pytest.mark.parametrize(
    ("traces", "expected"),
    [
        ([_trace("error", "abstract press, not traced: NotImplementedError")], True),
        ([_trace("error", "P needs a value for 'n'; pass --press")], True),
        ([_trace("error", "P needs a value for 'n'; pass --press"), _trace("ok")], False),
        ([_trace("error", "prefill 1 (512×1) raised: boom", ("crash",))], False),  # a defect: traced
        ([_trace("ok")], False),
        ([], False),  # nothing was tried: no press, said elsewhere
    ],
    ids=["abstract", "needs-value", "needs-value-and-ok", "crash", "ok", "none"],
)
def test_nothing_traced_when_every_press_tried_failed(traces, expected) -> None:
    from kvaudit.tracer import nothing_traced

    assert (nothing_traced(traces) is not None) == expected


def test_one_exit_code_rule_for_every_command() -> None:
    import kvaudit.tracer
    from kvaudit import exitcodes
    from kvaudit.acceptance import add_trace_findings
    from kvaudit.exitcodes import exit_code

    assert not any(name.startswith("EXIT_") or name == "exit_code" for name in vars(kvaudit.tracer))
    assert exit_code(AuditResult()) == exitcodes.OK
    assert exit_code(AuditResult(files=[FileStatus("x", "error", "x: bad")])) == exitcodes.BAD_INPUT
    result = AuditResult(presses=[PressReport("P", "p.py", 1, trace=_trace("ok", defects=("batch-row-0",)))])
    add_trace_findings(result, [])  # a defect of the trace is a KVA303 finding, an error
    assert exit_code(result) == exitcodes.FINDINGS and exit_code(result, "never") == exitcodes.OK


def test_missing_model_folder_is_one_line(tmp_path: Path) -> None:
    problem = TraceOptions(model_path=str(tmp_path / "no-model")).validate()
    assert problem == f"--model {tmp_path / 'no-model'}: no such folder (give a local Hugging Face model folder)"
    (tmp_path / "file").write_text("x")
    assert "not a folder" in TraceOptions(model_path=str(tmp_path / "file")).validate()
    assert TraceOptions(model_path=str(tmp_path)).validate() is None
    out = kvaudit("trace", "tests/presses/dynamic/algorithm2_press.py", "--model", str(tmp_path / "no-model"))
    assert out.returncode == 2
    assert out.stdout.strip().splitlines() == [f"error: {problem}"]
    assert "Repo id" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("syntax.py", b"class A(:\n"),
        ("binary.py", b"class A:\x00 pass\n"),
        ("latin1.py", "class Caf\u00e9: pass\n".encode("latin-1")),
        ("deep.py", b"x = " + b"(" * 300 + b")" * 300 + b"\nclass A: pass\n"),
        ("missing.py", None),
    ],
)
def test_bad_files_are_worded_as_check_words_them(tmp_path: Path, name: str, content: bytes | None) -> None:
    from kvaudit.engine import run_check

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    traced = trace_targets([str(path)], TraceOptions())
    check_errors = [f.message for f in run_check([str(path)]).files if f.status == "error"]
    assert check_errors == traced.error_lines and len(check_errors) == 1


def test_trace_reads_the_files_check_reads(tmp_path: Path, monkeypatch, shared_worker) -> None:
    """One target stage: a build/ folder and a .gitignored file are skipped by both commands alike."""
    from kvaudit.engine import CheckOptions, run_check

    (tmp_path / "proj" / "build").mkdir(parents=True)
    press = "from kvpress import KnormPress\n\n\nclass {name}(KnormPress):\n    pass\n"
    (tmp_path / "proj" / "kept.py").write_text(press.format(name="KeptPress"))
    (tmp_path / "proj" / "build" / "p.py").write_text(press.format(name="BuiltPress"))
    (tmp_path / "proj" / "ignored.py").write_text(press.format(name="IgnoredPress"))
    (tmp_path / "proj" / ".gitignore").write_text("ignored.py\n")
    subprocess.run(["git", "init", "-q", str(tmp_path / "proj")], check=True)
    monkeypatch.chdir(tmp_path)
    checked = run_check(["proj"], CheckOptions())
    traced = trace_targets(["proj"], TraceOptions(layers=2, tokens=64, long_tokens=96, ratios=(0.5,), decode_steps=0))
    assert {f.path for f in checked.files} == {f.path for f in traced.result.files} == {"proj/kept.py"}
    assert {p.name for p in checked.presses} == {t.name for t in traced.traces} == {"KeptPress"}
    assert traced.exit_code == 0, traced.error_lines


def test_missing_module_is_worded_as_check_words_it() -> None:
    from kvaudit.engine import run_check

    traced = trace_targets(["no_such_package_kvaudit.sub"], TraceOptions())
    assert [f.message for f in run_check(["no_such_package_kvaudit.sub"]).files] == traced.error_lines


def test_target_paths_are_shown_as_check_shows_them() -> None:
    traced = trace_targets(["tests/presses/dynamic/algorithm2_press.py::Nope"], TraceOptions())
    assert traced.error_lines[0].startswith("tests/presses/dynamic/algorithm2_press.py: no class 'Nope'")
    out = kvaudit("trace", "tests/presses/dynamic/nope.py")
    assert out.stdout.strip() == "error: tests/presses/dynamic/nope.py: no such file or directory"


def test_all_bad_targets_are_reported_not_just_the_first(tmp_path: Path) -> None:
    report = trace_targets([str(tmp_path / "a.py"), str(tmp_path / "b.py")], TraceOptions())
    assert report.error_lines == [f"{tmp_path / 'a.py'}: no such file or directory",
                                  f"{tmp_path / 'b.py'}: no such file or directory"]
    assert report.exit_code == 2 and not report.traces


def test_format_is_called_terminal_as_in_check() -> None:
    out = kvaudit("trace", "tests/presses/dynamic/nope.py", "--format", "terminal")
    assert out.returncode == 2 and out.stdout.startswith("error: tests/presses/dynamic/nope.py: ")
    out = kvaudit("trace", "tests/presses/dynamic/nope.py", "--format", "text")
    assert out.returncode == 2 and "'terminal'" in out.stderr and not out.stdout  # a usage error now


def test_press_expression_is_documented_as_code() -> None:
    docs = (ROOT / "docs" / "trace.md").read_text(encoding="utf-8")
    assert "**`EXPR` is code:**" in docs and "`eval`" in docs
    help_text = kvaudit("trace", "--help").stdout
    assert "trusted" in help_text
