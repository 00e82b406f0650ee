"""What the traced code sees, and what tracing needs: the user's own imports, and the trace extra.

* A traced module that does ``import rules`` gets the user's ``rules`` package beside it, never
  kvaudit's (the repository's ``rules/`` folder, or the installed ``kvaudit.rules``), whatever the
  working directory: the worker runs with ``python -P`` and the target's folder comes first.
* Without the ``trace`` extra (torch, transformers, kvpress), ``trace``, ``check --trace`` and
  ``report`` name the missing package and the command that adds it, and exit 2. Tested by hiding
  the packages from a fresh interpreter with a ``sitecustomize`` import blocker (nothing is uninstalled).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvaudit.tracer import TraceOptions, trace_targets

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM2 = "tests/presses/dynamic/algorithm2_press.py"


def test_a_traced_module_imports_the_users_rules_package(tmp_path: Path, monkeypatch, shared_worker) -> None:
    project = tmp_path / "project"
    (project / "rules").mkdir(parents=True)
    (project / "rules" / "__init__.py").write_text("OWNER = 'the user'\n")
    press = project / "my_press.py"
    press.write_text(textwrap.dedent('''
        import rules
        from kvpress import KnormPress

        assert getattr(rules, "OWNER", None) == "the user", f"import rules gave {rules.__file__}"


        class MyPress(KnormPress):
            pass
    '''))
    # From the repository root, whose own rules/ folder is kvaudit's: the old worker put it first.
    monkeypatch.chdir(ROOT)
    report = trace_targets([str(press)], TraceOptions(layers=2, tokens=96), progress=False)
    assert report.error_lines == []
    assert [(t.name, t.status) for t in report.traces] == [("MyPress", "ok")]


def test_the_worker_does_not_put_the_working_directory_first() -> None:
    from kvaudit.tracer.client import WorkerClient

    client = WorkerClient()
    try:
        command = Path(f"/proc/{client.pid}/cmdline").read_bytes().split(b"\0")
        assert command[1:4] == [b"-P", b"-m", b"kvaudit.tracer.worker"]
    finally:
        client.close()


BLOCKER = textwrap.dedent('''
    import sys

    HIDDEN = {"torch", "transformers", "kvpress"}


    class Hide:
        """Make the trace extra look uninstalled."""

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, Hide())
''')
MISSING = "error: tracing needs torch, which is not installed; add the trace extra: pip install 'kvaudit[trace]'"


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "No module named 'torch'" in check.stderr  # the blocker works
    return env


@pytest.mark.parametrize("command", [
    ["trace", ALGORITHM2],
    ["trace", ALGORITHM2, "--format", "json"],
    ["check", "--trace", ALGORITHM2],
    ["check", "--compare-reference", ALGORITHM2, "--format", "json"],
    ["report", ALGORITHM2, "-o", "REPORT"],
])
def test_without_the_trace_extra_tracing_says_what_to_install(command: list[str], without_torch, tmp_path: Path) -> None:
    report = tmp_path / "r.md"
    args = [str(report) if arg == "REPORT" else arg for arg in command]
    out = subprocess.run([sys.executable, "-m", "kvaudit", *args], env=without_torch, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("error:")]
    suffix = "; or pass --no-trace for a static report" if command[0] == "report" else ""
    assert lines == [MISSING + suffix]
    assert "Traceback" not in out.stdout + out.stderr
    assert not report.exists()  # never a report that files the missing torch as a press failure


def test_without_the_trace_extra_the_static_paths_still_work(without_torch, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kvaudit", "report", ALGORITHM2, "--no-trace", "-o",
                          str(tmp_path / "r.md")], env=without_torch, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Not traced" in (tmp_path / "r.md").read_text()
