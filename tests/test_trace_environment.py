"""What the traced code sees, and what tracing needs: the user's own imports, and the trace extra.

* A traced module that does ``import rules`` gets the user's ``rules`` package beside it, never
  kvaudit's (the repository's ``rules/`` folder, or the installed ``kvaudit.rules``), whatever the
  working directory: the worker runs with ``python -P`` and the target's folder comes first.
* Without the ``trace`` extra (torch, transformers, kvpress), ``trace``, ``check --trace`` and
  ``report`` name the missing package and the command that adds it, and exit 2. Tested by hiding
  the packages from a fresh interpreter with a ``sitecustomize`` import blocker (nothing is uninstalled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kvaudit.tracer import TraceOptions

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
    from helpers import trace_targets

    report = trace_targets([str(press)], TraceOptions(layers=2, tokens=96))
    assert report.error_lines == []
    assert [(t.name, t.status) for t in report.traces] == [("MyPress", "ok")]


def test_the_worker_does_not_put_the_working_directory_first(tmp_path: Path, monkeypatch) -> None:
    from kvaudit.tracer.parent.client import WorkerClient, WorkerError

    cwd, elsewhere = tmp_path / "cwd", tmp_path / "elsewhere"
    cwd.mkdir()
    elsewhere.mkdir()
    seen = tmp_path / "sys_path.json"
    probe = elsewhere / "probe.py"
    probe.write_text(f"import json, sys, time\nopen({str(seen)!r}, 'w').write(json.dumps(sys.path))\ntime.sleep(60)\n")
    monkeypatch.chdir(cwd)
    client = WorkerClient()  # a bare worker: no torch needed to import a module
    from kvaudit.tracer.wire import ListReply, ListRequest

    request = ListRequest(str(probe), str(probe), None, 60, 0)
    waiting = threading.Thread(target=lambda: pytest.raises(WorkerError, client.request, request, ListReply, 60),
                               daemon=True)
    waiting.start()
    try:
        deadline = time.monotonic() + 30
        while not (seen.exists() and seen.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.close(kill=True)
        waiting.join(30)
    paths = json.loads(seen.read_text())
    assert paths[0] == str(elsewhere)  # the target's own folder first, as `python probe.py` has it
    assert str(cwd) not in paths and "" not in paths


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


BROKEN = "error: the trace worker failed to start: tracing needs torch, which is installed but fails to import " \
    "(ImportError: libcudart.so.12: cannot open shared object file); repair or reinstall the trace extra: " \
    "pip install 'kvaudit[trace]'"


@pytest.fixture(scope="module")
def broken_torch(tmp_path_factory) -> dict[str, str]:
    """torch installed but failing at import (a CUDA wheel without its libraries), shadowed on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("broken-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text(
        'raise ImportError("libcudart.so.12: cannot open shared object file")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.parametrize("command", [
    ["trace", ALGORITHM2],
    ["check", "--trace", ALGORITHM2],
    ["report", ALGORITHM2, "-o", "REPORT"],
])
def test_a_trace_extra_that_fails_to_import_is_named_with_exit_2(command: list[str], broken_torch,
                                                                  tmp_path: Path) -> None:
    report = tmp_path / "r.md"
    args = [str(report) if arg == "REPORT" else arg for arg in command]
    out = subprocess.run([sys.executable, "-m", "kvaudit", *args], env=broken_torch, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("error:")]
    assert lines == [BROKEN]
    assert "Traceback" not in out.stdout + out.stderr
    if report.exists():  # the report says it once, as a run that could not be traced, never as a press failure
        text = report.read_text(encoding="utf-8")
        assert "raised on the tiny model" not in text and "**Trace.** Not traced." in text
