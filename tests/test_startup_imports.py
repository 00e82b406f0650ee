"""Start-up (issue 8 §5): `kvaudit --help`, `kvaudit rules` and `kvaudit check small.py` import
nothing they do not use. Each runs in a fresh interpreter through the console script's entry
point, then lists the modules it loaded. (Its speed is measured in benchmarks/bench_startup.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import STATIC_PRESSES

NEVER = {"torch", "transformers", "kvpress", "numpy"}
LIST_MODULES = """
import json, sys
from kvaudit.cli import main
sys.argv = ["kvaudit", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def modules_after(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", LIST_MODULES, *args], capture_output=True, text=True, timeout=120)
    return set(json.loads(done.stdout.splitlines()[-1]))


def tops(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_help_imports_typer_and_the_command_modules_only() -> None:
    modules = modules_after("--help")
    assert not tops(modules) & (NEVER | {"libcst", "rich", "pathspec"})
    assert {m for m in modules if m.startswith("kvaudit")} == {
        "kvaudit", "kvaudit.defaults", "kvaudit.cli", "kvaudit.cli.check", "kvaudit.cli.diff", "kvaudit.cli.report",
        "kvaudit.cli.rules", "kvaudit.cli.trace", "kvaudit.cli.options", "kvaudit.cli.output"}  # output: stdlib only (broken pipes)


@pytest.mark.parametrize("command", [["check", "--help"], ["trace", "-h"], ["report", "--help"], ["diff", "-h"]])
def test_help_of_a_command_loads_neither_the_engine_nor_the_tracer(command: list[str]) -> None:
    modules = modules_after(*command)
    assert not tops(modules) & (NEVER | {"libcst", "rich"})
    assert not {"kvaudit.engine", "kvaudit.tracer", "kvaudit.analysis"} & modules


def test_rules_never_loads_libcst_or_the_tracer() -> None:
    modules = modules_after("rules")
    assert not tops(modules) & (NEVER | {"libcst"})
    assert "kvaudit.rule" in modules and not any(m.startswith("kvaudit.tracer") for m in modules)


def test_check_of_a_file_without_presses_never_loads_libcst(tmp_path: Path) -> None:
    small = tmp_path / "small.py"
    small.write_text("import os\n\n\nclass Helper(os.PathLike):\n    pass\n")
    for fmt in ("terminal", "concise", "json"):
        modules = modules_after("check", str(small), "-f", fmt)
        assert not tops(modules) & (NEVER | {"libcst", "pathspec"}), fmt
        assert not any(m.startswith("kvaudit.tracer") for m in modules), fmt


def test_check_of_a_press_loads_libcst_but_never_torch() -> None:
    # The import list above could miss libcst only if it were blind to it: here a press needs it.
    modules = modules_after("check", str(STATIC_PRESSES / "alg2_modulo.py"))
    assert "libcst" in modules and not tops(modules) & NEVER
    assert not any(m.startswith("kvaudit.tracer") for m in modules)


def test_diff_never_loads_libcst_or_the_tracer(tmp_path: Path) -> None:
    document = {"schema": "kvaudit.trace/2", "model": {"arch": "llama", "layers": 8, "source": "tiny"}, "plan": [],
                "grid": "", "presses": [{"name": "P", "path": "p.py", "status": "ok"}], "errors": []}
    (tmp_path / "a.json").write_text(json.dumps(document), encoding="utf-8")
    for fmt in ("terminal", "markdown", "json"):
        modules = modules_after("diff", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "-f", fmt)
        assert "kvaudit.diff" in modules, fmt  # the list is not blind: the command ran
        assert not tops(modules) & (NEVER | {"libcst", "pathspec"}), fmt
        assert not any(m.startswith("kvaudit.tracer") for m in modules), fmt
