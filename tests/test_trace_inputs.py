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
try:  # `make setup` installs kvaudit in editable mode; a bare venv runs from the checkout
    import audit  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

from audit.tracer import TraceOptions, trace_targets  # noqa: E402
from audit.tracer.options import run_plan  # noqa: E402
from audit.tracer.target import TraceInputError, resolve_target  # noqa: E402

DYNAMIC = ROOT / "tests" / "presses" / "dynamic"


def kvaudit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "audit", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def test_tracer_imports_stay_light() -> None:
    code = (
        "import sys; import audit.tracer, audit.cli.trace, audit.reporters.trace_terminal, "
        "audit.reporters.trace_json, audit.tracer.session, audit.tracer.compare; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'kvpress') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_plan_has_a_longer_second_prefill_and_a_batch_of_two() -> None:
    plan = run_plan(TraceOptions(tokens=100))
    assert [(s.tokens, s.batch) for s in plan] == [(100, 1), (150, 1), (100, 2)]
    assert len({s.seed for s in plan}) == 3  # three different prompts


def test_module_name_resolves_without_import() -> None:
    target = resolve_target("kvpress.presses.chunkkv_press::ChunkKVPress")
    assert target.path.name == "chunkkv_press.py"
    assert target.module == "kvpress.presses.chunkkv_press" and target.class_name == "ChunkKVPress"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "missing.py"), "no such file"),
        (lambda tmp: "no_such_package_kvaudit.sub", "no such file or importable module"),
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
        ["trace", "tests/presses/dynamic", "--format", "json"],
    ],
    ids=["missing", "unknown-class", "press-syntax", "directory-json"],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    out = kvaudit(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    text = (out.stdout if "--format" not in args else out.stderr).strip()
    assert text.startswith("error: ") and len(text.splitlines()) == 1, text
    assert "Traceback" not in out.stdout + out.stderr
