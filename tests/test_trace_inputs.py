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
from kvaudit.tracer import TraceOptions, trace_targets  # noqa: E402
from kvaudit.tracer.options import run_plan  # noqa: E402
from kvaudit.tracer.parent.target import TraceInputError, resolve_target  # noqa: E402

DYNAMIC = ROOT / "tests" / "presses" / "dynamic"


def kvaudit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "kvaudit", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def test_tracer_imports_stay_light() -> None:
    code = (
        "import sys; import kvaudit.tracer, kvaudit.cli.trace, kvaudit.reporters.trace_terminal, "
        "kvaudit.reporters.trace_json, kvaudit.tracer.parent.session, kvaudit.tracer.compare; "
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


def test_module_name_resolves_without_import() -> None:
    target = resolve_target("kvpress.presses.chunkkv_press::ChunkKVPress")
    assert target.path.name == "chunkkv_press.py"
    assert target.module == "kvpress.presses.chunkkv_press" and target.class_name == "ChunkKVPress"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "missing.py"), "no such file"),
        (lambda tmp: "no_such_package_kvaudit.sub", "no such file, directory or importable module"),
        (lambda tmp: str(tmp), "is a directory"),
        (lambda tmp: _write(tmp / "broken.py", "class A(\n"), "syntax error"),
        (lambda tmp: _write(tmp / "plain.py", "x = 1\n"), "defines no classes"),
        (lambda tmp: str(DYNAMIC / "algorithm2_press.py") + "::NoSuchPress", "no class 'NoSuchPress'"),
    ],
    ids=["missing-path", "missing-module", "directory", "syntax-error", "no-classes", "unknown-class"],
)
def test_bad_targets_raise_one_line(tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(TraceInputError) as info:
        resolve_target(make(tmp_path))
    assert expected in str(info.value) and "\n" not in str(info.value)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_bad_input_is_reported_without_starting_a_worker(tmp_path: Path) -> None:
    report = trace_targets([str(tmp_path / "nope.py")], TraceOptions(), progress=False)
    assert report.exit_code == 2 and not report.traces and not report.model
    report = trace_targets([str(DYNAMIC / "algorithm2_press.py")], TraceOptions(press_expr="SnapKVPress("), progress=False)
    assert report.exit_code == 2 and "bad --press expression" in report.input_errors[0]
    report = trace_targets([str(DYNAMIC / "algorithm2_press.py")], TraceOptions(arch="gpt2"), progress=False)
    assert report.exit_code == 2 and "unknown --arch" in report.input_errors[0]


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
    ("traces", "setup_errors", "expected"),
    [
        ([_trace("error", SETUP)], [SETUP], 2),  # nothing could run: not a clean pass
        ([_trace("error", SETUP), _trace("error", "abstract press, not traced: NotImplementedError")], [SETUP], 2),
        ([_trace("error", SETUP), _trace("ok")], [SETUP], 0),  # the traced press decides
        ([_trace("error", SETUP), _trace("error", "prefill 1 (512×1) raised: boom", ("crash",))], [SETUP], 1),
        # the press's own doing, never a crash, but a run that traced nothing is no clean pass
        ([_trace("error", "abstract press, not traced: NotImplementedError")], [], 2),
        ([_trace("error", "P needs a value for 'n'; pass --press")], [], 2),
        ([_trace("error", "P needs a value for 'n'; pass --press"), _trace("ok")], [], 0),
        ([_trace("error", "prefill 1 (512×1) raised: boom", ("crash",))], [], 1),
        ([_trace("ok")], [], 0),
    ],
    ids=["only-setup", "setup-and-abstract", "setup-and-ok", "setup-and-crash", "abstract", "needs-value",
         "needs-value-and-ok", "crash", "ok"],
)
def test_exit_code_is_2_when_nothing_could_be_traced(traces, setup_errors, expected) -> None:
    from kvaudit.tracer import TraceReport

    report = TraceReport(traces=traces, setup_errors=setup_errors)
    assert report.exit_code == expected
    assert (report.nothing_traced is not None) == (expected == 2)


def test_exit_codes_come_from_audit_exitcodes() -> None:
    import kvaudit.tracer
    from kvaudit import exitcodes
    from kvaudit.tracer import TraceReport

    assert not any(name.startswith("EXIT_") for name in vars(kvaudit.tracer))
    assert TraceReport().exit_code == exitcodes.OK
    assert TraceReport(input_errors=["x"]).exit_code == exitcodes.BAD_INPUT
    assert TraceReport(traces=[_trace("ok", defects=("batch-row-0",))]).exit_code == exitcodes.FINDINGS


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
    with pytest.raises(TraceInputError) as info:
        resolve_target(str(path))
    check_errors = [f.message for f in run_check([str(path)]).files if f.status == "error"]
    assert check_errors == [str(info.value)]


def test_missing_module_is_worded_as_check_words_it() -> None:
    from kvaudit.engine import run_check

    with pytest.raises(TraceInputError) as info:
        resolve_target("no_such_package_kvaudit.sub")
    assert [f.message for f in run_check(["no_such_package_kvaudit.sub"]).files] == [str(info.value)]


def test_target_paths_are_shown_as_check_shows_them() -> None:
    with pytest.raises(TraceInputError) as info:
        resolve_target("tests/presses/dynamic/algorithm2_press.py::Nope")
    assert str(info.value).startswith("tests/presses/dynamic/algorithm2_press.py: no class 'Nope'")
    out = kvaudit("trace", "tests/presses/dynamic/nope.py")
    assert out.stdout.strip() == "error: tests/presses/dynamic/nope.py: no such file or directory"


def test_all_bad_targets_are_reported_not_just_the_first(tmp_path: Path) -> None:
    report = trace_targets([str(tmp_path / "a.py"), str(tmp_path / "b.py")], TraceOptions(), progress=False)
    assert report.input_errors == [f"{tmp_path / 'a.py'}: no such file or directory",
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
